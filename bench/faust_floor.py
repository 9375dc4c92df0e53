"""The Faust floor: what faust-streaming costs before any of the worker's own work.

A Faust app configured like the worker (memory store, at-least-once, the same session
settings, raw serializers, acks off on the events topic) with ONE agent that reads the
events topic in batches exactly like the worker (``take_events(100, within=0.02)``) and
copies every message, unchanged, to the output topic with batched sends
(``create_batch``/``send_batch`` per partition, acknowledged): one output record per
*message*, no decode, no hashing, no state.  Its consumer delivers each fetch in one
race against a flow stop, as the worker's does (``race_flow_per_fetch``; stock Faust
races every message, 63-89 us more per message on the bench machine).  Whatever the
worker spends above this per message is its own.

Run by the harness as ``python -m bench.faust_floor`` with ``BENCH_BOOTSTRAP``,
``BENCH_EVENTS_TOPIC``, ``BENCH_OUTPUT_TOPIC``, ``BENCH_GROUP`` and
``BENCH_SESSION_TIMEOUT_S`` in the environment; stopped by SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from fleetledger.processors.runtimes.faust_private import race_flow_per_fetch

from .raw_worker import send_all


def build_app(bootstrap: str, events_topic: str, output_topic: str, group: str) -> faust.App:
    session = float(os.environ.get("BENCH_SESSION_TIMEOUT_S", "6"))
    datadir = Path(tempfile.mkdtemp(prefix="bench-faust-floor-"))
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        autodiscover=False,
        processing_guarantee="at_least_once",
        broker_session_timeout=session,
        broker_rebalance_timeout=session,
        broker_heartbeat_interval=max(0.5, min(3.0, session / 10)),
        broker_request_timeout=max(30.0, session * 1.5),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        worker_redirect_stdouts=False,
        topic_partitions=4,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(datadir),
    )
    app.fleetledger_datadir = datadir  # type: ignore[attr-defined]
    race_flow_per_fetch(app)
    events = app.topic(
        events_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        acks=False,
    )
    producers: list[AIOKafkaProducer] = []

    async def copy(stream: Any) -> None:
        async for batch in stream.take_events(100, within=0.02):
            if not producers:
                producer = AIOKafkaProducer(
                    bootstrap_servers=bootstrap,
                    acks="all",
                    enable_idempotence=False,
                    compression_type=os.environ.get("BENCH_COMPRESSION") or None,
                    max_request_size=2_000_000,
                    max_batch_size=1_000_000,
                    linger_ms=0,
                )
                await producer.start()
                producers.append(producer)
            out: dict[int, list[tuple[bytes, bytes]]] = {}
            for e in batch:
                out.setdefault(e.message.partition, []).append((e.message.key, e.value))
            await send_all(producers[0], output_topic, out)

    app.agent(events, name="bench.faust_floor")(copy)
    return app


class _Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        for name in ("", "faust", "mode", "aiokafka", "kafka"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    env = os.environ
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = build_app(
        env["BENCH_BOOTSTRAP"],
        env["BENCH_EVENTS_TOPIC"],
        env["BENCH_OUTPUT_TOPIC"],
        env["BENCH_GROUP"],
    )
    try:
        _Worker(app, loglevel="WARNING", loop=loop, quiet=True).execute_from_commandline()
    finally:
        shutil.rmtree(app.fleetledger_datadir, ignore_errors=True)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
