"""The naive baseline: a straightforward one-event-per-message Faust agent.

It reads single-object TraceEvent messages (one event each), decodes them with fastavro,
chains them per run (sha256 over the ``rfc8785`` canonical JSON of the event), keeps
per-run running totals in a Faust table, and publishes one ledger entry per event.  No
batching, no dedupe, no intercepts, no bundles: the textbook way to write it.

Run by the harness as ``python -m bench.naive_faust`` with ``BENCH_BOOTSTRAP``,
``BENCH_PREFIX`` and ``BENCH_GROUP`` in the environment; stopped by SIGTERM.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from datetime import datetime
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import faust
import rfc8785

from fleetledger.schemas.codec import HEADER_LEN, Codec


def json_safe(value: Any) -> Any:
    """fastavro values -> JSON values (no nulls, decimals and times as strings)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def build_app(bootstrap: str, prefix: str, group: str, datadir: Path) -> faust.App:
    session = float(os.environ.get("BENCH_SESSION_TIMEOUT_S", "6"))
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        autodiscover=False,
        processing_guarantee="at_least_once",
        broker_session_timeout=session,
        broker_rebalance_timeout=session,
        broker_heartbeat_interval=max(0.3, session / 10),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        worker_redirect_stdouts=False,
        topic_partitions=4,
        datadir=str(datadir),
    )
    schema = Codec().schema("event").schema
    events = app.topic(
        f"{prefix}.naive.events", key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    ledger = app.topic(
        f"{prefix}.naive.ledger", key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    runs = app.Table("naive-runs", default=None, partitions=4)

    @app.agent(events)
    async def process(stream: Any) -> None:
        async for value in stream:
            buf = BytesIO(value)
            buf.seek(HEADER_LEN)
            rec = fastavro.schemaless_reader(buf, schema, None, return_record_name=False)
            event = json_safe(rec)
            run_id = event["run_id"]
            state = runs.get(run_id) or {
                "prev": hashlib.sha256(run_id.encode()).hexdigest(),
                "events": 0,
                "cost": "0",
            }
            event_hash = hashlib.sha256(rfc8785.dumps(event)).hexdigest()
            entry_hash = hashlib.sha256(bytes.fromhex(state["prev"] + event_hash)).hexdigest()
            cost = Decimal(state["cost"])
            payload = event.get("payload", {})
            if "cost" in payload:
                cost += Decimal(payload["cost"]["amount"])
            runs[run_id] = {"prev": entry_hash, "events": state["events"] + 1, "cost": str(cost)}
            entry = {
                "run_id": run_id,
                "seq": event["seq"],
                "prev_hash": state["prev"],
                "event_hash": event_hash,
                "entry_hash": entry_hash,
                "event": event,
            }
            await ledger.send(
                key=f"{run_id}:{event['seq']:012d}".encode(), value=json.dumps(entry).encode()
            )

    return app


class _Worker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        for name in ("", "faust", "mode", "aiokafka", "kafka"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    datadir = Path(tempfile.mkdtemp(prefix="bench-naive-"))
    try:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = build_app(
            os.environ["BENCH_BOOTSTRAP"],
            os.environ["BENCH_PREFIX"],
            os.environ["BENCH_GROUP"],
            datadir,
        )
        _Worker(app, loglevel="WARNING", loop=loop, quiet=True).execute_from_commandline()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


if __name__ == "__main__":
    main()
