"""Avro single-object encoding of events and event batches.

Wire format of one message::

    C3 01 | 8-byte CRC-64-AVRO fingerprint (little-endian) | Avro binary body

The fingerprint is that of the Parsing Canonical Form of the writer schema; it selects
the writer schema in a registry built from every version directory under
``schemas/avro/`` (``v1``, ``v2``, ...).  Bodies are read with schema resolution into the
current (newest) reader schema, so old writers stay readable.

A Kafka record may instead hold an ``EventPack`` (``schemas/avro/pack/``): several such
messages of one partition in one record, each complete with its own header.  Readers
split it with :meth:`Codec.unpack` and process its messages in order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

import fastavro
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from fleetledger.kernel.errors import (
    DecodeError,
    EventValidationError,
    SchemaError,
    UnknownFingerprintError,
)
from fleetledger.schemas.fastpath import Rejected, record_to_json_obj
from fleetledger.schemas.fastread import BodyReader, Unreadable, compile_reader
from fleetledger.schemas.models import AVRO_NAMESPACE, TraceEvent, _parse_event

__all__ = ["AVRO_DIR", "HEADER_LEN", "MAGIC", "PACK_SCHEMA", "Codec", "Kind", "WriterSchema"]

#: Two marker bytes that start every single-object encoded message.
MAGIC = b"\xc3\x01"
#: Magic + 8-byte fingerprint.
HEADER_LEN = 10
#: Directory holding one ``v<N>`` sub-directory per contract version.
AVRO_DIR = Path(__file__).resolve().parent / "avro"
#: The EventPack framing schema (not part of the versioned event contract).
PACK_SCHEMA = AVRO_DIR / "pack" / "EventPack.avsc"

Kind = Literal["event", "batch"]
_RECORDS: dict[Kind, str] = {"event": "TraceEvent", "batch": "EventBatch"}
_FILES: dict[Kind, str] = {kind: f"{name}.avsc" for kind, name in _RECORDS.items()}


@dataclass(frozen=True)
class WriterSchema:
    """One registered schema: what a fingerprint stands for."""

    kind: Kind
    version: int
    fingerprint: bytes  # 8 bytes, as they appear on the wire
    schema: dict[str, Any] = field(repr=False, compare=False)  # fastavro-parsed
    envelope_fields: frozenset[str] = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{AVRO_NAMESPACE}.{_RECORDS[self.kind]} v{self.version}"

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()


def _envelope_fields(kind: Kind, raw: dict[str, Any]) -> frozenset[str]:
    record = raw
    if kind == "batch":
        events = next(f for f in raw["fields"] if f["name"] == "events")
        record = events["type"]["items"]
    return frozenset(f["name"] for f in record["fields"])


#: What the decoders accept: any bytes-like buffer of a whole message.
Bytes = bytes | bytearray | memoryview


class Codec:
    """Encoder/decoder of TraceEvent and EventBatch messages.

    Build one per process or component and reuse it: schemas are parsed once here.
    """

    current_version: int

    def __init__(self, avro_dir: Path | str | None = None) -> None:
        root = Path(avro_dir) if avro_dir is not None else AVRO_DIR
        self._by_fp: dict[bytes, WriterSchema] = {}
        self._by_version: dict[tuple[Kind, int], WriterSchema] = {}
        self._compiled: dict[bytes, BodyReader | None] = {}  # by fingerprint, on first use
        versions = sorted(
            int(p.name[1:])
            for p in (root.iterdir() if root.is_dir() else ())
            if p.is_dir() and p.name[:1] == "v" and p.name[1:].isdigit()
        )
        if not versions:
            raise SchemaError(
                f"found no schema versions under {root}, expected directories v1, v2, ..."
            )
        for version in versions:
            for kind, filename in _FILES.items():
                self._register(kind, version, root / f"v{version}" / filename)
        self.current_version = versions[-1]
        _raw, self._pack_schema, self.pack_fingerprint = _load_schema(
            PACK_SCHEMA, f"{AVRO_NAMESPACE}.EventPack"
        )
        clash = self._by_fp.get(self.pack_fingerprint)
        if clash is not None:
            raise SchemaError(
                f"{PACK_SCHEMA}: found the fingerprint of {clash.name}, "
                "expected the EventPack schema to differ from every event schema"
            )
        self._pack_header = MAGIC + self.pack_fingerprint

    def _register(self, kind: Kind, version: int, path: Path) -> None:
        raw, parsed, fp = _load_schema(path, f"{AVRO_NAMESPACE}.{_RECORDS[kind]}")
        if fp in self._by_fp:
            other = self._by_fp[fp]
            raise SchemaError(
                f"{path}: found the same fingerprint {fp.hex()} as {other.name}, "
                "expected every schema version to differ"
            )
        try:
            fields = _envelope_fields(kind, raw)
        except (KeyError, TypeError, StopIteration) as exc:
            raise SchemaError(
                f"{path}: found no TraceEvent fields, expected a {_FILES[kind]} schema"
            ) from exc
        entry = WriterSchema(kind, version, fp, parsed, fields)
        self._by_fp[fp] = entry
        self._by_version[(kind, version)] = entry

    # ------------------------------------------------------------------ registry

    def fingerprints(self) -> dict[str, int]:
        """Hex fingerprint (wire byte order) -> contract version, for every schema."""
        return {fp.hex(): entry.version for fp, entry in self._by_fp.items()}

    @property
    def versions(self) -> list[int]:
        return sorted({v for _, v in self._by_version})

    def schema(self, kind: Kind, version: int | None = None) -> WriterSchema:
        """The registered schema of `kind` at `version` (default: current)."""
        version = self.current_version if version is None else version
        try:
            return self._by_version[(kind, version)]
        except KeyError:
            raise SchemaError(
                f"found schema version {version!r} for {kind}, expected one of {self.versions}"
            ) from None

    def writer_of(self, data: Bytes) -> WriterSchema:
        """Check the single-object header of `data` and return its writer schema."""
        return self._header(data)

    # ------------------------------------------------------------------ encoding

    def encode_event(self, event: TraceEvent, *, version: int | None = None) -> bytes:
        """Single-object TraceEvent (current writer schema unless `version` is given)."""
        entry = self.schema("event", version)
        _check_event(event, "event")
        return self._write(entry, self._record(event, entry))

    def encode_batch(self, events: Sequence[TraceEvent]) -> bytes:
        """Single-object EventBatch of events sharing one run_id, current writer schema."""
        return self.encode_batch_version(events, self.current_version)

    def encode_batch_version(self, events: Sequence[TraceEvent], version: int) -> bytes:
        """Single-object EventBatch written with the schema of contract `version`."""
        entry = self.schema("batch", version)
        if not events:
            raise SchemaError("found an empty batch, expected at least one event")
        run_id = None
        records = []
        for i, event in enumerate(events):
            _check_event(event, f"events[{i}]")
            if run_id is None:
                run_id = event.run_id
            elif event.run_id != run_id:
                raise EventValidationError(
                    f"invalid EventBatch: events[{i}].run_id: found {event.run_id!r}, "
                    f"expected {run_id!r} (all events of a batch share the run_id)"
                )
            records.append(self._record(event, entry))
        return self._write(entry, {"run_id": run_id, "events": records})

    @staticmethod
    def _record(event: TraceEvent, entry: WriterSchema) -> dict[str, Any]:
        rec = event.to_record()
        rec["schema_version"] = entry.version  # the writer's version
        if len(rec) != len(entry.envelope_fields):  # older writer: drop unknown fields
            rec = {k: v for k, v in rec.items() if k in entry.envelope_fields}
        return rec

    @staticmethod
    def _write(entry: WriterSchema, record: dict[str, Any]) -> bytes:
        buf = BytesIO()
        buf.write(MAGIC)
        buf.write(entry.fingerprint)
        try:
            fastavro.schemaless_writer(buf, entry.schema, record)
        except Exception as exc:  # fastavro raises assorted types on bad data
            raise SchemaError(
                f"cannot encode as {entry.name}: found {type(exc).__name__}: {exc}, "
                "expected a record matching the schema"
            ) from exc
        return buf.getvalue()

    def encode_pack(self, messages: Sequence[Bytes], *, check: bool = True) -> bytes:
        """One EventPack record holding `messages` (whole single-object messages), in order.

        ``check=False`` skips checking each message's header (a caller that checked it)."""
        if not messages:
            raise SchemaError("found an empty pack, expected at least one message")
        items = []
        for message in messages:
            if check:
                self._header(message)  # a known TraceEvent/EventBatch message, not a pack
            items.append(bytes(message))
        buf = BytesIO()
        buf.write(self._pack_header)
        fastavro.schemaless_writer(buf, self._pack_schema, {"messages": items})
        return buf.getvalue()

    # ------------------------------------------------------------------ decoding

    def is_pack(self, data: Bytes) -> bool:
        """Whether `data` starts with the EventPack header (its body is not checked)."""
        return data[:HEADER_LEN] == self._pack_header

    def messages_of(self, data: Bytes) -> list[bytes]:
        """The messages of one record: a pack's (:meth:`unpack`), or the record itself."""
        return self.unpack(data) if self.is_pack(data) else [bytes(data)]

    def unpack(self, data: Bytes) -> list[bytes]:
        """The messages of an EventPack record, in order (each still to be decoded)."""
        if not self.is_pack(data):
            raise DecodeError(
                f"found {bytes(data[:HEADER_LEN]).hex()} as the header, expected "
                f"{self._pack_header.hex()} (an EventPack)"
            )
        raw = _read_body(data, f"{AVRO_NAMESPACE}.EventPack", self._pack_schema, None)
        messages: list[bytes] = raw["messages"]
        if not messages:
            raise DecodeError("found an EventPack with no messages, expected at least one")
        return messages

    def decode(self, data: Bytes, *, reader_version: int | None = None) -> list[TraceEvent]:
        """Events of a single-object TraceEvent or EventBatch message, validated."""
        entry, raw = self._read(data, reader_version)
        if entry.kind == "event":
            try:
                return [_parse_event(raw, ())]
            except EventValidationError as exc:
                raise EventValidationError(f"{exc} (in {entry.name})") from exc
        out = []
        for i, rec in enumerate(raw["events"]):
            try:
                out.append(_parse_event(rec, ("events", i)))
            except EventValidationError as exc:
                raise EventValidationError(f"{exc} (in {entry.name})") from exc
        _check_batch_run_ids(raw["run_id"], [e.run_id for e in out], entry)
        return out

    def decode_records(
        self, data: Bytes, *, reader_version: int | None = None
    ) -> list[dict[str, Any]]:
        """Event records (fastavro dicts, payload a plain dict) without model validation."""
        entry, raw = self._read(data, reader_version)
        if entry.kind == "event":
            return [raw]
        events: list[dict[str, Any]] = raw["events"]
        _check_batch_run_ids(raw["run_id"], [e["run_id"] for e in events], entry)
        return events

    def decode_objs(
        self, data: Bytes, *, reader_version: int | None = None
    ) -> list[dict[str, Any]]:
        """Canonical JSON objects of a message's events, validated exactly like :meth:`decode`.

        Equal to ``[e.to_json_obj() for e in decode(data)]`` (errors included) without
        building the models: the processors' hot path.  A message of a current writer
        schema is read by the compiled reader (:mod:`fleetledger.schemas.fastread`); one
        it does not vouch for, and every other, is read with fastavro and the fast path.
        """
        entry = self._header(data)
        current = self.current_version
        compiled = None
        if entry.version == current and reader_version in (None, current):
            compiled = self.compiled_reader(entry)
        if compiled is not None:
            try:
                return compiled(data if type(data) is bytes else bytes(data), HEADER_LEN)
            except Unreadable:
                pass  # the general path below returns the objects or the precise error
        return self._decode_objs_general(data, reader_version)

    def compiled_reader(self, entry: WriterSchema) -> BodyReader | None:
        """The compiled reader of bodies written with ``entry`` (None: not compilable)."""
        try:
            return self._compiled[entry.fingerprint]
        except KeyError:
            reader = self._compiled[entry.fingerprint] = compile_reader(entry.schema, entry.kind)
            return reader

    def _decode_objs_general(self, data: Bytes, reader_version: int | None) -> list[dict[str, Any]]:
        entry, raw = self._read(data, reader_version)
        records = [raw] if entry.kind == "event" else raw["events"]
        objs = []
        for i, rec in enumerate(records):
            try:
                objs.append(record_to_json_obj(rec))
            except (Rejected, TypeError, ValueError, KeyError):
                where = () if entry.kind == "event" else ("events", i)
                try:  # the model names the field, the value and the expectation
                    objs.append(_parse_event(rec, where).to_json_obj())
                except EventValidationError as exc:
                    raise EventValidationError(f"{exc} (in {entry.name})") from exc
        if entry.kind == "batch":
            _check_batch_run_ids(raw["run_id"], [o["run_id"] for o in objs], entry)
        return objs

    def _header(self, data: Any) -> WriterSchema:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(
                f"found {type(data).__name__}, expected bytes of a single-object message"
            )
        if len(data) < HEADER_LEN:
            raise DecodeError(
                f"found {len(data)} bytes, expected at least {HEADER_LEN} "
                "(single-object header: 2 magic bytes + 8-byte fingerprint)"
            )
        if data[:2] != MAGIC:
            raise DecodeError(
                f"found magic bytes {bytes(data[:2]).hex()}, expected c301 "
                "(Avro single-object encoding)"
            )
        fp = bytes(data[2:HEADER_LEN])
        entry = self._by_fp.get(fp)
        if entry is None and fp == self.pack_fingerprint:
            raise DecodeError(
                "found an EventPack, expected a TraceEvent or EventBatch message "
                "(a pack is split into its messages first, and packs do not nest)"
            )
        if entry is None:
            known = ", ".join(sorted(f.hex() for f in self._by_fp))
            raise UnknownFingerprintError(
                f"found writer schema fingerprint {fp.hex()}, expected one of the "
                f"{len(self._by_fp)} known fingerprints ({known})"
            )
        return entry

    def _read(self, data: Bytes, reader_version: int | None) -> tuple[WriterSchema, Any]:
        entry = self._header(data)
        reader = self.schema(entry.kind, reader_version)
        reader_schema = None if reader is entry else reader.schema
        return entry, _read_body(data, entry.name, entry.schema, reader_schema)


