"""Round trips and rules of the event contract (models + Avro codec)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from uuid import UUID

import fastavro
import pydantic
import pytest

from fleetledger.kernel.errors import (
    DecodeError,
    EventValidationError,
    SchemaError,
    UnknownFingerprintError,
)
from fleetledger.schemas import (
    AVRO_DIR,
    MAGIC,
    PAYLOAD_TYPES,
    SCHEMA_VERSION,
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
    money_str,
    ts_str,
)
from fleetledger.schemas import models as models_module

T0 = datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

#: Released fingerprints (hex, wire byte order). Released versions are never edited.
PINNED_FINGERPRINTS = {
    "8900b9a80e2b15f9": 1,  # v1 TraceEvent
    "d216245beec5f6e6": 1,  # v1 EventBatch
    "13de9a8200937ff2": 2,  # v2 TraceEvent
    "0767997d9f9388c7": 2,  # v2 EventBatch
    "05b5b130b74d2801": 3,  # v3 TraceEvent
    "f467d35428de74bf": 3,  # v3 EventBatch
}

WORKFLOW = WorkflowSnapshot(
    name="contract-review",
    revision="7",
    steps=(
        WorkflowStep(id="extract", name="Extract clauses", kind="llm"),
        WorkflowStep(id="check", name="Check policy", kind="tool"),
        WorkflowStep(id="approve", name="Legal approval", kind="human", gate="PAUSE_BEFORE"),
    ),
    edges=(
        WorkflowEdge(source="extract", target="check"),
        WorkflowEdge(source="check", target="approve"),
    ),
)

PAYLOADS: dict[EventType, Any] = {
    EventType.RUN_STARTED: RunStarted(
        project="legal-ops",
        budget=Money(amount=Decimal("25.00"), currency="USD"),
        workflow=WORKFLOW,
        labels={"fleet": "eu-west", "ticket": "LEG-1432"},
    ),
    EventType.STEP_STARTED: StepStarted(attempt=1),
    EventType.STEP_COMPLETED: StepCompleted(
        outcome=StepOutcome.ERROR,
        error_type="TimeoutError",
        error_message="tool did not answer within 30s",
        duration_ms=30_012,
    ),
    EventType.MODEL_IO: ModelIO(
        gen_ai_provider_name="anthropic",
        gen_ai_request_model="claude-sonnet-4",
        gen_ai_response_model="claude-sonnet-4-20250514",
        gen_ai_usage_input_tokens=12_403,
        gen_ai_usage_output_tokens=812,
        gen_ai_usage_cache_read_input_tokens=10_240,
        cost=Cost(amount=Decimal("0.0495780000"), currency="USD", source=CostSource.LOCAL),
        duration_ms=4_210,
        prompt_hash="sha256:9f2c0e4b",
        response_hash="sha256:77aa01d3",
        cache=CacheStatus.MISS,
        outcome=ModelOutcome.FALLBACK,
        error_type=None,
        inputs='{"messages": [{"role": "user", "content": "Extract the clauses"}]}',
        outputs='{"clauses": 14}',
    ),
    EventType.TOOL_CALL: ToolCall(
        gen_ai_tool_name="policy_lookup",
        gen_ai_tool_call_id="toolu_01A09q90qw90lq917835lq9",
        inputs='{"clause": "indemnity"}',
        outputs=None,
        duration_ms=87,
        outcome=ToolOutcome.ERROR,
        error_type="KeyError",
    ),
    EventType.HUMAN_GATE_REQUESTED: HumanGateRequested(
        gate_id="gate-approve-1",
        policy=GatePolicy.PAUSE_BEFORE,
        artifact_key="review.md",
        artifact_version=3,
        prompt="Approve the clause summary?",
    ),
    EventType.HUMAN_GATE_RESOLVED: HumanGateResolved(
        gate_id="gate-approve-1",
        decision=GateDecision.EDIT,
        reviewer="maria@example.com",
        reason="tightened clause 4",
        artifact_key="review.md",
        artifact_version=4,
        wait_ms=3_600_000,
    ),
    EventType.ARTIFACT_WRITTEN: ArtifactWritten(
        key="review.md",
        schema_ref="schemas/review.json",
        version=4,
        content_hash="sha256:0d1e",
        state=ArtifactState.VERIFIED,
        validation=ValidationEvidence(validator="jsonschema", passed=True, details=None),
    ),
    EventType.RECOVERY: Recovery(
        level=RecoveryLevel.L2_ESCALATE,
        failure_kind="rate_limit",
        attempt=2,
        from_model="claude-haiku-4",
        new_model="claude-sonnet-4",
        reason="429 twice",
    ),
    EventType.RUN_COMPLETED: RunCompleted(summary="14 clauses reviewed"),
    EventType.RUN_FAILED: RunFailed(
        error_type="BudgetExceeded", error_message="spent 25.01 USD of 25 USD", failed_step="check"
    ),
    EventType.MODEL_DECISION: ModelDecision(
        decision_id="md-001",
        primary_model="claude-sonnet-4-5",
        provider="anthropic",
        task_class="AuthoritySpec",
        capability_class="StrongGeneral",
        fallback_chain=("gpt-4.1", "claude-haiku-4-5"),
        budget_mode="normal",
        routing_reason="policy_match",
    ),
}

#: Event types and payload fields added by each version (what an older writer cannot carry).
V3_TYPES = {EventType.MODEL_DECISION}
V3_PAYLOADS: dict[EventType, Any] = {
    EventType.MODEL_IO: PAYLOADS[EventType.MODEL_IO].model_copy(
        update={
            "cost": Cost(
                amount=Decimal("0.049578"),
                currency="USD",
                source=CostSource.LOCAL,
                price_data="genai-prices@0.2.3",
                priced_model="claude-sonnet-4",
            ),
            "gen_ai_usage_cache_creation_input_tokens": 512,
            "inputs": None,
            "inputs_ref": ContentRef(
                sha256="ab" * 32, size=5_000_000, media_type="application/json"
            ),
            "redactions": ("outputs/api_key",),
            "decision_id": "md-001",
        }
    ),
    EventType.TOOL_CALL: PAYLOADS[EventType.TOOL_CALL].model_copy(
        update={
            "outputs_ref": ContentRef(sha256="cd" * 32, size=42, media_type="text/plain"),
            "redactions": ("outputs",),
        }
    ),
    EventType.STEP_STARTED: StepStarted(attempt=1, implicit=True),
    EventType.RUN_STARTED: RunStarted(
        workflow=WorkflowSnapshot(
            name="reviewer",
            revision="",
            steps=(WorkflowStep(id="implicit", name="implicit", kind="implicit"),),
            implicit=True,
        )
    ),
}


def make_event(etype: EventType, seq: int = 0, **overrides: Any) -> TraceEvent:
    fields: dict[str, Any] = {
        "event_id": UUID(int=0x1234_5678_9ABC_4DEF_8000_0000_0000_0000 + seq),
        "run_id": "run-2026-03-14-0001",
        "seq": seq,
        "type": etype,
        "ts": T0 + timedelta(milliseconds=seq * 250),
        "agent_id": "reviewer",
        "tenant": "acme",
        "step_id": None if etype in (EventType.RUN_STARTED, EventType.RUN_COMPLETED) else "check",
        "producer_id": "sdk-py/host-7",
        "payload": PAYLOADS[etype],
    }
    fields.update(overrides)
    return TraceEvent(**fields)


ALL_EVENTS = [make_event(t, seq=i) for i, t in enumerate(EventType)]
IDS = [e.type.value for e in ALL_EVENTS]
#: The events every released version can carry.
V2_EVENTS = [e for e in ALL_EVENTS if e.type not in V3_TYPES]
V2_IDS = [e.type.value for e in V2_EVENTS]
V3_EVENTS = [make_event(t, seq=i, payload=p) for i, (t, p) in enumerate(V3_PAYLOADS.items())]
V3_IDS = [f"{e.type.value}-v3" for e in V3_EVENTS]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def _has_float(obj: Any) -> bool:
    if isinstance(obj, float):
        return True
    if isinstance(obj, dict):
        return any(_has_float(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_float(v) for v in obj)
    return False


# ----------------------------------------------------------------------- round trips


def test_every_event_type_has_a_sample() -> None:
    assert set(PAYLOADS) == set(EventType)
    assert [type(p) for p in PAYLOADS.values()] == [PAYLOAD_TYPES[t] for t in EventType]


@pytest.mark.parametrize("event", ALL_EVENTS + V3_EVENTS, ids=IDS + V3_IDS)
def test_event_round_trip(codec: Codec, event: TraceEvent) -> None:
    data = codec.encode_event(event)
    assert data[:2] == MAGIC
    assert codec.writer_of(data).kind == "event"
    [decoded] = codec.decode(data)
    assert decoded == event
    assert decoded.to_json_obj() == event.to_json_obj()
    assert json.dumps(decoded.to_json_obj(), sort_keys=True) == json.dumps(
        event.to_json_obj(), sort_keys=True
    )


@pytest.mark.parametrize("event", ALL_EVENTS, ids=IDS)
def test_traceparent_round_trip(codec: Codec, event: TraceEvent) -> None:
    traced = event.model_copy(update={"traceparent": TRACEPARENT})
    [decoded] = codec.decode(codec.encode_event(traced))
    assert decoded == traced
    assert decoded.to_json_obj()["traceparent"] == TRACEPARENT


def test_batch_round_trip(codec: Codec) -> None:
    data = codec.encode_batch(ALL_EVENTS)
    assert codec.writer_of(data).kind == "batch"
    assert codec.writer_of(data).version == codec.current_version == SCHEMA_VERSION
    decoded = codec.decode(data)
    assert decoded == ALL_EVENTS
    assert [e.to_json_obj() for e in decoded] == [e.to_json_obj() for e in ALL_EVENTS]
    records = codec.decode_records(data)
    assert [r["seq"] for r in records] == list(range(len(ALL_EVENTS)))
    assert [TraceEvent.from_record(r) for r in records] == ALL_EVENTS


@pytest.mark.parametrize("event", ALL_EVENTS + V3_EVENTS, ids=IDS + V3_IDS)
def test_to_json_obj_matches_model_dump(event: TraceEvent) -> None:
    for ev in (event, event.model_copy(update={"traceparent": TRACEPARENT})):
        obj = ev.to_json_obj()
        assert obj == ev.model_dump(mode="json", exclude_none=True)
        # same key order as well, and JSON-native types only
        assert json.dumps(obj) == json.dumps(ev.model_dump(mode="json", exclude_none=True))
        assert not _has_float(obj)
        assert obj["type"] == ev.type.value and type(obj["type"]) is str
        assert "payload" in obj and "type" not in obj["payload"]


@pytest.mark.parametrize("event", ALL_EVENTS + V3_EVENTS, ids=IDS + V3_IDS)
def test_json_and_record_round_trips(event: TraceEvent) -> None:
    assert TraceEvent.parse(event.to_json_obj()) == event
    assert TraceEvent.parse(json.loads(json.dumps(event.to_json_obj()))) == event
    assert TraceEvent.from_record(event.to_record()) == event
    rec = event.to_record()
    assert rec["payload"][0] == f"fleetledger.{type(event.payload).__name__}"


def test_canonical_json_details() -> None:
    ev = make_event(EventType.MODEL_IO, seq=3)
    obj = ev.to_json_obj()
    assert obj["event_id"] == "12345678-9abc-4def-8000-000000000003"
    assert obj["ts"] == "2026-03-14T09:26:54.339Z"
    assert obj["payload"]["cost"] == {"amount": "0.049578", "currency": "USD", "source": "local"}
    assert "error_type" not in obj["payload"]  # nulls are omitted
    assert "traceparent" not in obj
    assert obj["schema_version"] == 3
    started = make_event(EventType.RUN_STARTED).to_json_obj()
    assert started["payload"]["budget"] == {"amount": "25", "currency": "USD"}
    assert started["payload"]["workflow"]["steps"][0] == {
        "id": "extract",
        "name": "Extract clauses",
        "kind": "llm",
    }
    assert started["payload"]["workflow"]["steps"][2]["gate"] == "PAUSE_BEFORE"


def test_decoded_amounts_keep_their_canonical_form(codec: Codec) -> None:
    ev = make_event(EventType.MODEL_IO)
    [decoded] = codec.decode(codec.encode_event(ev))
    assert isinstance(decoded.payload, ModelIO) and isinstance(ev.payload, ModelIO)
    assert str(decoded.payload.cost.amount) == str(ev.payload.cost.amount) == "0.049578"
    raw = codec.decode_records(codec.encode_event(ev))[0]
    assert raw["payload"]["cost"]["amount"] == Decimal("0.0495780000")


# -------------------------------------------------------------- schema <-> model agreement


def _load(version: int, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((AVRO_DIR / f"v{version}" / f"{name}.avsc").read_text())
    return schema


def _named_records(schema: Any, out: dict[str, dict[str, Any]]) -> None:
    if isinstance(schema, list):
        for s in schema:
            _named_records(s, out)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            out[schema["name"]] = schema
            for f in schema["fields"]:
                _named_records(f["type"], out)
        elif schema.get("type") == "array":
            _named_records(schema["items"], out)
        elif schema.get("type") == "map":
            _named_records(schema["values"], out)


def _named_enums(schema: Any, out: dict[str, list[str]]) -> None:
    if isinstance(schema, list):
        for s in schema:
            _named_enums(s, out)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "enum":
            out[schema["name"]] = schema["symbols"]
        elif kind == "record":
            for f in schema["fields"]:
                _named_enums(f["type"], out)
        elif kind == "array":
            _named_enums(schema["items"], out)


def _strip(ann: Any) -> tuple[Any, bool]:
    """(base annotation, nullable) with Annotated/Optional layers removed."""
    nullable = False
    while True:
        origin = get_origin(ann)
        if origin is Annotated:
            ann = get_args(ann)[0]
        elif origin in (Union, UnionType) and NoneType in get_args(ann):
            nullable = True
            rest = [a for a in get_args(ann) if a is not NoneType]
            ann = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
        else:
            return ann, nullable


def _assert_type_agrees(avro: Any, ann: Any, where: str) -> None:
    if isinstance(avro, str):
        expected = {"string": str, "long": int, "int": int, "boolean": bool}.get(avro)
        if expected is not None:
            assert ann is expected, where
        else:  # a reference to a named type
            name = avro.split(".")[-1]
            assert getattr(ann, "__name__", None) == name, where
        return
    if isinstance(avro, list):  # the payload union
        assert get_origin(ann) in (Union, UnionType), where
        branches = [b["name"] if isinstance(b, dict) else b for b in avro]
        known = [_strip(c)[0].__name__ for c in get_args(ann)]  # members may be tagged
        assert branches == known[: len(branches)], where
        assert branches == [PAYLOAD_TYPES[t].__name__ for t in EventType][: len(branches)], where
        return
    kind = avro["type"]
    logical = avro.get("logicalType")
    if logical == "decimal":
        assert (kind, avro["precision"], avro["scale"]) == ("bytes", 28, 10), where
        assert ann is Decimal, where
    elif logical == "uuid":
        assert ann is UUID, where
    elif logical == "timestamp-millis":
        assert kind == "long" and ann is datetime, where
    elif kind == "enum":
        assert issubclass(ann, StrEnum) and ann.__name__ == avro["name"], where
        members = [m.value for m in ann]
        assert members[: len(avro["symbols"])] == avro["symbols"], where
    elif kind == "record":
        assert ann.__name__ == avro["name"], where
    elif kind == "array":
        assert get_origin(ann) is tuple, where
        item = _strip(get_args(ann)[0])[0]
        _assert_type_agrees(avro["items"], item, where + "[]")
    elif kind == "map":
        assert get_origin(ann) is dict, where
        key, value = (_strip(a)[0] for a in get_args(ann))
        assert key is str, where
        _assert_type_agrees(avro["values"], value, where + "{}")
    else:  # pragma: no cover
        raise AssertionError(f"{where}: unexpected Avro type {avro!r}")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_schema_and_models_agree(version: int) -> None:
    schema = _load(version, "TraceEvent")
    assert schema["namespace"] == "fleetledger"
    records: dict[str, dict[str, Any]] = {}
    _named_records(schema, records)
    expected_models = {
        "TraceEvent", "Money", "Cost", "WorkflowStep", "WorkflowEdge", "WorkflowSnapshot",
        "ValidationEvidence", *(c.__name__ for c in PAYLOAD_TYPES.values()),
    }  # fmt: skip
    if version < 3:
        expected_models -= {"ModelDecision"}
    else:
        expected_models |= {"ContentRef"}
    assert set(records) == expected_models
    for name, record in records.items():
        model = getattr(models_module, name)
        assert issubclass(model, pydantic.BaseModel)
        assert model.model_config.get("frozen") is True
        assert model.model_config.get("extra") == "forbid"
        avro_names = [f["name"] for f in record["fields"]]
        model_names = list(model.model_fields)
        if version == 1 and name == "TraceEvent":
            model_names.remove("traceparent")  # added in v2
        if version < 3:
            model_names = [n for n in model_names if n not in V3_FIELDS.get(name, ())]
        assert avro_names == model_names, name
        for f in record["fields"]:
            where = f"{name}.{f['name']}"
            info = model.model_fields[f["name"]]
            ann, nullable = _strip(info.annotation)
            avro_type = f["type"]
            avro_nullable = isinstance(avro_type, list) and avro_type[0] == "null"
            assert avro_nullable == nullable, where
            if avro_nullable:
                assert len(avro_type) == 2 and f["default"] is None, where
                assert info.default is None, where
                avro_type = avro_type[1]
            else:
                assert "default" not in f, where
            _assert_type_agrees(avro_type, ann, where)
    enums: dict[str, list[str]] = {}
    _named_enums(schema, enums)
    assert len(enums) == 10
    for name, symbols in enums.items():
        members = [m.value for m in getattr(models_module, name)]
        if version < 3:
            members = [m for m in members if m not in V3_SYMBOLS.get(name, ())]
        assert members == symbols


#: What v3 adds, per record and per enum (the compatibility test below pins it).
V3_FIELDS = {
    "WorkflowSnapshot": ("implicit",),
    "StepStarted": ("implicit",),
    "Cost": ("price_data", "priced_model"),
    "ModelIO": (
        "gen_ai_usage_cache_creation_input_tokens",
        "inputs_ref",
        "outputs_ref",
        "redactions",
        "decision_id",
    ),
    "ToolCall": ("inputs_ref", "outputs_ref", "redactions"),
}
V3_SYMBOLS = {"EventType": ("model_decision",), "CostSource": ("unpriced",)}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_batch_schema_inlines_the_event_schema(version: int) -> None:
    event = _load(version, "TraceEvent")
    batch = _load(version, "EventBatch")
    assert batch["name"] == "EventBatch" and batch["namespace"] == "fleetledger"
    assert [f["name"] for f in batch["fields"]] == ["run_id", "events"]
    assert batch["fields"][0]["type"] == "string"
    items = batch["fields"][1]["type"]["items"]
    assert {k: v for k, v in event.items() if k != "namespace"} == items


def test_v2_is_v1_plus_optional_traceparent() -> None:
    v1 = _load(1, "TraceEvent")
    v2 = _load(2, "TraceEvent")
    names2 = [f["name"] for f in v2["fields"]]
    i = names2.index("traceparent")
    assert names2[i - 1] == "schema_version" and names2[i + 1] == "payload"
    field = v2["fields"][i]
    assert field["type"] == ["null", "string"] and field["default"] is None
    v2_minus = {**v2, "fields": v2["fields"][:i] + v2["fields"][i + 1 :]}
    assert v2_minus == v1


def _fields_without(record: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {**record, "fields": [f for f in record["fields"] if f["name"] not in names]}


def _shallow(schema: Any) -> Any:
    """A schema with every named record and enum replaced by its name (compared apart)."""
    if isinstance(schema, list):
        return [_shallow(s) for s in schema]
    if isinstance(schema, dict):
        if schema.get("type") in ("record", "enum"):
            return schema["name"]
        return {k: _shallow(v) for k, v in schema.items()}
    return schema


def test_v3_is_v2_plus_optional_fields_and_appended_symbols() -> None:
    """v3 only appends: optional fields at the end of records, enum symbols, one union branch."""
    v2 = _load(2, "TraceEvent")
    v3 = _load(3, "TraceEvent")
    records2: dict[str, dict[str, Any]] = {}
    records3: dict[str, dict[str, Any]] = {}
    _named_records(v2, records2)
    _named_records(v3, records3)
    assert set(records3) - set(records2) == {"ModelDecision", "ContentRef"}
    for name, rec2 in records2.items():
        rec3 = records3[name]
        added = V3_FIELDS.get(name, ())
        names3 = [f["name"] for f in rec3["fields"]]
        assert names3[len(names3) - len(added) :] == list(added), name  # appended at the end
        for f in rec3["fields"]:
            if f["name"] in added:
                assert f["type"][0] == "null" and f["default"] is None, f"{name}.{f['name']}"
        # apart from the additions (and the records nested in changed fields) nothing changed
        strip3 = _fields_without(rec3, added)
        assert [f["name"] for f in strip3["fields"]] == [f["name"] for f in rec2["fields"]], name
        for f2, f3 in zip(rec2["fields"], strip3["fields"], strict=True):
            shallow2, shallow3 = _shallow(f2), _shallow(f3)
            if name == "TraceEvent" and f2["name"] == "payload":
                shallow2["type"] = [*shallow2["type"], "ModelDecision"]  # the appended branch
            assert shallow3 == shallow2, (name, f2["name"])
    enums2: dict[str, list[str]] = {}
    enums3: dict[str, list[str]] = {}
    _named_enums(v2, enums2)
    _named_enums(v3, enums3)
    assert set(enums2) == set(enums3)
    for name, symbols in enums2.items():
        assert enums3[name] == symbols + list(V3_SYMBOLS.get(name, ())), name
    union2 = next(f["type"] for f in v2["fields"] if f["name"] == "payload")
    union3 = next(f["type"] for f in v3["fields"] if f["name"] == "payload")
    names2 = [b["name"] for b in union2]
    assert [b["name"] for b in union3] == [*names2, "ModelDecision"]


def test_pinned_fingerprints(codec: Codec) -> None:
    assert codec.fingerprints() == PINNED_FINGERPRINTS
    assert codec.versions == [1, 2, 3]
    # fingerprint = CRC-64-AVRO of the Parsing Canonical Form, little-endian on the wire
    pcf = fastavro.schema.to_parsing_canonical_form(_load(2, "EventBatch"))
    assert _crc64_avro(pcf.encode()).to_bytes(8, "little").hex() == "0767997d9f9388c7"


def _crc64_avro(data: bytes) -> int:
    """Reference CRC-64-AVRO (Rabin) from the Avro specification."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_schema_files_parse_standalone() -> None:
    for path in sorted(AVRO_DIR.glob("v*/*.avsc")):
        fastavro.parse_schema(json.loads(path.read_text()), named_schemas={})


