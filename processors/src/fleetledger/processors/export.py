"""A run's bundle exported as a file: the signed or plain bundle, or its events as rows.

Pure functions from a bundle's canonical bytes to the bytes of the file to write:

* ``json``: the bundle's canonical RFC 8785 bytes (verifiable as they are), or, with a key,
  its DSSE envelope;
* ``jsonl``: one canonical JSON object per event (``run_id`` + the bundle's event item);
* ``csv``: one row per event with flat columns a spreadsheet can use, the payload as its
  canonical JSON text.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetledger.kernel.errors import ConfigError
from fleetledger.processors.canonical import canonical_bytes
from fleetledger.processors.evidence import parse_json
from fleetledger.processors.signing import BUNDLE_PAYLOAD_TYPE, envelope_bytes, sign_envelope

Format = Literal["json", "jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("json", "jsonl", "csv")

#: Columns of the events CSV, in order.
EVENT_COLUMNS = (
    "run_id",
    "seq",
    "type",
    "ts",
    "tenant",
    "agent_id",
    "step_id",
    "event_id",
    "event_hash",
    "entry_hash",
    "payload",
)


@dataclass(frozen=True)
class Exported:
    """The file's bytes and what it holds."""

    data: bytes
    events: int
    signed: bool


def check_format(fmt: str, *, signed: bool) -> Format:
    """``fmt`` as a :data:`Format`; signing applies to the JSON bundle only."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: found {fmt!r}, expected json, jsonl or csv")
    if signed and fmt != "json":
        raise ConfigError(
            f"--sign with --format {fmt}: expected --format json (the bundle is what gets signed)"
        )
    return fmt


def export_bundle(
    data: bytes, fmt: str, key: Ed25519PrivateKey | None = None, *, what: str = "bundle"
) -> Exported:
    """The export of one stored bundle (its canonical bytes) in ``fmt``."""
    chosen = check_format(fmt, signed=key is not None)
    bundle: dict[str, Any] = parse_json(data, what)
    run_id = bundle["run"]["run_id"]
    events: list[dict[str, Any]] = bundle["events"]
    if chosen == "json":
        out = canonical_bytes(bundle)
        if key is not None:
            out = envelope_bytes(sign_envelope(out, BUNDLE_PAYLOAD_TYPE, key))
    elif chosen == "jsonl":
        out = b"".join(canonical_bytes({"run_id": run_id, **e}) + b"\n" for e in events)
    else:
        out = events_csv(run_id, events)
    return Exported(out, len(events), key is not None)


def events_csv(run_id: str, events: list[dict[str, Any]]) -> bytes:
    """The bundle's events as CSV rows (:data:`EVENT_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVENT_COLUMNS)
    for e in events:
        ev = e["event"]
        w.writerow(
            [
                run_id,
                e["seq"],
                ev["type"],
                ev["ts"],
                ev["tenant"],
                ev["agent_id"],
                ev.get("step_id", ""),
                ev["event_id"],
                e["event_hash"],
                e["entry_hash"],
                canonical_bytes(ev.get("payload", {})).decode(),
            ]
        )
    return buf.getvalue().encode()


__all__ = ["EVENT_COLUMNS", "FORMATS", "Exported", "Format", "events_csv", "export_bundle"]
