"""The compliance archive: every materialized bundle (signed when a key is configured) as

``ARCHIVE/<tenant>/<yyyy>/<mm>/<dd>/<run_id>.bundle.json`` (+ ``.dsse.json`` and
``.intoto.json``), the date being the run's start (UTC), so reprocessing finds the same
path.  Writes are atomic (temp file in the same folder, fsync, rename) and idempotent:
an existing file with the same bytes is left alone; one with other bytes is refused
(archives are write-once).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetledger.kernel.errors import FleetLedgerError, StoreError
from fleetledger.kernel.topics import MANIFEST_KIND
from fleetledger.processors.evidence import evidence_files, file_stem, parse_json

if TYPE_CHECKING:
    from fleetledger.processors.pipeline import Bundle


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_once(path: Path, data: bytes) -> bool:
    """Write ``data`` unless ``path`` already holds exactly it; True when written."""
    try:
        if path.exists():
            if path.read_bytes() == data:
                return False
            raise StoreError(
                f"archive file {str(path)!r} exists with other content; expected the same "
                "bytes (archived evidence is write-once)"
            )
        write_atomic(path, data)
    except OSError as exc:
        raise StoreError(f"cannot write archive file {str(path)!r}: {exc}") from exc
    return True


def write_evidence(folder: Path, data: bytes, key: Ed25519PrivateKey | None) -> list[Path]:
    """A stored bundle's evidence files in ``folder`` (``<run_id>.bundle.json``, plus
    ``.dsse.json`` and ``.intoto.json`` when signing), each written atomically."""
    bundle = parse_json(data, "bundle")
    out = []
    for name, content in evidence_files(bundle, key, data):
        write_atomic(folder / name, content)
        out.append(folder / name)
    return out


@dataclass
class ArchiveSink:
    """Writes bundles to the archive folder, signing them when ``key`` is set."""

    root: Path
    key: Ed25519PrivateKey | None = None

    def folder(self, tenant: str, started_at: str | None) -> Path:
        """``ROOT/<tenant>/<yyyy>/<mm>/<dd>``, the day of the run's start (UTC)."""
        if started_at is None:  # a run that never started: filed under its tenant only
            return self.root / file_stem(tenant) / "undated"
        yyyy, mm, dd = started_at[:10].split("-")
        return self.root / file_stem(tenant) / yyyy / mm / dd

    def write(self, bundle: Bundle) -> list[Path]:
        """Archive one materialized bundle; return the files written."""
        folder = self.folder(bundle.tenant, bundle.started_at)
        written = []
        for name, data in evidence_files(bundle.document, self.key, bundle.data):
            if write_once(folder / name, data):
                written.append(folder / name)
        return written


def load_archived_bundle(manifest: bytes) -> bytes:
    """The bundle bytes a manifest points at, checked against its size and sha256."""
    try:
        obj = parse_json(manifest, "bundle manifest")
        path, size, sha = Path(obj["path"]), int(obj["size"]), str(obj["sha256"])
    except (FleetLedgerError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"bundle manifest is malformed ({exc}); expected {MANIFEST_KIND}") from exc
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(
            f"archived bundle {str(path)!r} cannot be read: {exc}; expected the archive "
            "folder (FLEETLEDGER_ARCHIVE_DIR) of the worker to be mounted here"
        ) from exc
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        raise StoreError(
            f"archived bundle {str(path)!r} has {len(data)} bytes with another sha256; "
            f"expected {size} bytes with sha256 {sha}"
        )
    return data


__all__ = [
    "ArchiveSink",
    "file_stem",
    "load_archived_bundle",
    "write_atomic",
    "write_evidence",
    "write_once",
]
