"""Checking the content a bundle refers to by hash against a blob store.

A bundle's ``blobs`` member lists every ``inputs_ref``/``outputs_ref`` of its events
(re-derived from the events by verification).  Content that was offloaded (``stored``)
can be checked against its SHA-256 and size wherever a copy of the blob store is at
hand; content withheld by redaction was never stored.  A missing blob is reported, not
failed: the bundle's own integrity does not depend on it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetledger.kernel.errors import VerificationError
from fleetledger.processors.signing import BUNDLE_PAYLOAD_TYPE

__all__ = ["BlobReport", "blob_summary", "bundle_of", "check_blobs"]

BlobLoader = Callable[[str], bytes | None]


@dataclass
class BlobReport:
    checked: int = 0
    withheld: int = 0
    missing: list[str] = field(default_factory=list)  # "seq 7 inputs sha256:<hex>"


def check_blobs(bundle: dict[str, Any], load: BlobLoader) -> BlobReport:
    """Check every stored blob the bundle lists that ``load`` (sha256 hex -> bytes) has.

    Raises :class:`VerificationError` (check ``blob``) for a blob whose bytes do not
    hash to the listed SHA-256 or have another size.
    """
    report = BlobReport()
    for item in bundle.get("blobs", []):
        where = f"seq {item['seq']} {item['field']}"
        if not item.get("stored", True):
            report.withheld += 1
            continue
        data = load(item["sha256"])
        if data is None:
            report.missing.append(f"{where} sha256:{item['sha256']}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != item["sha256"] or len(data) != item["size"]:
            raise VerificationError(
                "blob",
                f"found {len(data)} bytes hashing to {digest}, expected {item['size']} bytes "
                f"hashing to {item['sha256']}",
                where=where,
            )
        report.checked += 1
    return report


def bundle_of(data: bytes) -> dict[str, Any] | None:
    """The bundle in a (verified) bundle file or signed-bundle envelope, else None."""
    obj = json.loads(data)
    if isinstance(obj, dict) and "payloadType" in obj:
        if obj.get("payloadType") != BUNDLE_PAYLOAD_TYPE:
            return None
        obj = json.loads(base64.b64decode(obj["payload"]))
    return obj if isinstance(obj, dict) and "bundle_version" in obj else None


def blob_summary(path: Path, load: BlobLoader, *, require: bool = False) -> str:
    """Check the blobs of the (verified) bundle in the file at ``path``; a line's tail.

    Raises :class:`VerificationError` for a blob that does not match, or (``require``) for
    a missing one.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationError("read", f"{str(path)!r} cannot be read: {exc}") from exc
    bundle = bundle_of(data)
    if bundle is None:
        return ""
    report = check_blobs(bundle, load)
    if report.missing and require:
        raise VerificationError(
            "blob",
            f"found {len(report.missing)} blob(s) missing, expected all "
            f"(first: {report.missing[0]})",
        )
    note = f", blobs {report.checked} checked"
    if report.missing:
        note += f", {len(report.missing)} missing"
    if report.withheld:
        note += f", {report.withheld} withheld"
    return note
