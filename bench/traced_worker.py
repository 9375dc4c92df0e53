"""``fleetledger worker`` with timestamps for the latency breakdown (benchmark only).

The real worker (``run_worker(settings)``, settings from the ``FLEETLEDGER_*``
environment, as ``fleetledger worker`` runs it), with four methods wrapped so that they
also read the clock (``time.time()``, comparable across processes) and append a JSON
line per event of interest to ``BENCH_TRACE_FILE``:

* ``aiokafka.consumer.fetcher.Fetcher.fetched_records`` - when the worker's consumer
  handed records of the events topic to Faust: ``{"k": "fetch", "p", "a", "b", "t"}``
  (partition, first and last offset, time);
* ``FaustRuntime.process_batch`` - when a batch of messages reached the runtime (Faust's
  ``take_events`` done) and when it was finished: ``{"k": "batch", "m": [[p, a, b]...],
  "enter", "pipe", "pub0", "pub1", "exit"}``;
* ``Pipeline.handle_many`` - ``pipe``: when the pipeline call(s) of the batch returned;
* ``KafkaSink.publish`` - ``pub0``/``pub1``: when the outputs' sends started and when the
  broker had acknowledged them all.

Nothing else changes: the wrappers call the originals.  The first line lists the hooks
installed (``{"k": "hooks", ...}``); a hook whose target is gone (the runtime changed)
is reported there and its stage is missing from the breakdown.

Run by the harness as ``python -m bench.traced_worker``; stopped by SIGTERM.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

#: What the latency breakdown needs from the worker, by hook name.
HOOKS = ("fetch", "batch", "pipeline", "publish")


class Trace:
    """Appends JSON lines, from any thread, flushed line by line."""

    def __init__(self, path: str) -> None:
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self.current: dict[str, Any] | None = None

    def write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


def _ranges(messages: Sequence[tuple[Any, str, int, int]]) -> list[list[int]]:
    by_p: dict[int, list[int]] = {}
    for _value, _topic, partition, offset in messages:
        r = by_p.get(partition)
        if r is None:
            by_p[partition] = [offset, offset]
        else:
            r[0] = min(r[0], offset)
            r[1] = max(r[1], offset)
    return [[p, a, b] for p, (a, b) in by_p.items()]


def install(trace: Trace, events_topic: str) -> dict[str, str]:
    """Wrap the hooks; return ``{hook: "ok" | why it is missing}``."""
    status: dict[str, str] = {}

    def patch(name: str, owner: Any, attr: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            status[name] = f"found no {getattr(owner, '__name__', owner)}.{attr}"
            return
        setattr(owner, attr, make(original))
        status[name] = "ok"

    from aiokafka.consumer.fetcher import Fetcher

    def make_fetch(original: Any) -> Any:
        async def fetched_records(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = await original(self, *args, **kwargs)
            if out:
                now = time.time()
                for tp, records in out.items():
                    if tp.topic == events_topic and records:
                        trace.write(
                            {
                                "k": "fetch",
                                "p": tp.partition,
                                "a": records[0].offset,
                                "b": records[-1].offset,
                                "t": now,
                            }
                        )
            return out

        return fetched_records

    patch("fetch", Fetcher, "fetched_records", make_fetch)

    from fleetledger.processors.runtimes import faust_app

    def make_batch(original: Any) -> Any:
        async def process_batch(self: Any, messages: Any, *args: Any, **kwargs: Any) -> Any:
            rec: dict[str, Any] = {"k": "batch", "enter": time.time(), "m": _ranges(messages)}
            trace.current = rec
            try:
                return await original(self, messages, *args, **kwargs)
            finally:
                rec["exit"] = time.time()
                trace.current = None
                trace.write(rec)

        return process_batch

    patch("batch", getattr(faust_app, "FaustRuntime", None), "process_batch", make_batch)

    from fleetledger.processors import pipeline

    def make_pipeline(original: Any) -> Any:
        def handle_many(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(self, *args, **kwargs)
            if trace.current is not None:
                trace.current["pipe"] = time.time()
            return out

        return handle_many

    patch("pipeline", getattr(pipeline, "Pipeline", None), "handle_many", make_pipeline)

    from fleetledger.processors.runtimes import kafka_io

    def make_publish(original: Any) -> Any:
        async def publish(self: Any, *args: Any, **kwargs: Any) -> Any:
            rec = trace.current
            if rec is not None:
                rec.setdefault("pub0", time.time())
            out = await original(self, *args, **kwargs)
            if rec is not None:
                rec["pub1"] = time.time()
            return out

        return publish

    patch("publish", getattr(kafka_io, "KafkaSink", None), "publish", make_publish)
    return status


def main() -> None:
    from fleetledger.kernel.config import load_settings
    from fleetledger.processors.runtimes.faust_app import run_worker
    from fleetledger.processors.runtimes.kafka_io import topic_specs

    settings = load_settings()
    trace = Trace(os.environ["BENCH_TRACE_FILE"])
    status = install(trace, topic_specs(settings).events.name)
    trace.write({"k": "hooks", **status})
    run_worker(settings)


if __name__ == "__main__":
    main()