# -------------------------------------------------------------------- version resolution


@pytest.mark.parametrize("event", V2_EVENTS, ids=V2_IDS)
@pytest.mark.parametrize("version", [1, 2])
def test_older_writers_read_by_the_current_reader(
    codec: Codec, event: TraceEvent, version: int
) -> None:
    data = codec.encode_batch_version([event], version)
    assert codec.writer_of(data).version == version
    [decoded] = codec.decode(data)
    assert decoded.traceparent is None
    assert decoded.schema_version == version  # the writer's version
    assert decoded == event.model_copy(update={"schema_version": version})
    [single] = codec.decode(codec.encode_event(event, version=version))
    assert single == decoded
    # an event that uses nothing new has the same canonical object in every version
    assert {**decoded.to_json_obj(), "schema_version": 3} == event.to_json_obj()


@pytest.mark.parametrize("event", V2_EVENTS, ids=V2_IDS)
def test_v3_written_read_by_v2_reader(codec: Codec, event: TraceEvent) -> None:
    data = codec.encode_batch([event])
    assert codec.writer_of(data).version == 3
    [decoded] = codec.decode(data, reader_version=2)
    assert decoded == event


@pytest.mark.parametrize("event", V3_EVENTS, ids=V3_IDS)
def test_v2_reader_ignores_v3_fields(codec: Codec, event: TraceEvent) -> None:
    [decoded] = codec.decode(codec.encode_batch([event]), reader_version=2)
    assert decoded.schema_version == 3
    payload = event.payload.model_dump()
    for name in V3_FIELDS.get(type(event.payload).__name__, ()):
        payload[name] = None
    if "cost" in payload:
        payload["cost"].update(price_data=None, priced_model=None)
    if "workflow" in payload:
        payload["workflow"]["implicit"] = None
    assert decoded.payload.model_dump() == payload


