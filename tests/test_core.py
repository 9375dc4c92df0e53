"""The pure core: chain, sequence discipline, totals and intercept rules."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetledger.processors.core import (
    CoreConfig,
    Entry,
    RunState,
    apply,
    check_gap,
    fold_events,
    is_sealed,
)

from . import eventdicts as ev

NOW = datetime(2026, 11, 2, tzinfo=UTC)
CONFIG = CoreConfig()


class Ledger:
    """A run's state plus an in-memory entry store, as a runtime would hold them."""

    def __init__(self, run_id: str, config: CoreConfig = CONFIG, serialize: bool = False) -> None:
        self.state = RunState.new(run_id)
        self.entries: dict[int, Entry] = {}
        self.intercepts: list[Any] = []
        self.duplicates = 0
        self.materialized = 0
        self.config = config
        self.serialize = serialize

    def feed(self, obj: dict[str, Any], now: datetime = NOW) -> None:
        res = apply(self.state, obj, lambda _r, s: self.entries.get(s), self.config, now)
        for e in res.entries:
            self.entries[e.seq] = e
        self.intercepts += res.intercepts
        self.duplicates += res.duplicate
        self.materialized += res.materialize
        if self.serialize:  # runtimes persist the state between messages
            self.state = RunState.from_bytes(self.state.to_bytes())

    def kinds(self) -> list[str]:
        return [i.kind for i in self.intercepts]


def test_chain_links_each_entry_to_the_previous_by_sha256() -> None:
    led = Ledger("run-1")
    for obj in ev.simple_run():
        led.feed(obj)
    prev = hashlib.sha256(b"fleetledger/chain/v1\x00run-1").digest()
    for seq in range(len(led.entries)):
        e = led.entries[seq]
        ev_hash = hashlib.sha256(rfc8785.dumps(e.event)).digest()
        assert e.event_hash == ev_hash.hex()
        assert e.prev_hash == prev.hex()
        prev = hashlib.sha256(prev + ev_hash).digest()
        assert e.entry_hash == prev.hex()
    assert led.state.head == prev.hex()
    assert led.materialized == 1


def test_identical_redelivery_is_dropped_and_totals_do_not_change() -> None:
    led = Ledger("run-1")
    run = ev.simple_run()
    for obj in run[:3]:
        led.feed(obj)
    cost_before = led.state.fold.cost
    led.feed(run[1])
    led.feed(run[2])
    assert led.duplicates == 2
    assert led.state.fold.cost == cost_before == Decimal("0.025")
    assert led.intercepts == []


def test_different_event_at_used_seq_is_an_equivocation_intercept() -> None:
    led = Ledger("run-1")
    run = ev.simple_run()
    for obj in run[:3]:
        led.feed(obj)
    forged = ev.model_io("run-1", 1, "0.0001")
    led.feed(forged)
    assert led.kinds() == ["equivocation"]
    assert led.intercepts[0].seq == 1 and led.intercepts[0].severity == "critical"
    assert led.state.fold.cost == Decimal("0.025")  # the first-committed event stands


def test_gap_holds_later_events_until_it_fills() -> None:
    run = ev.simple_run()
    in_order = Ledger("run-1")
    for obj in run:
        in_order.feed(obj)
    led = Ledger("run-1")
    led.feed(run[0])
    led.feed(run[2])
    led.feed(run[3])
    assert led.state.next_seq == 1 and sorted(led.state.pending) == [2, 3]
    led.feed(run[1])
    assert led.state.next_seq == 4 and not led.state.pending and led.state.gap_since is None
    led.feed(run[4])
    assert led.state.head == in_order.state.head


def test_stale_gap_is_flagged_once_after_the_timeout() -> None:
    run = ev.simple_run()
    led = Ledger("run-1", CoreConfig(gap_timeout_s=10))
    led.feed(run[0])
    led.feed(run[2], now=NOW)
    assert check_gap(led.state, led.config, NOW + timedelta(seconds=5)) is None
    found = check_gap(led.state, led.config, NOW + timedelta(seconds=11))
    assert found is not None and found.kind == "stale_gap" and found.seq == 1
    assert "seq 1..1 missing" in found.reason
    assert check_gap(led.state, led.config, NOW + timedelta(seconds=30)) is None


def test_budget_exceeded_is_raised_at_the_crossing_event() -> None:
    led = Ledger("run-1")
    led.feed(ev.started("run-1", budget="0.05"))
    for seq in range(1, 6):
        led.feed(ev.model_io("run-1", seq, "0.02"))
    budget = [i for i in led.intercepts if i.kind == "budget_exceeded"]
    assert len(budget) == 1
    assert budget[0].seq == 3  # 0.02 * 3 = 0.06 > 0.05; raised while the run is going
    assert "0.06 USD exceeds budget 0.05" in budget[0].reason


