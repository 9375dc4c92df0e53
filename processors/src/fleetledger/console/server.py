"""Serving the console: uvicorn in front of :class:`ConsoleApp`, and in embedded mode the
embedded worker in a thread of the same process, so what the SDK records into the store
shows up live without a second command.

:class:`ConsoleServer` runs one server (on the calling thread, or in a thread of its own
for tests and benchmarks) and stops it cleanly: the event streams end first, so the
server does not wait for browsers to hang up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from fleetledger.console.app import ConsoleApp, ConsoleConfig
from fleetledger.console.security import check_bind, is_loopback
from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import FleetLedgerError

log = logging.getLogger("fleetledger.console")


class _Uvicorn(uvicorn.Server):
    """uvicorn that closes the console's event streams when asked to exit."""

    def __init__(self, config: uvicorn.Config, app: ConsoleApp) -> None:
        super().__init__(config)
        self._console = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._console.hub.close_soon()
        super().handle_exit(sig, frame)


class ConsoleServer:
    """One console server on ``host:port`` (port 0: a free one, see :attr:`port`)."""

    def __init__(self, app: ConsoleApp, host: str = "127.0.0.1", port: int = 0) -> None:
        check_bind(host, app.config.token)
        self.app = app
        self.host = host
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
            ws="none",
        )
        self._server = _Uvicorn(config, app)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self._server.config.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve(self) -> None:
        """Serve on this thread until SIGINT/SIGTERM."""
        self._server.run()

    def start(self, timeout: float = 20.0) -> ConsoleServer:
        """Serve in a thread; returns once the port is open."""
        self._thread = threading.Thread(target=self._server.run, name="console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise FleetLedgerError(f"console on {self.host} did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.app.hub.close_soon()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ConsoleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class EmbeddedWorker:
    """The embedded worker in a thread, stopped between batches."""

    settings: Settings
    poll_s: float = 0.1
    on_error: Callable[[BaseException], None] | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        from fleetledger.processors.runtimes.backend import backend

        try:
            backend(self.settings).run_worker(poll_s=self.poll_s, should_stop=self._stop.is_set)
        except BaseException as exc:  # reported; the console keeps serving what it has
            self.error = exc
            log.error("embedded worker stopped: %s", exc)
            if self.on_error is not None:
                self.on_error(exc)

    def start(self) -> EmbeddedWorker:
        self._thread = threading.Thread(target=self._run, name="embedded-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def prepare(settings: Settings) -> None:
    """Create (or migrate) what the console reads: the embedded store and its read model,
    or the read model named by FLEETLEDGER_READ_DB."""
    from fleetledger.processors.runtimes.backend import EmbeddedBackend, backend

    found = backend(settings)
    if isinstance(found, EmbeddedBackend):
        with found.runtime():
            pass
        url = settings.read_db_url()
        if url.path is None or url.path.resolve() != found.path.resolve():
            found.read_model(create=True).close()


@contextlib.contextmanager
def console(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    process: bool = True,
    poll_s: float = 0.05,
) -> Iterator[ConsoleServer]:
    """A console server for ``settings`` (not started): in embedded mode with ``process``
    the embedded worker runs beside it; the read model is opened read-only."""
    from fleetledger.processors.runtimes.backend import EmbeddedBackend, backend

    bind = host or settings.console_host
    token = settings.console_token
    check_bind(bind, token)
    found = backend(settings)
    embedded = isinstance(found, EmbeddedBackend)
    worker: EmbeddedWorker | None = None
    if embedded and process:
        prepare(settings)
        worker = EmbeddedWorker(settings, poll_s=poll_s).start()
    try:
        reads = found.read_model()
    except FleetLedgerError:
        if worker is not None:
            worker.stop()
        raise
    try:
        app = ConsoleApp(
            reads,
            ConsoleConfig(
                token=token,
                loopback=is_loopback(bind),
                archive=settings.compliance_archive,
                poll_s=poll_s,
                source=(
                    f"embedded store {found.path.name}"
                    if isinstance(found, EmbeddedBackend)
                    else f"{found.describe()} · read model {reads.label}"
                ),
            ),
        )
        server = ConsoleServer(app, bind, settings.console_port if port is None else port)
        yield server
    finally:
        if worker is not None:
            worker.stop()
        reads.close()


def serve(settings: Settings, **kwargs: Any) -> None:
    """``fleetledger console``: serve until interrupted."""
    with console(settings, **kwargs) as server:
        server.serve()


__all__ = ["ConsoleServer", "EmbeddedWorker", "console", "prepare", "serve"]