def test_v2_reader_refuses_a_v3_only_type(codec: Codec) -> None:
    decision = make_event(EventType.MODEL_DECISION)
    with pytest.raises(DecodeError, match=r"fleetledger\.EventBatch v3"):
        codec.decode(codec.encode_batch([decision]), reader_version=2)
    unpriced = make_event(
        EventType.MODEL_IO,
        payload=PAYLOADS[EventType.MODEL_IO].model_copy(
            update={"cost": Cost(amount=0, currency="USD", source=CostSource.UNPRICED)}
        ),
    )
    with pytest.raises(DecodeError):
        codec.decode(codec.encode_batch([unpriced]), reader_version=2)
    with pytest.raises(SchemaError, match="v2"):  # an old writer cannot carry it either
        codec.encode_batch_version([decision], 2)


def test_v1_writer_drops_traceparent(codec: Codec) -> None:
    traced = make_event(EventType.STEP_STARTED, traceparent=TRACEPARENT)
    [decoded] = codec.decode(codec.encode_batch_version([traced], 1))
    assert decoded.traceparent is None


def test_newer_writers_read_by_the_v1_reader(codec: Codec) -> None:
    traced = make_event(EventType.TOOL_CALL, seq=4, traceparent=TRACEPARENT)
    data = codec.encode_batch([traced])
    [rec] = codec.decode_records(data, reader_version=1)
    assert "traceparent" not in rec
    assert rec["schema_version"] == 3 and rec["seq"] == 4
    [rec2] = codec.decode_records(codec.encode_batch_version([traced], 2), reader_version=1)
    assert rec2["schema_version"] == 2 and "traceparent" not in rec2
    [decoded] = codec.decode(data, reader_version=1)
    assert decoded == traced.model_copy(update={"traceparent": None})
    [rec2] = codec.decode_records(data)
    assert rec2["traceparent"] == TRACEPARENT


