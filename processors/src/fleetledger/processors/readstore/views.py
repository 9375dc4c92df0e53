"""What the read commands and the console open and show: the read model for a
:class:`~fleetledger.kernel.config.Settings`, a run's full view (from the read model, or
from the compliance archive once retention removed it), and retention itself."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import ConfigError, StoreError
from fleetledger.processors.readmodel import (
    ActionRow,
    InterceptQuery,
    InterceptRow,
    RunRow,
    actions_from_bundle,
    intercept_from_json,
    iso,
    run_from_bundle,
)
from fleetledger.processors.readstore.store import ArchivedRun, ReadStore

log = logging.getLogger("fleetledger.readmodel")


def open_read_model(settings: Settings, *, create: bool = False) -> ReadStore:
    """The read model ``settings`` name (``FLEETLEDGER_READ_DB``), for reading unless
    ``create``.  In Kafka mode a missing read model says which commands build it."""
    url = settings.read_db_url()
    broker = settings.broker_url()
    if (
        not create
        and broker.kind == "sqlite"
        and settings.read_db is None
        and broker.path is not None
        and not broker.path.exists()
    ):
        raise StoreError(
            f"embedded store {str(broker.path)!r} does not exist; run `fleetledger demo` or "
            "`fleetledger simulate` first, or pass --broker"
        )
    try:
        return ReadStore.open(url, create=create)
    except StoreError as exc:
        if broker.kind == "kafka" and "found no read model" in str(exc):
            raise StoreError(
                f"found no read model at {url}; in Kafka mode `fleetledger worker` creates "
                "the topics and processes the events, and `fleetledger projector` builds the "
                "read model from its outputs (set FLEETLEDGER_READ_DB to read another one)"
            ) from exc
        raise


@dataclass(frozen=True)
class RunView:
    """Everything ``show RUN`` renders."""

    run: RunRow
    actions: list[ActionRow]
    intercepts: list[InterceptRow]
    #: the bundle bytes of a finished run (as published, canonical)
    bundle: bytes | None
    #: where the compliance archive holds the bundle of a run retention removed
    archived: Path | None = None


def run_view(store: ReadStore, run_id: str, *, archive: Path | None) -> RunView | None:
    """A run from the read model, else from the compliance archive (None if neither)."""
    run = store.run(run_id)
    if run is not None:
        page = store.intercepts(InterceptQuery(run_id=run_id, limit=1000))
        return RunView(run, store.actions(run_id), list(page.intercepts), store.bundle(run_id))
    gone = store.archived(run_id)
    if gone is None:
        return None
    if archive is None:
        raise ConfigError(
            f"run {run_id!r} was moved to the compliance archive ({gone.path}); expected "
            "--archive or FLEETLEDGER_COMPLIANCE_ARCHIVE to read it from there"
        )
    path = archive / gone.path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(
            f"run {run_id!r} is archived at {str(path)!r}, which cannot be read: "
            f"{exc.strerror}; expected the compliance archive mounted there"
        ) from exc
    bundle = orjson.loads(data)
    if bundle["integrity"]["digest"] != gone.digest:
        raise StoreError(
            f"archived bundle {str(path)!r} has digest {bundle['integrity']['digest'][:16]}...; "
            f"expected {gone.digest[:16]}... (the one the read model recorded)"
        )
    intercepts = sorted(
        (intercept_from_json(i) for i in bundle.get("intercepts", [])),
        key=lambda i: (i.ts, i.intercept_id),
        reverse=True,
    )
    return RunView(
        run_from_bundle(bundle, gone.digest), actions_from_bundle(bundle), intercepts, data, path
    )


def apply_retention(
    store: ReadStore, archive: Path | None, days: int, now: datetime, *, batch: int = 500
) -> int:
    """Remove runs that ended more than ``days`` ago from the read model, each only once
    its bundle is in the compliance archive ``archive`` with the same digest.

    Returns how many runs were moved.  Runs whose bundle is not (yet) archived stay,
    and are logged.
    """
    from fleetledger.processors.archive import ArchiveSink
    from fleetledger.processors.evidence import file_stem

    if archive is None:
        raise ConfigError(
            f"FLEETLEDGER_RETENTION_DAYS={days} without a compliance archive; expected "
            "FLEETLEDGER_COMPLIANCE_ARCHIVE (runs leave the read model only once archived)"
        )
    sink = ArchiveSink(archive)
    cutoff = now - timedelta(days=days)
    moved = 0
    seen: set[str] = set()
    while True:
        candidates = [r for r in store.expired(cutoff, limit=batch) if r.run_id not in seen]
        if not candidates:
            return moved
        done: list[ArchivedRun] = []
        for run in candidates:
            seen.add(run.run_id)
            folder = sink.folder(run.tenant, iso(run.started_at))
            path = folder / f"{file_stem(run.run_id)}.bundle.json"
            try:
                found = orjson.loads(path.read_bytes())["integrity"]["digest"]
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
                found = None
            if found != run.digest:
                log.warning(
                    "run %s ended %s but its bundle is not in the compliance archive at %s; "
                    "kept in the read model",
                    run.run_id,
                    run.ended_at,
                    path,
                )
                continue
            assert run.started_at is not None and run.digest is not None
            done.append(
                ArchivedRun(
                    run_id=run.run_id,
                    tenant=run.tenant,
                    agent_id=run.agent_id,
                    started_at=run.started_at,
                    digest=run.digest,
                    path=str(path.relative_to(archive)),
                    archived_at=now,
                )
            )
        moved += store.archive(done)