def test_high_intervention_rate() -> None:
    led = Ledger("run-1", CoreConfig(intervention_rate=Decimal("0.5"), intervention_min_gates=4))
    led.feed(ev.started("run-1"))
    for seq, decision in enumerate(["approve", "reject", "approve", "edit", "reject"], start=1):
        led.feed(ev.gate_resolved("run-1", seq, decision))
    assert led.kinds() == ["high_intervention"]
    assert led.intercepts[0].seq == 5  # 3 of 5 > 0.5; 2 of 4 is not above


def test_excessive_recoveries_and_failed_run() -> None:
    led = Ledger("run-1", CoreConfig(max_recoveries=2))
    led.feed(ev.started("run-1"))
    led.feed(ev.recovery("run-1", 1))
    led.feed(ev.recovery("run-1", 2))
    led.feed(ev.recovery("run-1", 3, "L2_ESCALATE"))
    led.feed(ev.failed("run-1", 4))
    assert led.kinds() == ["excessive_recoveries", "run_failed"]
    assert [i.seq for i in led.intercepts] == [3, 4]
    assert led.state.fold.status == "failed"


def test_events_after_the_terminal_event_are_integrity_intercepts() -> None:
    led = Ledger("run-1")
    run = ev.simple_run()
    for obj in run:
        led.feed(obj)
    led.feed(ev.model_io("run-1", len(run), "1"))
    assert led.kinds() == ["event_after_terminal"]
    assert led.state.fold.cost == Decimal("0.0375")


def test_first_event_must_be_run_started() -> None:
    led = Ledger("run-1")
    led.feed(ev.model_io("run-1", 0, "0.01"))
    assert led.kinds() == ["malformed_run"]


def test_currency_mismatch_keeps_the_money_apart() -> None:
    led = Ledger("run-1")
    led.feed(ev.started("run-1", budget="1"))
    led.feed(ev.model_io("run-1", 1, "0.5"))
    led.feed(ev.model_io("run-1", 2, "0.7", currency="EUR"))
    assert led.kinds() == ["currency_mismatch"]
    totals = led.state.fold.totals_json()
    assert totals["cost"] == "0.5" and totals["unbilled"] == {"EUR": "0.7"}


def test_totals_attribute_cost_and_tokens_per_model_and_step() -> None:
    fold, _ = fold_events("run-1", ev.simple_run(n_calls=4, cost="0.1"), CONFIG)
    totals = fold.totals_json()
    assert totals["cost"] == "0.4"
    assert totals["by_model"]["openai/gpt-4.1"]["cost"] == "0.2"
    assert totals["by_model"]["openai/claude-sonnet-4"]["calls"] == 2
    assert totals["by_step"]["plan"]["input_tokens"] == 4000
    assert totals["tokens"] == {"input": 4000, "output": 800, "cache_read_input": 0}


# --------------------------------------------------------------------- invariants


def _long_run() -> list[dict[str, Any]]:
    r = "run-h"
    evs = [ev.started(r, budget="0.3")]
    for i in range(6):
        evs.append(ev.model_io(r, len(evs), "0.07", model="m" + str(i % 3)))
        evs.append(ev.gate_requested(r, len(evs)))
        evs.append(ev.gate_resolved(r, len(evs), ["approve", "reject", "edit"][i % 3]))
    evs.append(ev.recovery(r, len(evs)))
    evs.append(ev.completed(r, len(evs)))
    return evs


RUN = _long_run()


def _reference() -> Ledger:
    led = Ledger("run-h")
    for obj in RUN:
        led.feed(obj)
    return led


REFERENCE = _reference()


@settings(max_examples=200, deadline=None)
@given(
    order=st.permutations(list(range(len(RUN)))),
    dups=st.lists(st.integers(min_value=0, max_value=len(RUN) - 1), max_size=30),
    positions=st.lists(st.integers(min_value=0, max_value=200), max_size=30),
    serialize=st.booleans(),
)
def test_any_interleaving_of_redeliveries_gives_the_same_chain_and_totals(
    order: list[int], dups: list[int], positions: list[int], serialize: bool
) -> None:
    deliveries = list(order)
    for d, p in zip(dups, positions, strict=False):
        deliveries.insert(p % (len(deliveries) + 1), d)
    led = Ledger("run-h", serialize=serialize)
    for i in deliveries:
        led.feed(RUN[i])
    assert led.state.head == REFERENCE.state.head
    assert led.state.fold.totals_json() == REFERENCE.state.fold.totals_json()
    assert [e.entry_hash for e in led.entries.values()] == [
        e.entry_hash for e in REFERENCE.entries.values()
    ]
    assert led.materialized == 1
    assert sorted(i.key for i in led.intercepts) == sorted(i.key for i in REFERENCE.intercepts)
    assert led.duplicates == len(deliveries) - len(RUN)