def test_unknown_reader_version(codec: Codec) -> None:
    with pytest.raises(SchemaError, match="expected one of"):
        codec.decode(codec.encode_batch(ALL_EVENTS[:1]), reader_version=9)
    with pytest.raises(SchemaError):
        codec.encode_batch_version(ALL_EVENTS[:1], 0)


def test_codec_requires_versions(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="no schema versions"):
        Codec(tmp_path)


def test_codec_loads_a_copied_schema_dir(tmp_path: Path) -> None:
    for path in AVRO_DIR.glob("v*/*.avsc"):
        target = tmp_path / path.parent.name / path.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(path.read_bytes())
    c = Codec(tmp_path)
    assert c.fingerprints() == PINNED_FINGERPRINTS
    assert c.decode(Codec().encode_batch(ALL_EVENTS)) == ALL_EVENTS


# ----------------------------------------------------------------------------- errors


def test_not_bytes(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="found str, expected bytes"):
        codec.decode("c301")  # type: ignore[arg-type]


def test_accepts_bytearray_and_memoryview(codec: Codec) -> None:
    data = codec.encode_batch(ALL_EVENTS)
    assert codec.decode(bytearray(data)) == ALL_EVENTS
    assert codec.decode(memoryview(data)) == ALL_EVENTS


@pytest.mark.parametrize("size", [0, 1, 2, 9])
def test_too_short(codec: Codec, size: int) -> None:
    data = codec.encode_event(ALL_EVENTS[0])[:size]
    with pytest.raises(DecodeError, match=f"found {size} bytes, expected at least 10"):
        codec.decode(data)


