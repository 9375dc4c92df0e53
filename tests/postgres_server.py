"""A throwaway PostgreSQL server for the test suite and the benchmarks.

Debian's PostgreSQL packages (``apt-get install postgresql``; `.ci/run` installs them)
provide ``initdb`` and ``pg_ctl``.  The cluster lives in a temporary folder, listens on
127.0.0.1 at a free port with trust authentication for the ``fleetledger`` role, runs as
the ``postgres`` system user when the tests run as root (the server refuses root), and is
stopped by its data directory (``pg_ctl stop``) and deleted at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .kafka_broker import free_port


class PostgresStartError(RuntimeError):
    """PostgreSQL could not be found or did not start."""


def find_bindir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl`` (the newest Debian PostgreSQL)."""
    env = os.environ.get("FLEETLEDGER_TEST_PG_BINDIR")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresStartError(
        "found no initdb/pg_ctl (looked in /usr/lib/postgresql/*/bin and PATH); expected "
        "PostgreSQL installed (apt-get install -y postgresql)"
    )


class PostgresServer:
    """One PostgreSQL cluster on ``127.0.0.1:<port>``."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root: Path | None = None
        self._bindir: Path | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://fleetledger@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def start(self) -> str:
        self._bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="fleetledger-pg-"))
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        data = self.root / "data"
        init = self._run(
            str(self._bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "fleetledger",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        if init.returncode != 0:
            raise PostgresStartError(f"initdb failed: {init.stderr.strip()[-2000:]}")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        start = self._run(
            str(self._bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
            "-l", str(self.root / "log"), "-o", options, "start",
        )  # fmt: skip
        if start.returncode != 0:
            raise PostgresStartError(
                f"pg_ctl start failed: {start.stderr.strip()[-1000:]}; log: {self.log_tail()}"
            )
        return self.url

    def log_tail(self, limit: int = 2000) -> str:
        if self.root is None or not (self.root / "log").exists():
            return ""
        return (self.root / "log").read_bytes()[-limit:].decode("utf-8", "replace")

    def stop(self) -> None:
        if self.root is None or self._bindir is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            self._run(str(self._bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://fleetledger@127.0.0.1:{self.port}/{name}"
