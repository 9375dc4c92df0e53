"""The worker's log: fleetledger's own INFO messages are written, libraries' are not."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mode.utils.logging import setup_logging

from fleetledger.processors.runtimes.faust_app import apply_log_levels

NAMES = ("", "fleetledger", "faust", "mode", "aiokafka", "kafka", "venusian")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in NAMES}
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _text(path: Path) -> str:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text(encoding="utf-8")


def test_after_faust_sets_up_logging_fleetledger_info_is_written(
    restored_logging: None, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    # what Faust's worker does: the root logger and its one handler at the worker's level
    setup_logging(loglevel="WARNING", logfile=str(log))
    apply_log_levels(logging.WARNING)
    logging.getLogger("fleetledger.processors.runtimes.faust_app").info("table recovered")
    logging.getLogger("aiokafka.consumer").info("fetching")
    logging.getLogger("faust.tables").info("recovering")
    logging.getLogger("aiokafka.consumer").warning("heartbeat failed")
    logging.getLogger("fleetledger.processors.runtimes.faust_app").debug("messages 0..9")
    text = _text(log)
    assert "table recovered" in text
    assert "heartbeat failed" in text
    assert "fetching" not in text and "recovering" not in text
    assert "messages 0..9" not in text


def test_verbose_keeps_debug(restored_logging: None, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    setup_logging(loglevel="DEBUG", logfile=str(log))
    apply_log_levels(logging.DEBUG)
    logging.getLogger("aiokafka.consumer").debug("fetch request")
    assert "fetch request" in _text(log)