def test_bad_magic(codec: Codec) -> None:
    data = b"\x4f\x62" + codec.encode_event(ALL_EVENTS[0])[2:]
    with pytest.raises(DecodeError, match="found magic bytes 4f62, expected c301"):
        codec.decode(data)
    with pytest.raises(DecodeError, match="magic"):
        codec.decode_records(b"Obj\x01" + bytes(20))  # an Avro container file, not ours


def test_unknown_fingerprint(codec: Codec) -> None:
    data = MAGIC + bytes.fromhex("0102030405060708") + b"\x00"
    with pytest.raises(UnknownFingerprintError) as info:
        codec.decode(data)
    msg = str(info.value)
    assert "0102030405060708" in msg
    assert "6 known fingerprints" in msg
    assert isinstance(info.value, SchemaError)


def test_truncated_at_every_cut_point(codec: Codec) -> None:
    data = codec.encode_batch(ALL_EVENTS)
    for cut in range(10, len(data)):
        with pytest.raises(DecodeError, match=r"fleetledger\.EventBatch v3") as info:
            codec.decode(data[:cut])
        assert "truncated or malformed" in str(info.value)
    single = codec.encode_event(ALL_EVENTS[0])
    for cut in (10, 11, len(single) // 2, len(single) - 1):
        with pytest.raises(DecodeError, match=r"fleetledger\.TraceEvent v3"):
            codec.decode_records(single[:cut])


def test_trailing_bytes(codec: Codec) -> None:
    data = codec.encode_event(ALL_EVENTS[0]) + b"\x00\x00"
    with pytest.raises(DecodeError, match=r"found 2 bytes after the fleetledger\.TraceEvent v3"):
        codec.decode(data)


def _raw_message(codec: Codec, record: dict[str, Any], kind: str = "event") -> bytes:
    entry = codec.schema(kind)  # type: ignore[arg-type]
    buf = io.BytesIO()
    buf.write(MAGIC + entry.fingerprint)
    fastavro.schemaless_writer(buf, entry.schema, record)
    return buf.getvalue()


def test_invalid_field_names_path_value_and_expectation(codec: Codec) -> None:
    rec = make_event(EventType.MODEL_IO).to_record()
    rec["seq"] = -1
    with pytest.raises(EventValidationError) as info:
        codec.decode(_raw_message(codec, rec))
    msg = str(info.value)
    assert "seq: found -1 (int), expected an integer >= 0" in msg
    assert "fleetledger.TraceEvent v3" in msg

    rec = make_event(EventType.MODEL_IO).to_record()
    rec["payload"][1]["cost"]["currency"] = "usd"
    rec["payload"][1]["gen_ai_usage_output_tokens"] = -5
    batch = {"run_id": rec["run_id"], "events": [ALL_EVENTS[0].to_record(), rec]}
    with pytest.raises(EventValidationError) as info:
        codec.decode(_raw_message(codec, batch, "batch"))
    msg = str(info.value)
    assert "events[1].payload.cost.currency: found 'usd' (str)" in msg
    assert "ISO 4217" in msg
    assert "events[1].payload.gen_ai_usage_output_tokens: found -5 (int)" in msg


def test_decode_records_does_not_validate_fields(codec: Codec) -> None:
    rec = make_event(EventType.RUN_COMPLETED).to_record()
    rec["agent_id"] = ""
    [raw] = codec.decode_records(_raw_message(codec, rec))
    assert raw["agent_id"] == ""
    with pytest.raises(EventValidationError, match=r"agent_id: found '' .*non-empty string"):
        codec.decode(_raw_message(codec, rec))


def test_batch_run_id_mismatch_on_decode(codec: Codec) -> None:
    batch = {"run_id": "other-run", "events": [ALL_EVENTS[0].to_record()]}
    data = _raw_message(codec, batch, "batch")
    with pytest.raises(EventValidationError, match=r"events\[0\]\.run_id: found 'run-2026"):
        codec.decode(data)
    with pytest.raises(EventValidationError, match="the batch run_id"):
        codec.decode_records(data)


def test_encode_batch_rules(codec: Codec) -> None:
    with pytest.raises(SchemaError, match="empty batch"):
        codec.encode_batch([])
    other = make_event(EventType.RUN_COMPLETED, seq=11, run_id="run-b")
    with pytest.raises(EventValidationError, match=r"events\[1\]\.run_id: found 'run-b'"):
        codec.encode_batch([ALL_EVENTS[0], other])
    with pytest.raises(SchemaError, match=r"events\[0\]: found dict, expected a TraceEvent"):
        codec.encode_batch([ALL_EVENTS[0].to_json_obj()])  # type: ignore[list-item]


def test_payload_must_match_type() -> None:
    data = ALL_EVENTS[0].to_json_obj()
    data["type"] = "run_completed"
    with pytest.raises(EventValidationError, match=r"payload\.project: found .*no such field"):
        TraceEvent.parse(data)  # the dict is validated as a RunCompleted payload
    with pytest.raises(pydantic.ValidationError):
        make_event(EventType.RUN_COMPLETED, payload=StepStarted(attempt=1))
    with pytest.raises(EventValidationError) as info:
        TraceEvent.parse({**data, "payload": StepStarted(attempt=1)})
    assert str(info.value) == (
        "invalid TraceEvent: payload: found a StepStarted payload, "
        "expected a RunCompleted payload for type 'run_completed'"
    )


def test_a_payload_that_is_no_record_is_one_error() -> None:
    data = ALL_EVENTS[0].to_json_obj()
    for bad in ("text", 5, ["a"]):
        with pytest.raises(EventValidationError) as info:
            TraceEvent.parse({**data, "payload": bad})
        assert str(info.value) == (
            f"invalid TraceEvent: payload: found {bad!r} ({type(bad).__name__}), "
            "expected a payload record of one of the event types"
        )
        assert info.value.field == "payload"


def test_parse_reports_every_problem() -> None:
    data = make_event(EventType.STEP_STARTED).to_json_obj()
    data.update(run_id="", seq="3", tenant=None, bogus=1)
    del data["agent_id"]
    with pytest.raises(EventValidationError) as info:
        TraceEvent.parse(data)
    msg = str(info.value)
    assert msg.startswith("invalid TraceEvent: ")
    assert "run_id: found '' (str), expected a non-empty string" in msg
    assert "seq: found '3' (str), expected a valid integer" in msg
    assert "agent_id: found nothing, expected a value (the field is required)" in msg
    assert "tenant: found None (NoneType), expected a valid string" in msg
    assert "bogus: found 1 (int), expected no such field" in msg
    with pytest.raises(EventValidationError, match="expected a mapping"):
        TraceEvent.parse(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_unknown_type() -> None:
    data = make_event(EventType.STEP_STARTED).to_json_obj()
    data["type"] = "step_exploded"
    with pytest.raises(EventValidationError, match=r"type: found 'step_exploded'.*'run_started'"):
        TraceEvent.parse(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 2**63),
        ("seq", 2**53),
        ("schema_version", 0),
        ("producer_id", ""),
        ("step_id", ""),
        ("event_id", "not-a-uuid"),
        ("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("traceparent", TRACEPARENT.upper()),
    ],
)
def test_envelope_field_rules(field: str, value: Any) -> None:
    data = make_event(EventType.STEP_STARTED).to_json_obj()
    data[field] = value
    with pytest.raises(EventValidationError, match=f"{field}: found"):
        TraceEvent.parse(data)


@pytest.mark.parametrize(
    ("etype", "field", "value"),
    [
        (EventType.MODEL_IO, "gen_ai_usage_input_tokens", -1),
        (EventType.MODEL_IO, "gen_ai_usage_cache_read_input_tokens", -1),
        (EventType.MODEL_IO, "duration_ms", -1),
        (EventType.MODEL_IO, "gen_ai_provider_name", ""),
        (EventType.MODEL_IO, "cache", "warm"),
        (EventType.STEP_COMPLETED, "duration_ms", -10),
        (EventType.TOOL_CALL, "duration_ms", 1.5),
        (EventType.HUMAN_GATE_RESOLVED, "wait_ms", -1),
        (EventType.HUMAN_GATE_RESOLVED, "wait_ms", 2**53),
        (EventType.HUMAN_GATE_REQUESTED, "artifact_version", 2**31),
        (EventType.ARTIFACT_WRITTEN, "version", True),
        (EventType.STEP_STARTED, "attempt", -1),
    ],
)
def test_payload_field_rules(etype: EventType, field: str, value: Any) -> None:
    data = make_event(etype).to_json_obj()
    data["payload"][field] = value
    with pytest.raises(EventValidationError, match=rf"payload\.{field}: found {value!r}"):
        TraceEvent.parse(data)


# ---------------------------------------------------------------------- money and time


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0.5"), "0.5"),
        (Decimal("0.50"), "0.5"),
        (Decimal("12"), "12"),
        (Decimal("12.000"), "12"),
        (Decimal("1.2E+3"), "1200"),
        (Decimal("100"), "100"),
        (Decimal("0.0000123"), "0.0000123"),
        (Decimal("1.23E-5"), "0.0000123"),
        (Decimal("1E-10"), "0.0000000001"),
        (Decimal("0"), "0"),
        (Decimal("0.000"), "0"),
        (Decimal("-0"), "0"),
        (Decimal("-0.00"), "0"),
        (Decimal("0E+5"), "0"),
        (Decimal("-3.10"), "-3.1"),
        (Decimal("999999999999999999.9999999999"), "999999999999999999.9999999999"),
    ],
)
def test_money_str(amount: Decimal, text: str) -> None:
    assert money_str(amount) == text
    money = Money(amount=amount, currency="EUR")
    assert money_str(money.amount) == text
    assert money.model_dump(mode="json")["amount"] == text
    assert money == Money(amount=text, currency="EUR")


