# The README's commands.  Only python3 (3.11+) is needed on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
CODE   := schemas/src producers/src processors/src tests bench spec

.DEFAULT_GOAL := help
.PHONY: help install demo console test test-fast test-faults lint clean bench bench-readmodel bench-console

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml schemas/pyproject.toml producers/pyproject.toml processors/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./schemas -e './producers[kafka]' -e './processors[test,dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install fleetledger with its test tools

demo: $(STAMP) ## simulate a fleet into the embedded store, process it, write bundles/
	$(BIN)/fleetledger demo

console: $(STAMP) ## the runs console on http://127.0.0.1:8760/ (processes new events too)
	$(BIN)/fleetledger console

test: $(STAMP) ## the whole suite, Kafka integration tests included (starts its own broker)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) ## everything but the Kafka integration tests
	$(BIN)/python -m pytest -q -m "not kafka" $(PYTEST_ARGS)

test-faults: $(STAMP) ## the full fault-injection suite (kill loops, rebalances, bad input; minutes)
	rm -f $(CURDIR)/faults-report.jsonl
	FLEETLEDGER_FAULTS=full FLEETLEDGER_FAULTS_REPORT=$(CURDIR)/faults-report.jsonl \
		$(BIN)/python -m pytest -q -s -m faults $(PYTEST_ARGS)
	@cat $(CURDIR)/faults-report.jsonl

lint: $(STAMP) ## ruff (lint + format), mypy --strict over every module, the layer contracts
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy $(CODE)
	$(BIN)/lint-imports --no-logo

bench-console: $(STAMP) ## the console: live latency (embedded, Kafka) and the registry at 1,000,000 runs
	$(BIN)/python -m bench.console

bench: $(STAMP) ## throughput benchmark with same-run baselines (own broker; bench/results.md)
	$(BIN)/python -m bench

bench-readmodel: $(STAMP) ## run registry on 1,000,000 generated runs, SQLite and PostgreSQL (bench/readmodel-results.md)
	$(BIN)/python -m bench.readmodel

clean: ## remove the virtualenv, the embedded store and generated bundles
	rm -rf $(VENV) fleetledger.db fleetledger.db-wal fleetledger.db-shm bundles archive
