"""Content-addressed storage for large inputs and outputs.

An ``inputs``/``outputs`` value larger than the recorder's threshold is not put in the
event: its bytes go to a blob store under their SHA-256, and the event keeps a
:class:`~fleetledger.schemas.ContentRef` (``sha256``, ``size``, ``media_type``).  Anyone
holding the store can check a blob against the hash in a (signed) bundle; a bundle stays
verifiable without it.

:class:`FolderBlobStore` is the default: ``<root>/sha256/<2 hex>/<64 hex>``, written
atomically (temporary file, fsync, rename) and never overwritten, so a blob is written
once however often it is recorded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from fleetledger.kernel.errors import ConfigError, StoreError

__all__ = ["BlobStore", "FolderBlobStore", "sha256_hex"]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@runtime_checkable
class BlobStore(Protocol):
    """Where offloaded content goes; keyed by the lowercase hex SHA-256 of its bytes."""

    def put(self, sha256: str, data: bytes) -> None: ...

    def get(self, sha256: str) -> bytes | None: ...


class FolderBlobStore:
    """Blobs as files under ``root`` (created on first write)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FolderBlobStore({str(self.root)!r})"

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ConfigError(f"blob key: found {sha256!r}, expected 64 lowercase hex digits")
        return self.root / "sha256" / sha256[:2] / sha256

    def put(self, sha256: str, data: bytes) -> None:
        """Store ``data`` under its hash (a no-op when it is there already)."""
        target = self.path(sha256)
        if target.exists() and target.stat().st_size == len(data):
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StoreError(
                f"cannot write blob {sha256[:16]}... ({len(data)} bytes) under "
                f"{str(self.root)!r}: {exc}"
            ) from exc

    def get(self, sha256: str) -> bytes | None:
        """The blob's bytes, or None when the store does not have it."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read blob {sha256[:16]}... from {self.root}: {exc}") from exc