@pytest.mark.parametrize("amount", [Decimal("0.0000000001"), Decimal("42"), Decimal("-7.25")])
def test_money_round_trip_keeps_text(codec: Codec, amount: Decimal) -> None:
    payload = PAYLOADS[EventType.MODEL_IO].model_copy(
        update={"cost": Cost(amount=amount, currency="JPY", source="provider")}
    )
    ev = make_event(EventType.MODEL_IO, payload=payload)
    [decoded] = codec.decode(codec.encode_event(ev))
    assert isinstance(decoded.payload, ModelIO) and isinstance(ev.payload, ModelIO)
    assert money_str(decoded.payload.cost.amount) == money_str(amount)
    assert decoded.payload.cost.amount.as_tuple() == ev.payload.cost.amount.as_tuple()


def test_money_str_rejects_non_decimals() -> None:
    for bad in (0.5, Decimal("NaN"), Decimal("Infinity"), "1.5"):
        with pytest.raises(EventValidationError):
            money_str(bad)  # type: ignore[arg-type]


def test_float_rejected_for_money() -> None:
    with pytest.raises(pydantic.ValidationError, match="float is not accepted"):
        Money(amount=0.1, currency="USD")
    with pytest.raises(pydantic.ValidationError, match="float is not accepted"):
        Cost(amount=1.0, currency="USD", source="local")
    data = make_event(EventType.MODEL_IO).to_json_obj()
    data["payload"]["cost"]["amount"] = 0.049578
    with pytest.raises(EventValidationError) as info:
        TraceEvent.parse(data)
    msg = str(info.value)
    assert "payload.cost.amount: found 0.049578 (float)" in msg
    assert "float is not accepted for money" in msg


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("NaN"), "finite"),
        (Decimal("-Infinity"), "finite"),
        ("Infinity", "finite"),
        (Decimal("0.00000000001"), "at most 10 fractional digits"),
        (Decimal("1E-11"), "at most 10 fractional digits"),
        (Decimal("1E+18"), "at most 18 integer digits"),
        ("12,5", "decimal string"),
        (True, "Decimal, int or decimal string"),
        (None, "Decimal, int or decimal string"),
    ],
)
def test_amount_rules(amount: Any, expected: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=expected):
        Money(amount=amount, currency="USD")


