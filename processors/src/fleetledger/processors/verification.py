"""Verification of evidence files and folders, on every core.

``verify_paths`` takes files and folders (a folder stands for every evidence file under
it: ``*.bundle.json``, ``*.dsse.json``, ``*.intoto.json``), verifies each file with the
pure checks of :mod:`fleetledger.processors.evidence` and returns one result per file,
in order.  The files of one run (same folder, same stem) are verified together, so their
bundle bytes are checked once; runs are spread over a pool of processes.

Fail closed: a folder holding no evidence file, a path that cannot be read, and every
failing check are results with their reason, never a pass.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetledger.kernel.errors import FleetLedgerError, VerificationError
from fleetledger.processors.evidence import (
    Loader,
    Verified,
    open_envelope,
    parse_json,
    verify_file,
)
from fleetledger.processors.signing import raw_public

#: What a folder is searched for (recursively).
EVIDENCE_SUFFIXES = (".bundle.json", ".dsse.json", ".intoto.json")
#: Below this many runs a pool costs more than it saves.
_POOL_MIN_GROUPS = 8


@dataclass(frozen=True)
class PathResult:
    """The verdict on one path: ``facts`` when it holds, else ``error`` (one line)."""

    path: Path
    facts: Verified | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.facts is not None


def sibling_loader(path: Path) -> Loader:
    """Reads the files an envelope or bundle names, from the folder of ``path`` only."""

    def load(name: str) -> bytes | None:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            return None
        p = path.parent / name
        return p.read_bytes() if p.is_file() else None

    return load


def _stem(path: Path) -> str:
    name = path.name
    for suffix in EVIDENCE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def expand(paths: Sequence[Path]) -> list[Path | PathResult]:
    """Files as given, folders replaced by their evidence files (sorted); an empty folder
    becomes a failed result."""
    out: list[Path | PathResult] = []
    for p in paths:
        if not p.is_dir():
            out.append(p)
            continue
        found = sorted(
            f for f in p.rglob("*") if f.is_file() and f.name.endswith(EVIDENCE_SUFFIXES)
        )
        if not found:
            error = VerificationError(
                "empty",
                f"found no evidence file ({', '.join('*' + s for s in EVIDENCE_SUFFIXES)}) "
                "in the folder, expected at least one",
            )
            out.append(PathResult(p, error=str(error)))
        out += found
    return out


def _verify_group(
    paths: Sequence[Path], trusted_raw: Sequence[bytes], jobs: int | None = 1
) -> list[PathResult]:
    """The files of one run, sharing one cache of verified bundle bytes; ``jobs`` for a
    large bundle (1 inside a pool: its processes are the cores)."""
    trusted = [Ed25519PublicKey.from_public_bytes(k) for k in trusted_raw]
    cache: dict[bytes, Verified] = {}
    results = []
    for path in paths:
        try:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise VerificationError(
                    "read", f"{str(path)!r} cannot be read: {exc.strerror}"
                ) from exc
            facts = verify_file(data, trusted, sibling_loader(path), cache, jobs)
            results.append(PathResult(path, facts=facts))
        except FleetLedgerError as exc:
            results.append(PathResult(path, error=str(exc)))
    return results


def _context() -> multiprocessing.context.BaseContext:
    """fork where it is safe (no other thread that could hold a lock), else forkserver."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def verify_paths(
    paths: Sequence[Path], trusted: Sequence[Ed25519PublicKey], *, jobs: int | None = None
) -> list[PathResult]:
    """One result per evidence file (folders expanded), in order.

    ``jobs``: processes to use (default: every core); 1 verifies in this process.
    """
    if not paths:
        raise VerificationError("empty", "found no path, expected evidence files to verify")
    items = expand(paths)
    groups: dict[tuple[Path, str], list[int]] = {}
    for i, item in enumerate(items):
        if isinstance(item, Path):
            groups.setdefault((item.parent, _stem(item)), []).append(i)
    batches = list(groups.values())
    trusted_raw = [raw_public(k) for k in trusted]
    workers = min(jobs or os.cpu_count() or 1, len(batches))
    verdicts: dict[int, PathResult] = {}
    args = [[items[i] for i in batch] for batch in batches]
    if workers <= 1 or len(batches) < _POOL_MIN_GROUPS:
        # few runs: one at a time, a large bundle's events on every core
        done = [_verify_group(a, trusted_raw, jobs) for a in args]  # type: ignore[arg-type]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
            chunk = max(1, len(args) // (workers * 8))
            done = list(pool.map(_verify_group, args, [trusted_raw] * len(args), chunksize=chunk))
    for batch, results in zip(batches, done, strict=True):
        for i, result in zip(batch, results, strict=True):
            verdicts[i] = result
    return [item if isinstance(item, PathResult) else verdicts[i] for i, item in enumerate(items)]


def load_verified_bundle(
    path: Path, trusted: Sequence[Ed25519PublicKey]
) -> tuple[dict[str, Any], Verified]:
    """The bundle of a bundle file or a signed bundle, verified: (bundle, what was verified)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationError("read", f"{str(path)!r} cannot be read: {exc.strerror}") from exc
    facts = verify_file(data, trusted, sibling_loader(path))
    obj = parse_json(data, "file")
    if isinstance(obj, dict) and "payloadType" in obj:
        _ptype, payload, _kid = open_envelope(data, trusted)
        obj = parse_json(payload, "payload")
    if not isinstance(obj, dict) or "events" not in obj:
        raise VerificationError(
            "format", f"found a {facts.kind} in {str(path)!r}, expected a bundle"
        )
    return obj, facts


__all__ = [
    "EVIDENCE_SUFFIXES",
    "PathResult",
    "expand",
    "load_verified_bundle",
    "sibling_loader",
    "verify_paths",
]