def _read_body(
    data: Bytes, name: str, writer: dict[str, Any], reader: dict[str, Any] | None
) -> Any:
    """The Avro body after the header of `data`, which must end with it."""
    buf = BytesIO(data)
    buf.seek(HEADER_LEN)
    try:
        raw = fastavro.schemaless_reader(buf, writer, reader, return_record_name=False)
    except Exception as exc:  # fastavro raises assorted types on bad input
        raise DecodeError(
            f"cannot read the {name} body: found truncated or malformed Avro "
            f"data ({type(exc).__name__}: {exc}), expected a complete {name} record"
        ) from exc
    end = buf.tell()
    if end != len(data):
        raise DecodeError(
            f"found {len(data) - end} bytes after the {name} record, "
            "expected the message to end with the record"
        )
    return raw


def _load_schema(path: Path, name: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """A schema file's JSON, its fastavro-parsed form and its CRC-64-AVRO fingerprint (wire
    byte order); its top-level record must be `name`."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        parsed = fastavro.parse_schema(raw)
        if not isinstance(parsed, dict) or parsed.get("name") != name:
            raise ValueError(f"the top-level schema is not the record {name}")
        fp = bytes.fromhex(avro_fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaError(
            f"cannot load {path}: found {type(exc).__name__}: {exc}, "
            "expected a readable Avro schema"
        ) from exc
    return raw, parsed, fp


def _check_event(event: Any, where: str) -> None:
    if not isinstance(event, TraceEvent):
        raise SchemaError(f"{where}: found {type(event).__name__}, expected a TraceEvent")


def _check_batch_run_ids(run_id: str, event_run_ids: list[str], entry: WriterSchema) -> None:
    for i, rid in enumerate(event_run_ids):
        if rid != run_id:
            raise EventValidationError(
                f"invalid EventBatch: events[{i}].run_id: found {rid!r}, expected "
                f"{run_id!r} (the batch run_id) (in {entry.name})"
            )