def test_amount_accepts_int_str_and_redundant_zeros() -> None:
    assert Money(amount=3, currency="USD").amount == Decimal(3)
    assert Money(amount="0.12", currency="USD").amount == Decimal("0.12")
    # 11 fractional digits but only trailing zeros: the value has scale 1
    assert Money(amount=Decimal("1.50000000000"), currency="USD").amount.as_tuple().exponent == -1
    assert Money(amount=Decimal("999999999999999999"), currency="USD")


@pytest.mark.parametrize("currency", ["usd", "US", "USDT", "U$D", "", 840])
def test_currency_rules(currency: Any) -> None:
    with pytest.raises(pydantic.ValidationError, match="ISO 4217"):
        Money(amount=1, currency=currency)


def test_ts_rules() -> None:
    cet = timezone(timedelta(hours=1))
    dt = datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=cet)
    ev = make_event(EventType.STEP_STARTED, ts=dt)
    assert ev.ts == datetime(2026, 1, 2, 2, 4, 5, 678000, tzinfo=UTC)
    assert ev.ts.tzinfo is UTC
    assert ev.to_json_obj()["ts"] == "2026-01-02T02:04:05.678Z"
    assert ts_str(dt) == "2026-01-02T02:04:05.678Z"  # floored, never rounded up
    assert ts_str(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"
    assert ts_str(datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC)) == "0999-12-31T23:59:59.000Z"
    assert make_event(EventType.STEP_STARTED, ts="2026-01-02T02:04:05.678Z").ts == ev.ts
    assert make_event(EventType.STEP_STARTED, ts="2026-01-02T03:04:05.678999+01:00").ts == ev.ts


def test_naive_datetime_rejected() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    with pytest.raises(pydantic.ValidationError, match="naive"):
        make_event(EventType.STEP_STARTED, ts=naive)
    with pytest.raises(EventValidationError, match="ts: found"):
        ts_str(naive)
    data = make_event(EventType.STEP_STARTED).to_json_obj()
    data["ts"] = "2026-01-02T03:04:05"
    with pytest.raises(EventValidationError, match=r"ts: found '2026-01-02T03:04:05'.*naive"):
        TraceEvent.parse(data)
    for bad in (1767322800000, "yesterday"):
        data["ts"] = bad
        with pytest.raises(EventValidationError, match="ts: found"):
            TraceEvent.parse(data)


def test_models_are_frozen() -> None:
    ev = ALL_EVENTS[0]
    with pytest.raises(pydantic.ValidationError):
        ev.seq = 5  # type: ignore[misc]
    assert isinstance(ev.payload, RunStarted)
    assert isinstance(ev.payload.workflow.steps, tuple)


def test_payload_types_and_class_vars() -> None:
    assert list(PAYLOAD_TYPES) == list(EventType)
    for etype, cls in PAYLOAD_TYPES.items():
        assert cls.TYPE is etype  # type: ignore[attr-defined]
        assert f"fleetledger.{cls.__name__}" == cls.AVRO_NAME


