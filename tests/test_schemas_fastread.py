"""The compiled reader equals the general decode: same objects (and key order), and it
declines (Unreadable) exactly where it cannot vouch, so every error stays the general one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from typing import Any
from uuid import UUID

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetledger.kernel.errors import EventValidationError, SchemaError
from fleetledger.schemas import MAGIC, Codec, TraceEvent, money_str
from fleetledger.schemas.codec import AVRO_DIR, HEADER_LEN
from fleetledger.schemas.fastread import (
    Unreadable,
    amount_text_of_unscaled,
    compile_reader,
    ts_text_of_millis,
)
from fleetledger.schemas.models import _ts_fmt, _validate_amount

from .test_schemas_props import batches, events

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def general(codec: Codec, data: bytes) -> list[dict[str, Any]] | SchemaError:
    """What the documented equality says decode_objs returns: the models' objects."""
    try:
        return [e.to_json_obj() for e in codec.decode(data)]
    except SchemaError as exc:
        return exc


def compiled(codec: Codec, data: bytes) -> list[dict[str, Any]] | None:
    reader = codec.compiled_reader(codec.writer_of(data))
    assert reader is not None
    try:
        return reader(data, HEADER_LEN)
    except Unreadable:
        return None


def _ordered(objs: list[dict[str, Any]]) -> str:
    return json.dumps(objs)  # key order included


def _raw_message(codec: Codec, kind: str, record: dict[str, Any]) -> bytes:
    entry = codec.schema(kind)  # type: ignore[arg-type]
    buf = BytesIO()
    buf.write(MAGIC + entry.fingerprint)
    fastavro.schemaless_writer(buf, entry.schema, record)
    return buf.getvalue()


def test_the_current_contract_compiles(codec: Codec) -> None:
    for kind in ("event", "batch"):
        entry = codec.schema(kind)
        assert entry.version == codec.current_version
        assert codec.compiled_reader(entry) is not None, kind


@SETTINGS
@given(event=events())
def test_an_event_reads_as_the_models_read_it(codec: Codec, event: TraceEvent) -> None:
    data = codec.encode_event(event)
    got = compiled(codec, data)
    assert got == [event.to_json_obj()]
    assert _ordered(got) == _ordered(codec._decode_objs_general(data, None))


@SETTINGS
@given(events_=batches())
def test_a_batch_reads_as_the_models_read_it(codec: Codec, events_: list[TraceEvent]) -> None:
    data = codec.encode_batch(events_)
    got = compiled(codec, data)
    assert got == [e.to_json_obj() for e in events_]
    assert _ordered(got) == _ordered(codec._decode_objs_general(data, None))
    assert codec.decode_objs(data) == got


@SETTINGS
@given(events_=batches(), data=st.data())
def test_a_corrupted_message_is_declined_or_read_alike(
    codec: Codec, events_: list[TraceEvent], data: st.DataObject
) -> None:
    raw = bytearray(codec.encode_batch(events_))
    how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "flip":
        pos = data.draw(st.integers(HEADER_LEN, len(raw) - 1))
        raw[pos] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        del raw[data.draw(st.integers(HEADER_LEN, len(raw) - 1)) :]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=8))
    message = bytes(raw)
    expected = general(codec, message)
    got = compiled(codec, message)
    if isinstance(expected, SchemaError):
        assert got is None  # declined: the general path gives the error
        with pytest.raises(type(expected)):
            codec.decode_objs(message)
    else:  # a changed byte may still spell valid events: read alike, or declined
        assert got is None or got == expected
        assert codec.decode_objs(message) == expected


def test_a_non_canonical_uuid_is_left_to_the_general_path(codec: Codec) -> None:
    event = TraceEvent.parse(_an_event_obj(codec))
    rec = event.to_record()
    rec["event_id"] = str(event.event_id).upper()
    data = _raw_message(codec, "event", rec)
    assert compiled(codec, data) is None
    assert codec.decode_objs(data) == [event.to_json_obj()]  # the canonical lowercase text


def test_a_payload_of_another_type_gets_the_models_error(codec: Codec) -> None:
    obj = _an_event_obj(codec)
    rec = TraceEvent.parse(obj).to_record()
    rec["type"] = "run_completed" if obj["type"] != "run_completed" else "step_started"
    data = _raw_message(codec, "event", rec)
    assert compiled(codec, data) is None
    with pytest.raises(EventValidationError) as fast:
        codec.decode_objs(data)
    with pytest.raises(EventValidationError) as slow:
        codec.decode(data)
    assert str(fast.value) == str(slow.value)


def test_a_batch_with_another_runs_event_gets_the_models_error(codec: Codec) -> None:
    event = TraceEvent.parse(_an_event_obj(codec))
    data = _raw_message(codec, "batch", {"run_id": "other-run", "events": [event.to_record()]})
    assert compiled(codec, data) is None
    with pytest.raises(EventValidationError, match="expected 'other-run'"):
        codec.decode_objs(data)


def test_an_old_writer_is_read_the_general_way(codec: Codec) -> None:
    old = codec.schema("batch", 1)
    assert old.version < codec.current_version
    event = TraceEvent.parse(_an_event_obj(codec, etype="step_started"))
    data = codec.encode_batch_version([event], 1)
    assert codec.writer_of(data) == old
    assert codec.decode_objs(data) == [e.to_json_obj() for e in codec.decode(data)]


def test_a_schema_it_cannot_compile_gets_no_reader(codec: Codec) -> None:
    path = AVRO_DIR / f"v{codec.current_version}" / "TraceEvent.avsc"
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert compile_reader(_parsed(raw), "event") is not None
    raw["fields"].append({"name": "score", "type": "double"})  # a field the model lacks
    assert compile_reader(_parsed(raw), "event") is None


def _parsed(raw: dict[str, Any]) -> dict[str, Any]:
    parsed = fastavro.parse_schema(raw)
    assert isinstance(parsed, dict)
    return parsed


@settings(max_examples=500, deadline=None)
@given(
    ms=st.integers(-62_135_596_800_000, 253_402_300_799_999)  # years 1 to 9999
    | st.integers(-(10**12), 10**13)
)
def test_timestamp_text_is_fastavros_datetime_formatted(ms: int) -> None:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ms * 1000)
    assert ts_text_of_millis(ms, {}) == _ts_fmt(dt)


@settings(max_examples=500, deadline=None)
@given(unscaled=st.integers(-(10**28) + 1, 10**28 - 1) | st.integers(-(10**12), 10**12))
def test_amount_text_is_the_models_money_text(unscaled: int) -> None:
    value = Decimal(unscaled).scaleb(-10)
    assert amount_text_of_unscaled(unscaled, 10) == money_str(_validate_amount(value))


def _an_event_obj(codec: Codec, etype: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": str(UUID(int=0xABCDEF0123)),
        "run_id": "run-1",
        "seq": 0,
        "type": etype or "step_started",
        "ts": "2026-01-02T03:04:05.678Z",
        "agent_id": "agent",
        "tenant": "acme",
        "producer_id": "p1",
        "schema_version": codec.current_version,
        "payload": {"attempt": 1},
    }
    return obj
