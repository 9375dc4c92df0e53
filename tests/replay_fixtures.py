"""Recording runs to bundles for replay tests, and a server that must never be called."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fleetledger.processors.memory import memory_pipeline
from fleetledger.processors.pipeline import SourcePosition
from fleetledger.producers import MemoryTransport, Recorder

_NOW = datetime(2027, 1, 1, tzinfo=UTC)


def bundles_of(transport: MemoryTransport) -> dict[str, bytes]:
    """The bundles (canonical bytes) of every finished run a transport carried."""
    pipe = memory_pipeline()
    out: dict[str, bytes] = {}
    for i, (_key, value) in enumerate(transport.messages):
        for b in pipe.handle(value, SourcePosition("events", 0, i), _NOW).bundles:
            out[b.run_id] = b.data
    return out


async def record(
    body: Callable[[Recorder], Awaitable[Any]], folder: Path, **recorder_kwargs: Any
) -> dict[str, Path]:
    """Run ``body(recorder)`` and write the bundles of its runs into ``folder``."""
    transport = MemoryTransport()
    recorder_kwargs.setdefault("linger_ms", None)
    async with Recorder(transport, **recorder_kwargs) as rec:
        await body(rec)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for run_id, data in bundles_of(transport).items():
        path = folder / f"{run_id}.bundle.json"
        path.write_bytes(data)
        paths[run_id] = path
    return paths


class _Tripwire(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Tripwire

    def log_message(self, *_: Any) -> None:
        return

    def _fail(self) -> None:
        with self.server.lock:
            self.server.hits.append(f"{self.command} {self.path}")
        raw = b'{"error":{"type":"tripwire","message":"a replay reached the network"}}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("x-should-retry", "false")
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _fail


class Tripwire(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that answers every request with a 500 and keeps it in
    :attr:`hits`: a test whose replay must not reach the network points clients here and
    asserts ``hits == []``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tripwire)
        self.lock = threading.Lock()
        self.hits: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