def test_longs_stay_json_safe() -> None:
    ok = make_event(EventType.STEP_STARTED, seq=0).model_copy(update={"seq": 2**53 - 1})
    assert ok.to_json_obj()["seq"] == 9007199254740991
    data = ok.to_json_obj()
    data["seq"] = 2**53
    with pytest.raises(EventValidationError, match="<= 9007199254740991 \\(JSON-safe integer\\)"):
        TraceEvent.parse(data)
    data = make_event(EventType.HUMAN_GATE_REQUESTED).to_json_obj()
    data["payload"]["artifact_version"] = 2**31
    with pytest.raises(EventValidationError, match="<= 2147483647 \\(Avro int\\)"):
        TraceEvent.parse(data)


# The test vector published in the specification: one run_completed event.
VECTOR_EVENT = TraceEvent(
    event_id=UUID("0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c0d9f"),
    run_id="run-1",
    seq=8,
    type=EventType.RUN_COMPLETED,
    ts=datetime(2026, 3, 14, 9, 26, 54, tzinfo=UTC),
    agent_id="planner",
    tenant="acme",
    producer_id="sdk-py",
    payload=RunCompleted(summary="ok"),
)
VECTOR_BODY = (
    "48 30 31 39 30 66 33 61 32 2d 37 63 31 65 2d 37 62 33 61 2d 39 64 34 65 2d 32 66 36 61 "
    "38 62 31 63 30 64 39 66 0a 72 75 6e 2d 31 10 12 e0 ac dc ba 9d 67 0e 70 6c 61 6e 6e 65 "
    "72 08 61 63 6d 65 00 0c 73 64 6b 2d 70 79 {version} 00 12 02 04 6f 6b"
)


def test_wire_test_vectors(codec: Codec) -> None:
    body = VECTOR_BODY.format(version="06")  # schema_version 3, zigzag
    event_msg = bytes.fromhex("c3 01 05 b5 b1 30 b7 4d 28 01 " + body)
    batch_msg = bytes.fromhex("c3 01 f4 67 d3 54 28 de 74 bf 0a 72 75 6e 2d 31 02 " + body + " 00")
    assert codec.encode_event(VECTOR_EVENT) == event_msg
    assert codec.encode_batch([VECTOR_EVENT]) == batch_msg
    assert codec.decode(event_msg) == codec.decode(batch_msg) == [VECTOR_EVENT]
    assert json.dumps(VECTOR_EVENT.to_json_obj(), sort_keys=True, separators=(",", ":")) == (
        '{"agent_id":"planner","event_id":"0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c0d9f",'
        '"payload":{"summary":"ok"},"producer_id":"sdk-py","run_id":"run-1",'
        '"schema_version":3,"seq":8,"tenant":"acme","ts":"2026-03-14T09:26:54.000Z",'
        '"type":"run_completed"}'
    )


def test_pack_test_vector(codec: Codec) -> None:
    """SPEC 1.1 "Packs": the event and batch vectors above, in one EventPack record."""
    body = VECTOR_BODY.format(version="06")
    event_msg = bytes.fromhex("c3 01 05 b5 b1 30 b7 4d 28 01 " + body)
    batch_msg = bytes.fromhex("c3 01 f4 67 d3 54 28 de 74 bf 0a 72 75 6e 2d 31 02 " + body + " 00")
    pack = bytes.fromhex(
        "c3 01 48 92 cb 0e 61 b8 30 2d 04 b2 01"
        + event_msg.hex()
        + "c2 01"
        + batch_msg.hex()
        + "00"
    )
    assert codec.pack_fingerprint.hex() == "4892cb0e61b8302d"
    assert codec.encode_pack([event_msg, batch_msg]) == pack
    assert codec.is_pack(pack) and not codec.is_pack(event_msg)
    assert codec.unpack(pack) == [event_msg, batch_msg]
    with pytest.raises(DecodeError, match="packs do not nest"):
        codec.decode(pack)
    with pytest.raises(DecodeError, match="found 1 bytes after"):
        codec.unpack(pack + b"\x00")
    with pytest.raises(DecodeError, match="no messages"):
        codec.unpack(pack[:10] + b"\x00")
    with pytest.raises(UnknownFingerprintError):
        codec.encode_pack([event_msg, b"\xc3\x01 not one"])


def test_released_v2_test_vector_still_decodes(codec: Codec) -> None:
    """The v2 vector published before v3: same event body, v2 fingerprint, schema_version 2."""
    event_msg = bytes.fromhex("c3 01 13 de 9a 82 00 93 7f f2 " + VECTOR_BODY.format(version="04"))
    assert codec.encode_event(VECTOR_EVENT, version=2) == event_msg
    assert codec.decode(event_msg) == [VECTOR_EVENT.model_copy(update={"schema_version": 2})]


# ----------------------------------------------------------------------- successor


class _Subclassed(StepStarted):
    pass


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", "not-a-uuid"),
        ("seq", -1),
        ("seq", True),
        ("seq", 2**53),
        ("ts", datetime(2026, 3, 14, 9, 26, 53)),
        ("ts", "2026-03-14T09:26:53.589Z"),
        ("step_id", ""),
        ("step_id", 7),
        ("step_id", "\ud800"),
        ("step_id", "prüfen"),
        ("type", "model_io"),
        ("payload", PAYLOADS[EventType.TOOL_CALL]),
        ("payload", _Subclassed(attempt=1)),
        ("payload", {"attempt": 1}),
    ],
)
def test_a_successor_validates_what_the_constructor_validates(field: str, value: Any) -> None:
    """Whatever ``successor`` does not take as already valid, full validation decides:
    the same event, or the same errors."""
    first = make_event(EventType.RUN_STARTED)
    per_event = {
        "event_id": UUID(int=7),
        "seq": 1,
        "type": EventType.STEP_STARTED,
        "ts": T0,
        "step_id": "check",
        "payload": PAYLOADS[EventType.STEP_STARTED],
        field: value,
    }
    envelope = {
        k: getattr(first, k)
        for k in ("run_id", "agent_id", "tenant", "producer_id", "schema_version", "traceparent")
    }
    try:
        expected = TraceEvent(**envelope, **per_event)
    except pydantic.ValidationError as exc:
        with pytest.raises(pydantic.ValidationError) as got:
            first.successor(**per_event)
        assert got.value.errors() == exc.errors()
    else:
        assert first.successor(**per_event) == expected
