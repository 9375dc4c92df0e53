"""Shared fixtures.

``kafka_bootstrap`` starts one in-memory Kafka-protocol broker (Tansu) for the whole
session, ``postgres_server`` one throwaway PostgreSQL cluster.  When either cannot be
found or started, every test using it FAILS (it is never skipped): a green run must
prove the Kafka and PostgreSQL tests really ran.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .kafka_broker import BrokerStartError, TansuBroker
from .postgres_server import PostgresServer, PostgresStartError

_counter = itertools.count()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """The session's Tansu broker process (started once, stopped by PID at the end)."""
    broker = TansuBroker(max_lifetime_s=float(os.environ.get("FLEETLEDGER_TEST_BROKER_TTL", 1800)))
    problem: str | None = None
    try:
        broker.start()
    except BrokerStartError as exc:
        problem = str(exc)
    if problem is not None:
        broker.cleanup()
        pytest.fail(f"Kafka test broker unavailable: {problem}", pytrace=False)
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: TansuBroker) -> str:
    """``"127.0.0.1:PORT"`` of the session's running Kafka-protocol broker."""
    if kafka_broker.proc is None or kafka_broker.proc.poll() is not None:
        pytest.fail(
            f"Kafka test broker is not running; log: {kafka_broker.log_tail()}", pytrace=False
        )
    return kafka_broker.bootstrap


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix no other test (in this session or broker) uses."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40]
    return f"t{next(_counter)}-{name.strip('-')}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (started once, stopped by its data directory).

    When PostgreSQL cannot be found or started, every test using it FAILS (never skips).
    """
    server = PostgresServer()
    problem: str | None = None
    try:
        server.start()
    except (PostgresStartError, OSError, subprocess.SubprocessError) as exc:
        problem = str(exc)
    if problem is not None:
        server.cleanup()
        pytest.fail(f"PostgreSQL test server unavailable: {problem}", pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server (one per test)."""
    return postgres_server.create_database(f"t{next(_counter)}_{uuid.uuid4().hex[:8]}")


# --------------------------------------------------------------------------- the console


@pytest.fixture(scope="session")
def console_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store with a simulated fleet, processed (built once; tests that write
    copy it)."""
    from .console_support import build_fleet

    path = tmp_path_factory.mktemp("console-fleet") / "fleet.db"
    build_fleet(path, runs=30, seed=5)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's, driven by Playwright) for the browser tests (they
    are one module; module scope because Playwright's sync API keeps an event loop on the
    main thread while it runs, which would stop later tests' ``asyncio.run``).

    Missing Chromium FAILS every browser test (never skips): `.ci/run` installs it.
    """
    from playwright.sync_api import Error, sync_playwright

    from .console_support import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"found no {CHROMIUM}; expected Debian's chromium (apt-get install -y chromium; "
            ".ci/run installs it)",
            pytrace=False,
        )
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(f"Chromium did not start: {exc}", pytrace=False)
        try:
            yield b
        finally:
            b.close()
