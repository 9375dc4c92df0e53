"""Property tests: generated events survive every representation unchanged."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetledger.kernel.errors import EventValidationError, SchemaError
from fleetledger.schemas import (
    MAGIC,
    ArtifactState,
    ArtifactWritten,
    CacheStatus,
    Codec,
    ContentRef,
    Cost,
    CostSource,
    EventType,
    GateDecision,
    GatePolicy,
    HumanGateRequested,
    HumanGateResolved,
    ModelDecision,
    ModelIO,
    ModelOutcome,
    Money,
    Recovery,
    RecoveryLevel,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepOutcome,
    StepStarted,
    ToolCall,
    ToolOutcome,
    TraceEvent,
    ValidationEvidence,
    WorkflowEdge,
    WorkflowSnapshot,
    WorkflowStep,
    check_canonical_event,
    is_canonical_event,
    money_str,
    ts_str,
)
from fleetledger.schemas.models import _is_canonical_ts, _is_canonical_uuid, _validate_ts

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=24)
ident = st.text(min_size=1, max_size=16)
opt_text = st.none() | text
opt_ident = st.none() | ident
longs = st.integers(min_value=0, max_value=2**53 - 1)
small = st.integers(min_value=0, max_value=10**7)
ints = st.integers(min_value=0, max_value=2**31 - 1)
amounts = st.decimals(
    min_value=Decimal("-999999999999999999.9999999999"),
    max_value=Decimal("999999999999999999.9999999999"),
    places=10,
    allow_nan=False,
    allow_infinity=False,
) | st.decimals(min_value=0, max_value=1000, places=3)
currency = st.sampled_from(["USD", "EUR", "JPY", "GBP", "CHF"])
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
timestamps = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(9998, 12, 30), timezones=zones
)
traceparents = st.builds(
    lambda trace, parent, flags: f"00-{trace:032x}-{parent:016x}-{flags:02x}",
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.integers(0, 255),
)
json_text = st.none() | st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
).map(json.dumps)

money = st.builds(Money, amount=amounts, currency=currency)
cost = st.builds(
    Cost,
    amount=amounts,
    currency=currency,
    source=st.sampled_from(CostSource),
    price_data=opt_ident,
    priced_model=opt_ident,
)
content_ref = st.builds(
    ContentRef,
    sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    size=longs,
    media_type=ident,
)
redactions = st.none() | st.lists(ident, max_size=3).map(tuple)
opt_bool = st.none() | st.booleans()
workflow = st.builds(
    WorkflowSnapshot,
    implicit=opt_bool,
    name=ident,
    revision=text,
    steps=st.lists(
        st.builds(
            WorkflowStep,
            id=ident,
            name=ident,
            kind=ident,
            gate=st.none() | st.sampled_from(GatePolicy),
        ),
        max_size=4,
    ).map(tuple),
    edges=st.lists(st.builds(WorkflowEdge, source=ident, target=ident), max_size=4).map(tuple),
)

PAYLOADS: dict[EventType, st.SearchStrategy[Any]] = {
    EventType.RUN_STARTED: st.builds(
        RunStarted,
        project=opt_text,
        budget=st.none() | money,
        workflow=workflow,
        labels=st.dictionaries(text, text, max_size=3),
    ),
    EventType.STEP_STARTED: st.builds(StepStarted, attempt=ints, implicit=opt_bool),
    EventType.STEP_COMPLETED: st.builds(
        StepCompleted,
        outcome=st.sampled_from(StepOutcome),
        error_type=opt_text,
        error_message=opt_text,
        duration_ms=longs,
    ),
    EventType.MODEL_IO: st.builds(
        ModelIO,
        gen_ai_provider_name=ident,
        gen_ai_request_model=ident,
        gen_ai_response_model=opt_ident,
        gen_ai_usage_input_tokens=small,
        gen_ai_usage_output_tokens=small,
        gen_ai_usage_cache_read_input_tokens=small,
        cost=cost,
        duration_ms=small,
        prompt_hash=ident,
        response_hash=opt_ident,
        cache=st.sampled_from(CacheStatus),
        outcome=st.sampled_from(ModelOutcome),
        error_type=opt_text,
        inputs=json_text,
        outputs=json_text,
        gen_ai_usage_cache_creation_input_tokens=st.none() | small,
        inputs_ref=st.none() | content_ref,
        outputs_ref=st.none() | content_ref,
        redactions=redactions,
        decision_id=opt_ident,
    ),
    EventType.TOOL_CALL: st.builds(
        ToolCall,
        gen_ai_tool_name=ident,
        gen_ai_tool_call_id=opt_ident,
        inputs=json_text,
        outputs=json_text,
        duration_ms=longs,
        outcome=st.sampled_from(ToolOutcome),
        error_type=opt_text,
        inputs_ref=st.none() | content_ref,
        outputs_ref=st.none() | content_ref,
        redactions=redactions,
    ),
    EventType.HUMAN_GATE_REQUESTED: st.builds(
        HumanGateRequested,
        gate_id=ident,
        policy=st.sampled_from(GatePolicy),
        artifact_key=opt_ident,
        artifact_version=st.none() | ints,
        prompt=opt_text,
    ),
    EventType.HUMAN_GATE_RESOLVED: st.builds(
        HumanGateResolved,
        gate_id=ident,
        decision=st.sampled_from(GateDecision),
        reviewer=ident,
        reason=opt_text,
        artifact_key=opt_ident,
        artifact_version=st.none() | ints,
        wait_ms=longs,
    ),
    EventType.ARTIFACT_WRITTEN: st.builds(
        ArtifactWritten,
        key=ident,
        schema_ref=opt_ident,
        version=ints,
        content_hash=ident,
        state=st.sampled_from(ArtifactState),
        validation=st.none()
        | st.builds(ValidationEvidence, validator=ident, passed=st.booleans(), details=opt_text),
    ),
    EventType.RECOVERY: st.builds(
        Recovery,
        level=st.sampled_from(RecoveryLevel),
        failure_kind=ident,
        attempt=ints,
        from_model=opt_ident,
        new_model=opt_ident,
        reason=opt_text,
    ),
    EventType.RUN_COMPLETED: st.builds(RunCompleted, summary=opt_text),
    EventType.RUN_FAILED: st.builds(
        RunFailed, error_type=ident, error_message=text, failed_step=opt_ident
    ),
    EventType.MODEL_DECISION: st.builds(
        ModelDecision,
        decision_id=ident,
        primary_model=ident,
        provider=opt_ident,
        task_class=opt_text,
        capability_class=opt_text,
        fallback_chain=st.lists(ident, max_size=3).map(tuple),
        budget_mode=opt_text,
        routing_reason=opt_text,
    ),
}

#: Payload fields v3 added (an older writer drops them).
V3_FIELDS = {
    "gen_ai_usage_cache_creation_input_tokens",
    "inputs_ref",
    "outputs_ref",
    "redactions",
    "decision_id",
    "implicit",
}


def _v1_representable(event: TraceEvent) -> bool:
    cost = getattr(event.payload, "cost", None)
    return event.type is not EventType.MODEL_DECISION and not (
        cost is not None and cost.source is CostSource.UNPRICED
    )


def _as_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """The canonical object a v1 writer keeps of a v3 event."""
    out = {k: v for k, v in obj.items() if k != "traceparent"} | {"schema_version": 1}
    payload = {k: v for k, v in obj["payload"].items() if k not in V3_FIELDS}
    if "cost" in payload:
        payload["cost"] = {
            k: v for k, v in payload["cost"].items() if k in ("amount", "currency", "source")
        }
    if "workflow" in payload:
        payload["workflow"] = {k: v for k, v in payload["workflow"].items() if k != "implicit"}
    out["payload"] = payload
    return out


@st.composite
def events(draw: st.DrawFn, run_id: str | None = None, seq: int | None = None) -> TraceEvent:
    etype = draw(st.sampled_from(EventType))
    return TraceEvent(
        event_id=draw(st.uuids()),
        run_id=run_id if run_id is not None else draw(ident),
        seq=seq if seq is not None else draw(longs),
        type=etype,
        ts=draw(timestamps),
        agent_id=draw(ident),
        tenant=draw(ident),
        step_id=draw(opt_ident),
        producer_id=draw(ident),
        traceparent=draw(st.none() | traceparents),
        payload=draw(PAYLOADS[etype]),
    )


@st.composite
def batches(draw: st.DrawFn) -> list[TraceEvent]:
    run_id = draw(ident)
    n = draw(st.integers(1, 6))
    first = draw(st.integers(0, 1000))
    return [draw(events(run_id=run_id, seq=first + i)) for i in range(n)]


def _no_floats(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(_no_floats(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_floats(v) for v in obj)
    return not isinstance(obj, float)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


@SETTINGS
@given(event=events())
def test_event_round_trips(codec: Codec, event: TraceEvent) -> None:
    obj = event.to_json_obj()
    assert obj == event.model_dump(mode="json", exclude_none=True)
    assert _no_floats(obj)
    [decoded] = codec.decode(codec.encode_event(event))
    assert decoded == event
    assert decoded.to_json_obj() == obj
    assert json.dumps(decoded.to_json_obj()) == json.dumps(obj)
    assert TraceEvent.parse(json.loads(json.dumps(obj))) == event
    assert TraceEvent.from_record(event.to_record()) == event


def _per_event(event: TraceEvent) -> dict[str, Any]:
    keys = ("event_id", "seq", "type", "ts", "step_id", "payload")
    return {k: getattr(event, k) for k in keys}


@SETTINGS
@given(
    first=events(),
    later=events(),
    ts=timestamps,
    step_id=st.none()
    | st.sampled_from(["", "\ud800", "step-\udc00"])
    | st.text(st.characters(exclude_categories=()), max_size=8),
)
def test_a_successor_is_the_event_the_constructor_builds(
    codec: Codec, first: TraceEvent, later: TraceEvent, ts: datetime, step_id: str | None
) -> None:
    """The SDK builds every event after a run's first with ``successor``: the result is
    the full constructor's, however the timestamp's zone and microseconds fall, and the
    same errors for step ids the contract refuses (empty, lone surrogates)."""
    fields = {**_per_event(later), "ts": ts, "step_id": step_id}
    envelope = ("run_id", "agent_id", "tenant", "producer_id", "schema_version", "traceparent")
    try:
        full = TraceEvent(**{k: getattr(first, k) for k in envelope}, **fields)
    except pydantic.ValidationError as exc:
        with pytest.raises(pydantic.ValidationError) as got:
            first.successor(**fields)
        assert got.value.errors() == exc.errors()
        return
    made = first.successor(**fields)
    assert made == full
    assert repr(made) == repr(full)
    assert made.model_fields_set == full.model_fields_set
    assert made.to_json_obj() == full.to_json_obj()
    assert made.to_record() == full.to_record()
    assert codec.encode_event(made) == codec.encode_event(full)


@SETTINGS
@given(events_=batches())
def test_batch_round_trips(codec: Codec, events_: list[TraceEvent]) -> None:
    data = codec.encode_batch(events_)
    assert codec.decode(data) == events_
    records = codec.decode_records(data)
    assert [TraceEvent.from_record(r) for r in records] == events_
    if all(_v1_representable(e) for e in events_):
        old = codec.decode(codec.encode_batch_version(events_, 1))
        assert [e.to_json_obj() for e in old] == [_as_v1(e.to_json_obj()) for e in events_]
    else:
        with pytest.raises(SchemaError):
            codec.encode_batch_version(events_, 1)


@SETTINGS
@given(amounts)
def test_money_text_survives_avro(amount: Decimal) -> None:
    m = Money(amount=amount, currency="USD")
    assert Decimal(money_str(m.amount)) == amount
    assert money_str(m.amount) == money_str(amount)
    text = money_str(amount)
    assert "E" not in text and "e" not in text
    assert text == "0" or not (("." in text) and text.endswith("0"))
    assert Money(amount=text, currency="USD") == m


@SETTINGS
@given(timestamps)
def test_ts_text(dt: datetime) -> None:
    text = ts_str(dt)
    assert len(text) == 24 and text.endswith("Z") and text[19] == "."
    parsed = datetime.fromisoformat(text)
    assert parsed <= dt < parsed + timedelta(milliseconds=1)
    assert ts_str(parsed) == text


@SETTINGS
@given(body=st.binary(max_size=200), data=st.data())
def test_garbage_bodies_raise_schema_errors(codec: Codec, body: bytes, data: Any) -> None:
    fp = data.draw(st.sampled_from(sorted(codec.fingerprints())))
    with contextlib.suppress(SchemaError):  # anything else escaping is a bug
        codec.decode(MAGIC + bytes.fromhex(fp) + body)


@SETTINGS
@given(events_=batches(), data=st.data())
def test_corrupted_messages_raise_schema_errors(
    codec: Codec, events_: list[TraceEvent], data: Any
) -> None:
    raw = bytearray(codec.encode_batch(events_))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    try:
        decoded = codec.decode(bytes(raw))
    except SchemaError:
        return
    # a flipped byte may still spell a valid batch: then it decodes to valid events
    assert all(isinstance(e, TraceEvent) for e in decoded)


@pytest.mark.parametrize("etype", list(EventType))
def test_every_type_is_generated(etype: EventType) -> None:
    assert etype in PAYLOADS


# ------------------------------------------- canonical objects (what verify checks)


def _model_says_canonical(obj: Any) -> bool:
    """The definition: parsing with the model and writing the canonical object again
    gives the same JSON value (types included: ``True`` is not ``1``)."""
    try:
        again = TraceEvent.parse(obj).to_json_obj()
    except EventValidationError:
        return False
    return json.dumps(again, sort_keys=True) == json.dumps(obj, sort_keys=True)


ts_like = st.one_of(
    timestamps.map(ts_str),
    timestamps.map(lambda d: d.isoformat()),
    st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z", fullmatch=True
    ),
    st.text(max_size=30),
)
uuid_like = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: u.hex),
    st.from_regex(r"[0-9a-fA-F-]{36}", fullmatch=True),
)


@SETTINGS
@given(ts_like)
def test_the_fast_timestamp_check_is_the_round_trip(text_: str) -> None:
    try:
        round_trip = ts_str(_validate_ts(text_)) == text_
    except Exception:
        round_trip = False
    assert _is_canonical_ts(text_) == round_trip


@SETTINGS
@given(uuid_like)
def test_the_fast_uuid_check_is_the_round_trip(text_: str) -> None:
    from uuid import UUID

    try:
        round_trip = str(UUID(text_)) == text_
    except ValueError:
        round_trip = False
    assert _is_canonical_uuid(text_) == round_trip


_ODD_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [None, 0, -1, 1.5, True, "", "x", "X", [], {}, 2**60, "0.50", "1E+2", "2026-11-01T00:00:00Z"]
)


@SETTINGS
@given(event=events(), data=st.data())
def test_the_canonical_object_check_agrees_with_the_model(event: TraceEvent, data: Any) -> None:
    obj = event.to_json_obj()
    assert is_canonical_event(obj)
    check_canonical_event(obj)
    # one member of the envelope or the payload replaced, added or removed
    target = obj if data.draw(st.booleans()) else obj["payload"]
    name = data.draw(st.sampled_from([*target, "extra"]))
    if data.draw(st.booleans()) and name in target:
        del target[name]
    else:
        target[name] = data.draw(_ODD_VALUES)
    agreed = _model_says_canonical(obj)
    assert is_canonical_event(obj) == agreed
    if not agreed:
        with pytest.raises(EventValidationError) as info:
            check_canonical_event(obj)
        assert info.value.field is not None
