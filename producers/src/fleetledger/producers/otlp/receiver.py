"""The OTLP/HTTP receiver: ``POST /v1/traces`` in, fleetledger events out.

A thin aiohttp shell: it decodes the request (:mod:`.decode`), hands the spans to the
:class:`~fleetledger.producers.otlp.mapping.TraceAssembler`, records the runs that are
ready through the recorder (so they travel like any SDK-recorded run: SQLite or Kafka,
batched, redacted, blobs offloaded) and answers with an ``ExportTraceServiceResponse``
whose partial success counts the spans that map to nothing.  ``GET /v1/stats`` reports
the running counts.

Security: it binds 127.0.0.1 unless told otherwise; any other address needs a token,
then required on every request as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from fleetledger.kernel.errors import ConfigError, DecodeError, FleetLedgerError
from fleetledger.producers.otlp.decode import decode_request, encode_response
from fleetledger.producers.otlp.mapping import INVALID, RunPlan, TraceAssembler
from fleetledger.producers.recorder import Recorder

log = logging.getLogger(__name__)

__all__ = ["OtlpReceiver", "is_loopback", "serve"]

_PRODUCER = "fleetledger-otlp"
_IDS = uuid.UUID("5f0c2b0e-7a2b-4d7e-9c43-6f746c707631")
_MAX_BODY = 32 * 1024 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Clock:
    def __init__(self) -> None:
        self.now: Any = None

    def __call__(self) -> Any:
        return self.now


class _Ids:
    """Event ids derived from the run id: the same spans always give the same events."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.n = 0

    def __call__(self) -> uuid.UUID:
        self.n += 1
        return uuid.uuid5(_IDS, f"{self.run_id}/{self.n}")


class OtlpReceiver:
    """Serve ``/v1/traces`` on ``host:port`` (port 0: any free port) into ``recorder``."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        host: str = "127.0.0.1",
        port: int = 4318,
        token: str | None = None,
        tenant: str = "default",
        settle_s: float = 1.0,
        timeout_s: float = 30.0,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ConfigError(
                f"otlp receiver: found host {host!r} without a token, expected a token "
                "(--token or FLEETLEDGER_OTLP_TOKEN) for any address but loopback"
            )
        self.recorder = recorder
        self.host = host
        self.port = port
        self.token = token
        self.assembler = TraceAssembler(tenant=tenant, settle_s=settle_s, timeout_s=timeout_s)
        self.clock_ns = clock_ns
        self.runs_recorded = 0
        self._runner: Any = None
        self._ticker: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the address actually bound."""
        from aiohttp import web

        await self.recorder.start()
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_get("/v1/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            await self._runner.cleanup()
            raise ConfigError(
                f"otlp receiver: cannot listen on {self.host}:{self.port}: {exc}"
            ) from exc
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._ticker = asyncio.create_task(self._tick(), name="fleetledger-otlp-tick")
        return self.host, self.port

    async def stop(self) -> None:
        """Record everything still buffered, then stop serving."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._record(self.assembler.ready(self.clock_ns(), flush=True))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1/traces"

    def stats(self) -> dict[str, Any]:
        a = self.assembler
        return {
            "spans_received": a.received,
            "spans_mapped": a.mapped,
            "spans_unmapped": dict(sorted(a.unmapped.items())),
            "spans_pending": a.pending_spans,
            "runs_recorded": self.runs_recorded,
        }

    # ------------------------------------------------------------------ handlers
    def _authorized(self, request: Any) -> bool:
        if not self.token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def _traces(self, request: Any) -> Any:
        from aiohttp import web

        content_type = request.headers.get("Content-Type", "application/x-protobuf")
        if not self._authorized(request):
            return web.Response(status=401, text="missing or wrong bearer token")
        body = await request.read()
        try:
            spans = decode_request(body, content_type, request.headers.get("Content-Encoding"))
        except DecodeError as exc:
            return web.Response(status=400, text=str(exc))
        rejected = self.assembler.add(spans, self.clock_ns())
        plans = self.assembler.ready(self.clock_ns())
        try:
            failed = await self._record(plans)
        except FleetLedgerError as exc:  # the store or broker is down: let the client retry
            log.error("otlp: could not record: %s", exc)
            return web.Response(status=503, text=f"cannot record: {exc}")
        rejected.update(failed)
        total = sum(rejected.values())
        message = "; ".join(f"{n} {reason}" for reason, n in sorted(rejected.items()))
        if total:
            log.info("otlp: %d of %d spans not mapped: %s", total, len(spans), message)
        data, mime = encode_response(content_type, total, message)
        return web.Response(body=data, content_type=mime)

    async def _stats(self, request: Any) -> Any:
        from aiohttp import web

        if not self._authorized(request):
            return web.Response(status=401, text="missing or wrong bearer token")
        return web.json_response(self.stats())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, max(0.05, self.assembler.settle_ns / 2e9)))
            try:
                await self._record(self.assembler.ready(self.clock_ns()))
            except FleetLedgerError as exc:
                log.error("otlp: could not record: %s", exc)

    # ------------------------------------------------------------------ recording
    async def _record(self, plans: list[RunPlan]) -> Counter[str]:
        """Record runs; return the spans that could not be recorded, by reason."""
        failed: Counter[str] = Counter()
        if not plans:
            return failed
        async with self._lock:
            for plan in plans:
                failed.update(await self._record_one(plan))
            await self.recorder.flush()
        self.assembler.unmapped.update(failed)
        return failed

    async def _record_one(self, plan: RunPlan) -> Counter[str]:
        failed: Counter[str] = Counter()
        clock = _Clock()
        clock.now = plan.started
        run = await self.recorder.start_run(
            run_id=plan.run_id,
            agent_id=plan.agent_id,
            tenant=plan.tenant,
            labels=plan.labels,
            traceparent=plan.traceparent,
            clock=clock,
            ids=_Ids(plan.run_id),
            producer_id=_PRODUCER,
            linger=False,
        )
        for action in plan.actions:
            clock.now = action.ts
            try:
                await getattr(run, action.method)(**action.kwargs)
            except FleetLedgerError as exc:
                if self.recorder.failed is not None:
                    raise
                log.warning("otlp: a span of run %s not recorded: %s", plan.run_id, exc)
                failed[f"{INVALID}: {type(exc).__name__}"] += 1
        clock.now = plan.ended
        if plan.failed is not None:
            await run.fail(plan.failed[0], plan.failed[1])
        else:
            await run.complete(plan.summary)
        self.runs_recorded += 1
        return failed


async def serve(
    recorder: Recorder,
    *,
    duration_s: float | None = None,
    on_ready: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run a receiver until SIGINT/SIGTERM (or ``duration_s``); returns its final stats.

    Everything buffered is recorded and the recorder closed before it returns.
    """
    receiver = OtlpReceiver(recorder, **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await receiver.start()
        if on_ready is not None:
            on_ready(receiver.url)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        try:
            await receiver.stop()
        finally:
            await recorder.close()
    return receiver.stats()
