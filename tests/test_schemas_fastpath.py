"""The processors' fast path equals the models: same canonical objects, same rejections."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetledger.kernel.errors import EventValidationError
from fleetledger.schemas import Codec, TraceEvent
from fleetledger.schemas.fastpath import Rejected, record_to_json_obj

from . import eventdicts as ev
from .test_schemas_props import batches, events

BAD_VALUES: list[Any] = [None, "", -1, 2**53, 2**31, 1.5, True, "usd", "x", [], {}, b"\x00"]


def model_path(rec: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return TraceEvent.from_record(rec).to_json_obj()
    except EventValidationError:
        return None


def fast_path(rec: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return record_to_json_obj(rec)
    except Rejected:
        return None


@settings(max_examples=300, deadline=None)
@given(event=events())
def test_valid_records_give_the_models_canonical_object(event: TraceEvent) -> None:
    rec = event.to_record()
    assert record_to_json_obj(rec) == event.to_json_obj()


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    if isinstance(obj, dict):
        return {**obj, head: _set(obj[head], tuple(rest), value)}
    copy = list(obj)
    copy[head] = _set(obj[head], tuple(rest), value)
    return copy


def _plain(rec: dict[str, Any]) -> dict[str, Any]:
    return {**rec, "payload": rec["payload"][1]}


@settings(max_examples=300, deadline=None)
@given(event=events(), data=st.data())
def test_mutated_records_are_judged_alike(event: TraceEvent, data: st.DataObject) -> None:
    rec = _plain(event.to_record())
    path = data.draw(st.sampled_from(_paths(rec)))
    bad = _set(rec, path, data.draw(st.sampled_from(BAD_VALUES)))
    assert fast_path(bad) == model_path(bad)


@settings(max_examples=100, deadline=None)
@given(event=events(), data=st.data())
def test_extra_and_missing_fields_are_judged_alike(event: TraceEvent, data: st.DataObject) -> None:
    rec = _plain(event.to_record())
    path = data.draw(st.sampled_from(_paths(rec)))
    *parent, last = path
    container = rec
    for p in parent:
        container = container[p]
    if isinstance(container, dict):
        smaller = {k: v for k, v in container.items() if k != last}
        missing = _set(rec, tuple(parent), smaller) if parent else smaller
        assert fast_path(missing) == model_path(missing)
        larger = {**container, "unexpected": 1}
        extra = _set(rec, tuple(parent), larger) if parent else larger
        assert fast_path(extra) == model_path(extra)


@settings(max_examples=100, deadline=None)
@given(batch=batches())
def test_decode_objs_equals_decode(batch: list[TraceEvent]) -> None:
    codec = Codec()
    data = codec.encode_batch(batch)
    assert codec.decode_objs(data) == [e.to_json_obj() for e in codec.decode(data)]


def test_decode_objs_reports_the_models_error() -> None:
    codec = Codec()
    event = TraceEvent.parse(ev.simple_run()[1])
    rec = _plain(event.to_record())
    rec["agent_id"] = ""
    with pytest.raises(EventValidationError, match="agent_id"):
        codec.decode_objs(codec._write(codec.schema("event"), rec))