def test_state_is_constant_size_in_the_number_of_events() -> None:
    r = "run-big"
    led = Ledger(r)
    led.feed(ev.started(r))
    sizes = []
    for seq in range(1, 2001):
        led.feed(ev.model_io(r, seq, "0.001", model=f"m{seq % 4}", step=f"s{seq % 5}"))
        if seq in (100, 2000):
            sizes.append(len(led.state.to_bytes()))
    assert sizes[1] - sizes[0] < 64  # only counters grow by a few digits


def test_a_sealed_run_judges_late_redeliveries_without_its_entries() -> None:
    led = Ledger("run-1")
    run = ev.simple_run()
    for obj in run:
        led.feed(obj)
    led.state.seal([led.entries[s].event_hash for s in range(len(run))])
    led.state = RunState.from_bytes(led.state.to_bytes())
    led.entries.clear()  # a runtime dropped them once the sealed state was durable
    led.feed(run[2])
    assert led.duplicates == 1 and led.intercepts == []
    led.feed(ev.model_io("run-1", 2, "9"))
    assert led.kinds() == ["equivocation"]


def test_is_sealed_reads_the_stored_bytes_without_parsing_them() -> None:
    """A worker skips sealed runs' states by their bytes; text that looks like the
    ``sealed`` member inside an open run's held events or fold must not fool it."""
    led = Ledger("run-s")
    run = ev.simple_run("run-s")
    tricky = ev.event("run-s", 4, "tool_call", {"inputs": {"sealed": "x"}}, "plan")
    led.feed(run[0])
    led.feed(tricky)  # held behind the gap at 1, in the state's bytes as it is
    assert b'"sealed":' in led.state.to_bytes() and not is_sealed(led.state.to_bytes())
    assert not is_sealed(RunState.new("run-s").to_bytes())
    led = Ledger("run-s")
    for obj in run:
        led.feed(obj)
    assert not is_sealed(led.state.to_bytes())
    led.state.seal([led.entries[s].event_hash for s in range(len(run))])
    assert is_sealed(led.state.to_bytes())


def test_unpriced_calls_are_counted_apart_with_one_warning_per_model() -> None:
    run = "run-u"
    objs = [
        ev.started(run, budget="1"),
        ev.model_io(run, 1, "0.25"),
        ev.model_io(run, 2, "0", model="house-llm", source="unpriced", tokens=(500, 50)),
        ev.model_io(run, 3, "0", model="house-llm", source="unpriced", tokens=(700, 70)),
        # an unpriced cost's currency is no cost in another currency
        ev.model_io(run, 4, "0", model="beta-x", source="unpriced", currency="EUR"),
        ev.completed(run, 5),
    ]
    for serialize in (False, True):
        led = Ledger(run, serialize=serialize)
        for obj in objs:
            led.feed(obj)
        assert led.kinds() == ["unpriced_model", "unpriced_model"]
        first, second = led.intercepts
        assert (first.severity, first.seq, second.seq) == ("warning", 2, 4)
        assert "openai/house-llm" in first.reason and "openai/beta-x" in second.reason
        totals = led.state.fold.totals_json()
        assert totals["cost"] == "0.25" and totals["currency"] == "USD"
        assert totals["unbilled"] == {}
        assert totals["unpriced"] == {
            "calls": 3,
            "by_model": {"openai/beta-x": 1, "openai/house-llm": 2},
        }
        house = totals["by_model"]["openai/house-llm"]
        assert (house["calls"], house["unpriced_calls"], house["cost"]) == (2, 2, "0")
        assert house["input_tokens"] == 1200  # tokens are kept
        assert totals["tokens"]["input"] == 1000 + 500 + 700 + 1000
        assert totals["by_step"]["plan"]["model_calls"] == 4
        assert "unpriced_calls" not in totals["by_model"]["openai/gpt-4.1"]


def test_totals_without_unpriced_calls_keep_their_shape() -> None:
    fold, _ = fold_events("run-1", ev.simple_run(), CONFIG)
    totals = fold.totals_json()
    assert "unpriced" not in totals
    assert all("unpriced_calls" not in m for m in totals["by_model"].values())
