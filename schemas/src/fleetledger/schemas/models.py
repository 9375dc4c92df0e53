"""Python mirror of the Avro event contract.

Every Avro enum is a :class:`enum.StrEnum` whose values are the Avro symbols, every Avro
record is a frozen pydantic model with the same field names in the same order.  The
canonical JSON object of an event (:meth:`TraceEvent.to_json_obj`) is the thing the
processors hash, so its rules are fixed here:

* money amounts are :class:`~decimal.Decimal` (never ``float``), rendered by
  :func:`money_str` as plain decimals without exponent or trailing zeros;
* timestamps are aware UTC datetimes floored to the millisecond, rendered by
  :func:`ts_str` as ``YYYY-MM-DDTHH:MM:SS.mmmZ``;
* ``None`` values are omitted, enums are their symbols, UUIDs lowercase strings.

Validation failures surface as :class:`fleetledger.errors.EventValidationError` when
data enters through :meth:`TraceEvent.parse` / :meth:`TraceEvent.from_record` (and the
codec); direct construction raises pydantic's ``ValidationError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum, StrEnum
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union, get_args, get_origin
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fleetledger.kernel.errors import EventValidationError

__all__ = [
    "AVRO_NAMESPACE",
    "PAYLOAD_TYPES",
    "SCHEMA_VERSION",
    "ArtifactState",
    "ArtifactWritten",
    "CacheStatus",
    "ContentRef",
    "Cost",
    "CostSource",
    "EventType",
    "GateDecision",
    "GatePolicy",
    "HumanGateRequested",
    "HumanGateResolved",
    "ModelDecision",
    "ModelIO",
    "ModelOutcome",
    "Money",
    "Payload",
    "Recovery",
    "RecoveryLevel",
    "RunCompleted",
    "RunFailed",
    "RunStarted",
    "StepCompleted",
    "StepOutcome",
    "StepStarted",
    "ToolCall",
    "ToolOutcome",
    "TraceEvent",
    "ValidationEvidence",
    "WorkflowEdge",
    "WorkflowSnapshot",
    "WorkflowStep",
    "money_str",
    "ts_str",
    "validation_error",
]

AVRO_NAMESPACE = "fleetledger"
#: The contract version this code writes (the newest directory under ``schemas/avro``).
SCHEMA_VERSION = 3

# Avro longs are 64-bit, but every long of an event also appears as a JSON integer in the
# canonical object, which is hashed with JCS (RFC 8785): keep them exactly representable.
_LONG_MAX = 2**53 - 1
_INT_MAX = 2**31 - 1
_MAX_FRACTION_DIGITS = 10  # Avro decimal scale
_MAX_INTEGER_DIGITS = 18  # Avro decimal precision 28 - scale 10
_CUSTOM = "fleetledger"  # pydantic error type of our own checks
_ZERO = Decimal(0)


# --------------------------------------------------------------------------- enums


class EventType(StrEnum):
    RUN_STARTED = "run_started"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    MODEL_IO = "model_io"
    TOOL_CALL = "tool_call"
    HUMAN_GATE_REQUESTED = "human_gate_requested"
    HUMAN_GATE_RESOLVED = "human_gate_resolved"
    ARTIFACT_WRITTEN = "artifact_written"
    RECOVERY = "recovery"
    RUN_COMPLETED = "run_completed"
    RUN_FAILED = "run_failed"
    MODEL_DECISION = "model_decision"  # v3


class CostSource(StrEnum):
    PROVIDER = "provider"  # reported by the provider
    LOCAL = "local"  # calculated by the SDK from price data (Cost.price_data says which)
    UNPRICED = "unpriced"  # v3: no price known; the amount is 0 and is not a cost


class GatePolicy(StrEnum):
    PAUSE_BEFORE = "PAUSE_BEFORE"
    PAUSE_AFTER = "PAUSE_AFTER"
    CHECKPOINT = "CHECKPOINT"


class StepOutcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    BLOCKED = "blocked"
    REPLAYED = "replayed"


class CacheStatus(StrEnum):
    HIT = "hit"
    MISS = "miss"


class ModelOutcome(StrEnum):
    SUCCESS = "success"
    FALLBACK = "fallback"
    ERROR = "error"


class ToolOutcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"


class GateDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    EDIT = "edit"


class ArtifactState(StrEnum):
    DECLARED = "declared"
    GENERATED = "generated"
    SCHEMA_VALID = "schema_valid"
    VERIFIED = "verified"
    PINNED = "pinned"


class RecoveryLevel(StrEnum):
    L1_RETRY = "L1_RETRY"
    L2_ESCALATE = "L2_ESCALATE"


# ------------------------------------------------------------------ scalar helpers


def _fail(expected: str) -> PydanticCustomError:
    return PydanticCustomError(_CUSTOM, expected)


def money_str(d: Decimal) -> str:
    """Canonical text of an amount: plain decimal, no exponent, no trailing zeros.

    ``Decimal("0.50") -> "0.5"``, ``Decimal("1.2E+3") -> "1200"``,
    ``Decimal("1.23E-5") -> "0.0000123"``, zero (of any sign or scale) -> ``"0"``.
    Only finite :class:`~decimal.Decimal` values are accepted.
    """
    if not isinstance(d, Decimal) or not d.is_finite():
        raise EventValidationError(
            f"amount: found {d!r} ({type(d).__name__}), expected a finite Decimal"
        )
    return _money_fmt(d)


def _money_fmt(d: Decimal) -> str:
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", "0", "", "-"):
        return "0"
    return s


def _canonical_amount(d: Decimal) -> Decimal:
    """Exact canonical Decimal (trailing zeros stripped, exponent <= 0), checked for range."""
    sign, digits, exp = d.as_tuple()
    if not isinstance(exp, int):  # NaN / infinity
        raise _fail("a finite decimal (NaN and infinity are not amounts)")
    n = len(digits)
    e = exp
    while e < 0 and n > 1 and digits[n - 1] == 0:
        n -= 1
        e += 1
    if n == 1 and digits[0] == 0:
        return _ZERO
    kept = digits[:n] if n != len(digits) else digits
    if e > 0:
        kept = kept + (0,) * e
        e = 0
    if -e > _MAX_FRACTION_DIGITS:
        raise _fail(
            f"at most {_MAX_FRACTION_DIGITS} fractional digits (Avro decimal scale "
            f"{_MAX_FRACTION_DIGITS})"
        )
    if len(kept) + e > _MAX_INTEGER_DIGITS:
        raise _fail(
            f"at most {_MAX_INTEGER_DIGITS} integer digits (Avro decimal precision 28, "
            f"scale {_MAX_FRACTION_DIGITS})"
        )
    if e == exp:
        return d
    return Decimal((sign, kept, e))


def _validate_amount(v: Any) -> Decimal:
    if isinstance(v, Decimal):
        d = v
    elif isinstance(v, bool):
        raise _fail("a Decimal, int or decimal string")
    elif isinstance(v, int):
        d = Decimal(v)
    elif isinstance(v, str):
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise _fail("a Decimal, int or decimal string") from None
    elif isinstance(v, float):
        raise _fail("a Decimal, int or decimal string (float is not accepted for money)")
    else:
        raise _fail("a Decimal, int or decimal string")
    if not d.is_finite():
        raise _fail("a finite decimal (NaN and infinity are not amounts)")
    return _canonical_amount(d)


def _floor_utc(dt: datetime) -> datetime:
    if dt.tzinfo is not UTC:
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise ValueError("naive")
        dt = dt.astimezone(UTC)
    us = dt.microsecond % 1000
    if us:
        dt = dt.replace(microsecond=dt.microsecond - us)
    return dt


def _validate_ts(v: Any) -> datetime:
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise _fail("an ISO 8601 timestamp with a UTC offset") from None
    else:
        raise _fail("an aware datetime")
    try:
        return _floor_utc(dt)
    except ValueError:
        raise _fail("an aware datetime (naive datetimes are ambiguous)") from None
    except OverflowError:
        raise _fail("a datetime representable in UTC") from None


def _ts_fmt(dt: datetime) -> str:
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
        f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


def ts_str(dt: datetime) -> str:
    """Canonical text of a timestamp: UTC, millisecond precision, ``...T..:..:..mmmZ``.

    Aware datetimes only; they are converted to UTC and floored to the millisecond.
    """
    if not isinstance(dt, datetime):
        raise EventValidationError(f"ts: found {dt!r}, expected an aware datetime")
    try:
        dt = _floor_utc(dt)
    except (ValueError, OverflowError) as exc:
        raise EventValidationError(
            f"ts: found {dt!r}, expected an aware datetime representable in UTC"
        ) from exc
    return _ts_fmt(dt)


class CanonicalText:
    """Annotation marker: ``check(text)`` is True exactly when ``text`` is what the field's
    JSON serializer writes for some valid value, i.e. ``serialize(validate(text)) == text``.

    A faster equivalent of that round trip for the checks of canonical event objects
    (``fleetledger.schemas.fastpath``); the tests hold the two equal.  Pydantic ignores it.
    """

    __slots__ = ("check",)

    def __init__(self, check: Callable[[str], bool]) -> None:
        self.check = check


# Exactly the text `_ts_fmt` writes; whether the date and time exist is left to the parser.
_TS_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
# Exactly the text ``str(UUID(...))`` writes: lowercase, hyphenated 8-4-4-4-12.
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _is_canonical_ts(text: str) -> bool:
    """``ts_str(parse(text)) == text``: a real UTC instant written ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    if _TS_TEXT.fullmatch(text) is None:
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_canonical_uuid(text: str) -> bool:
    """``str(UUID(text)) == text``: lowercase hyphenated hex."""
    return _UUID_TEXT.fullmatch(text) is not None


def _validate_currency(v: Any) -> str:
    if type(v) is str and len(v) == 3 and v.isascii() and v.isalpha() and v.isupper():
        return v
    raise _fail("an ISO 4217 alphabetic code of 3 uppercase letters (e.g. 'USD')")


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _validate_sha256_hex(v: Any) -> str:
    if type(v) is str and _SHA256_RE.fullmatch(v):
        return v
    raise _fail("a lowercase hex SHA-256 digest (64 characters 0-9a-f)")


_TRACEPARENT_RE = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def _validate_traceparent(v: Any) -> str:
    if type(v) is str:
        m = _TRACEPARENT_RE.fullmatch(v)
        if (
            m is not None
            and not v.startswith("ff")
            and m.group(1) != "0" * 32
            and m.group(2) != "0" * 16
        ):
            return v
    raise _fail(
        "a W3C traceparent 'vv-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>' "
        "(lowercase, non-zero ids)"
    )


Amount = Annotated[
    Decimal,
    PlainValidator(_validate_amount),
    PlainSerializer(money_str, return_type=str, when_used="json"),
]
Timestamp = Annotated[
    datetime,
    PlainValidator(_validate_ts),
    PlainSerializer(ts_str, return_type=str, when_used="json"),
    CanonicalText(_is_canonical_ts),
]
EventId = Annotated[UUID, CanonicalText(_is_canonical_uuid)]
Currency = Annotated[str, PlainValidator(_validate_currency)]
TraceParent = Annotated[str, PlainValidator(_validate_traceparent)]
Sha256Hex = Annotated[str, PlainValidator(_validate_sha256_hex)]
Str = Annotated[str, Strict()]
NonEmptyStr = Annotated[str, StringConstraints(strict=True, min_length=1)]
NonNegLong = Annotated[int, Strict(), Field(ge=0, le=_LONG_MAX)]
NonNegInt = Annotated[int, Strict(), Field(ge=0, le=_INT_MAX)]
PosInt = Annotated[int, Strict(), Field(ge=1, le=_INT_MAX)]
Bool = Annotated[bool, Strict()]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Avro full name of the record this model mirrors.
    AVRO_NAME: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.AVRO_NAME = f"{AVRO_NAMESPACE}.{cls.__name__}"


# ------------------------------------------------------------------ shared records


class Money(_Model):
    amount: Amount
    currency: Currency


class Cost(_Model):
    amount: Amount
    currency: Currency
    source: CostSource
    price_data: NonEmptyStr | None = None  # v3
    priced_model: NonEmptyStr | None = None  # v3


class ContentRef(_Model):
    """Content identified by hash: in the blob store (offloaded) or withheld (redacted)."""

    sha256: Sha256Hex
    size: NonNegLong
    media_type: NonEmptyStr


class WorkflowStep(_Model):
    id: NonEmptyStr
    name: NonEmptyStr
    kind: NonEmptyStr
    gate: GatePolicy | None = None


class WorkflowEdge(_Model):
    source: NonEmptyStr
    target: NonEmptyStr


class WorkflowSnapshot(_Model):
    name: NonEmptyStr
    revision: Str
    steps: tuple[WorkflowStep, ...] = ()
    edges: tuple[WorkflowEdge, ...] = ()
    implicit: Bool | None = None  # v3


class ValidationEvidence(_Model):
    validator: NonEmptyStr
    passed: Bool
    details: Str | None = None


# ------------------------------------------------------------------------ payloads


class RunStarted(_Model):
    TYPE: ClassVar[EventType] = EventType.RUN_STARTED
    project: Str | None = None
    budget: Money | None = None
    workflow: WorkflowSnapshot
    labels: dict[Str, Str] = Field(default_factory=dict)


class StepStarted(_Model):
    TYPE: ClassVar[EventType] = EventType.STEP_STARTED
    attempt: NonNegInt = 1
    implicit: Bool | None = None  # v3


class StepCompleted(_Model):
    TYPE: ClassVar[EventType] = EventType.STEP_COMPLETED
    outcome: StepOutcome
    error_type: Str | None = None
    error_message: Str | None = None
    duration_ms: NonNegLong


class ModelIO(_Model):
    TYPE: ClassVar[EventType] = EventType.MODEL_IO
    gen_ai_provider_name: NonEmptyStr
    gen_ai_request_model: NonEmptyStr
    gen_ai_response_model: NonEmptyStr | None = None
    gen_ai_usage_input_tokens: NonNegLong
    gen_ai_usage_output_tokens: NonNegLong
    gen_ai_usage_cache_read_input_tokens: NonNegLong = 0
    cost: Cost
    duration_ms: NonNegLong
    prompt_hash: NonEmptyStr
    response_hash: NonEmptyStr | None = None
    cache: CacheStatus = CacheStatus.MISS
    outcome: ModelOutcome = ModelOutcome.SUCCESS
    error_type: Str | None = None
    inputs: Str | None = None
    outputs: Str | None = None
    gen_ai_usage_cache_creation_input_tokens: NonNegLong | None = None  # v3
    inputs_ref: ContentRef | None = None  # v3
    outputs_ref: ContentRef | None = None  # v3
    redactions: tuple[NonEmptyStr, ...] | None = None  # v3
    decision_id: NonEmptyStr | None = None  # v3


class ToolCall(_Model):
    TYPE: ClassVar[EventType] = EventType.TOOL_CALL
    gen_ai_tool_name: NonEmptyStr
    gen_ai_tool_call_id: NonEmptyStr | None = None
    inputs: Str | None = None
    outputs: Str | None = None
    duration_ms: NonNegLong
    outcome: ToolOutcome = ToolOutcome.SUCCESS
    error_type: Str | None = None
    inputs_ref: ContentRef | None = None  # v3
    outputs_ref: ContentRef | None = None  # v3
    redactions: tuple[NonEmptyStr, ...] | None = None  # v3


class HumanGateRequested(_Model):
    TYPE: ClassVar[EventType] = EventType.HUMAN_GATE_REQUESTED
    gate_id: NonEmptyStr
    policy: GatePolicy
    artifact_key: NonEmptyStr | None = None
    artifact_version: NonNegInt | None = None
    prompt: Str | None = None


class HumanGateResolved(_Model):
    TYPE: ClassVar[EventType] = EventType.HUMAN_GATE_RESOLVED
    gate_id: NonEmptyStr
    decision: GateDecision
    reviewer: NonEmptyStr
    reason: Str | None = None
    artifact_key: NonEmptyStr | None = None
    artifact_version: NonNegInt | None = None
    wait_ms: NonNegLong


class ArtifactWritten(_Model):
    TYPE: ClassVar[EventType] = EventType.ARTIFACT_WRITTEN
    key: NonEmptyStr
    schema_ref: NonEmptyStr | None = None
    version: NonNegInt
    content_hash: NonEmptyStr
    state: ArtifactState
    validation: ValidationEvidence | None = None


class Recovery(_Model):
    TYPE: ClassVar[EventType] = EventType.RECOVERY
    level: RecoveryLevel
    failure_kind: NonEmptyStr
    attempt: NonNegInt
    from_model: NonEmptyStr | None = None
    new_model: NonEmptyStr | None = None
    reason: Str | None = None


class RunCompleted(_Model):
    TYPE: ClassVar[EventType] = EventType.RUN_COMPLETED
    summary: Str | None = None


class RunFailed(_Model):
    TYPE: ClassVar[EventType] = EventType.RUN_FAILED
    error_type: NonEmptyStr
    error_message: Str
    failed_step: NonEmptyStr | None = None


class ModelDecision(_Model):
    """v3: why a model was chosen, recorded before the model calls it governs."""

    TYPE: ClassVar[EventType] = EventType.MODEL_DECISION
    decision_id: NonEmptyStr
    primary_model: NonEmptyStr
    provider: NonEmptyStr | None = None
    task_class: Str | None = None
    capability_class: Str | None = None
    fallback_chain: tuple[NonEmptyStr, ...] = ()
    budget_mode: Str | None = None
    routing_reason: Str | None = None


Payload = (
    RunStarted
    | StepStarted
    | StepCompleted
    | ModelIO
    | ToolCall
    | HumanGateRequested
    | HumanGateResolved
    | ArtifactWritten
    | Recovery
    | RunCompleted
    | RunFailed
    | ModelDecision
)

#: Payload model of every event type, in Avro union order.
PAYLOAD_TYPES: dict[EventType, type[_Model]] = {cls.TYPE: cls for cls in get_args(Payload)}


def _payload_tag(value: Any) -> str | None:
    """The event type a payload model is for (``TraceEvent`` builds mappings into models
    before the field is validated); None for anything else."""
    etype = getattr(type(value), "TYPE", None)
    return etype.value if isinstance(etype, EventType) else None


if TYPE_CHECKING:
    _TaggedPayload = Payload
else:
    #: The payload field's type: every member tagged with its event type, so a payload is
    #: checked against its own model only, not tried against each member of the union
    #: (which costs more than the rest of the envelope's validation).
    _TaggedPayload = Annotated[
        Union[tuple(Annotated[cls, Tag(cls.TYPE.value)] for cls in get_args(Payload))],  # noqa: UP007
        Discriminator(
            _payload_tag,
            custom_error_type=_CUSTOM,
            custom_error_message="a payload record of one of the event types",
        ),
    ]


def _payload_class(etype: Any) -> type[_Model] | None:
    try:
        return PAYLOAD_TYPES[EventType(etype)]
    except (ValueError, TypeError, KeyError):
        return None


# ------------------------------------------------------------------- error wrapping


def _fmt_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _fmt_value(v: Any) -> str:
    text = repr(v)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(v).__name__})"


def _expected(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    msg: str = err["msg"]
    ctx = err.get("ctx") or {}
    if kind == _CUSTOM:
        return msg
    if kind == "missing":
        return "a value (the field is required)"
    if kind == "extra_forbidden":
        return "no such field (unknown fields are rejected)"
    if kind == "string_too_short":
        return "a non-empty string"
    if kind == "greater_than_equal":
        return f"an integer >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        le = ctx.get("le")
        note = (
            " (JSON-safe integer)" if le == _LONG_MAX else " (Avro int)" if le == _INT_MAX else ""
        )
        return f"an integer <= {le}{note}"
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg[:1].lower() + msg[1:]


def validation_error(
    exc: ValidationError,
    what: str,
    prefix: tuple[int | str, ...] = (),
    *,
    limit: int | None = None,
) -> EventValidationError:
    """A pydantic failure as one :class:`EventValidationError`: ``<field>: found <value>,
    expected <what the contract wants>`` per error (the first ``limit`` of them)."""
    parts = []
    first: str | None = None
    errors = exc.errors(include_url=False)
    for err in errors if limit is None else errors[:limit]:
        loc = prefix + tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if not err["loc"] and "field" in ctx:  # model-level check about one field
            loc = (*prefix, ctx["field"])
        if "found" in ctx:
            found = ctx["found"]
        elif err["type"] == "missing":
            found = "nothing"
        else:
            found = _fmt_value(err["input"])
        where = _fmt_loc(loc) or "<root>"
        first = where if first is None else first
        parts.append(f"{where}: found {found}, expected {_expected(err)}")
    more = f" (+{len(errors) - limit} more)" if limit is not None and len(errors) > limit else ""
    return EventValidationError(f"invalid {what}: " + "; ".join(parts) + more, field=first)


# ------------------------------------------------------------------------ envelope


class TraceEvent(_Model):
    event_id: EventId
    run_id: NonEmptyStr
    seq: NonNegLong
    type: EventType
    ts: Timestamp
    agent_id: NonEmptyStr
    tenant: NonEmptyStr
    step_id: NonEmptyStr | None = None
    producer_id: NonEmptyStr
    schema_version: PosInt = SCHEMA_VERSION
    traceparent: TraceParent | None = None
    payload: _TaggedPayload

    @model_validator(mode="before")
    @classmethod
    def _build_payload(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            payload = data.get("payload")
            if isinstance(payload, tuple) and len(payload) == 2:
                payload = payload[1]  # fastavro's (record name, record) notation
            if isinstance(payload, Mapping):
                payload_cls = _payload_class(data.get("type"))
                if payload_cls is None:
                    return data  # the `type` error is reported by field validation
                data = dict(data)
                data["payload"] = payload_cls.model_validate(payload)
        return data

    @model_validator(mode="after")
    def _payload_matches_type(self) -> TraceEvent:
        if self.payload.TYPE is not self.type:
            raise PydanticCustomError(
                _CUSTOM,
                "a {expected} payload for type '{type}'",
                {
                    "field": "payload",
                    "found": f"a {type(self.payload).__name__} payload",
                    "expected": PAYLOAD_TYPES[self.type].__name__,
                    "type": self.type.value,
                },
            )
        return self

    # -- construction that reports EventValidationError ------------------------------

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> TraceEvent:
        """Validate a mapping (JSON object, Avro record or keyword dict) into an event.

        Raises :class:`~fleetledger.errors.EventValidationError` naming the field path,
        the value found and what was expected.
        """
        return _parse_event(data, ())

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> TraceEvent:
        """Build an event from a fastavro record (payload as a dict or a (name, dict) tuple)."""
        return _parse_event(rec, ())

    def successor(
        self,
        *,
        event_id: Any,
        seq: Any,
        type: Any,
        ts: Any,
        step_id: Any,
        payload: Any,
    ) -> TraceEvent:
        """A later event of the same run: this event's envelope (run, agent, tenant,
        producer, schema version, traceparent: already valid) with the per-event fields.

        Equal to ``TraceEvent(...)`` with the same arguments, and raises what it raises:
        values of the validated types are checked here (a fraction of a full validation,
        which the SDK would otherwise pay on every event of a run); anything else, and
        anything that fails a check, goes through full validation.
        """
        if (
            isinstance(type, EventType)
            and _builtin_type(payload) is PAYLOAD_TYPES[type]
            and _builtin_type(event_id) is UUID
            and _builtin_type(seq) is int
            and 0 <= seq <= _LONG_MAX
            # non-ASCII ids go through full validation (it refuses lone surrogates)
            and (
                step_id is None or (_builtin_type(step_id) is str and step_id.isascii() and step_id)
            )
            and isinstance(ts, datetime)
        ):
            try:
                when = _floor_utc(ts)
            except (ValueError, OverflowError):
                pass  # full validation reports it
            else:
                d = self.__dict__
                event = _new_object(TraceEvent)
                _set_attr(
                    event,
                    "__dict__",
                    {
                        "event_id": event_id,
                        "run_id": d["run_id"],
                        "seq": seq,
                        "type": type,
                        "ts": when,
                        "agent_id": d["agent_id"],
                        "tenant": d["tenant"],
                        "step_id": step_id,
                        "producer_id": d["producer_id"],
                        "schema_version": d["schema_version"],
                        "traceparent": d["traceparent"],
                        "payload": payload,
                    },
                )
                _set_attr(event, "__pydantic_fields_set__", set(_EVENT_FIELDS))
                _set_attr(event, "__pydantic_extra__", None)
                _set_attr(event, "__pydantic_private__", None)
                return event
        return TraceEvent(
            event_id=event_id,
            run_id=self.run_id,
            seq=seq,
            type=type,
            ts=ts,
            agent_id=self.agent_id,
            tenant=self.tenant,
            step_id=step_id,
            producer_id=self.producer_id,
            schema_version=self.schema_version,
            traceparent=self.traceparent,
            payload=payload,
        )

    # -- output ----------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The fastavro record of this event (payload in (full name, record) notation)."""
        return _to_record(self)

    def to_json_obj(self) -> dict[str, Any]:
        """THE canonical JSON object of the event (what gets hashed).

        Same result as ``model_dump(mode="json", exclude_none=True)``: nulls omitted,
        enums as symbols, amounts via :func:`money_str`, timestamps via :func:`ts_str`,
        UUIDs lowercase, ints as ints; payload nested under ``"payload"``.
        """
        return _to_json(self)


# For TraceEvent.successor, where ``type`` names a field.
_builtin_type = type
_new_object = object.__new__
_set_attr = object.__setattr__
_EVENT_FIELDS = tuple(TraceEvent.model_fields)


def _parse_event(data: Any, prefix: tuple[int | str, ...]) -> TraceEvent:
    if not isinstance(data, Mapping):
        loc = _fmt_loc(prefix) or "<root>"
        raise EventValidationError(
            f"invalid TraceEvent: {loc}: found {_fmt_value(data)}, expected a mapping"
        )
    payload = data.get("payload")
    if isinstance(payload, tuple) and len(payload) == 2:
        payload = payload[1]
    if isinstance(payload, Mapping):
        payload_cls = _payload_class(data.get("type"))
        if payload_cls is not None:
            try:
                payload = payload_cls.model_validate(payload)
            except ValidationError as exc:
                raise validation_error(exc, "TraceEvent", (*prefix, "payload")) from exc
            data = {**data, "payload": payload}
    try:
        return TraceEvent.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, "TraceEvent", prefix) from exc


# ------------------------------------------------------------- fast dict builders
#
# Conversions are derived once from the model annotations; the builders are plain
# loops over (field name, converter) pairs.  Tests check them against model_dump.

_Conv = Callable[[Any], Any] | None
_JSON_SPECS: dict[type[BaseModel], tuple[tuple[str, _Conv], ...]] = {}
_REC_SPECS: dict[type[BaseModel], tuple[tuple[str, _Conv], ...]] = {}


def _to_json(m: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    values = m.__dict__
    for name, conv in _JSON_SPECS[type(m)]:
        v = values[name]
        if v is None:
            continue
        out[name] = v if conv is None else conv(v)
    return out


def _to_record(m: BaseModel) -> dict[str, Any]:
    values = m.__dict__
    return {
        name: (v if conv is None or v is None else conv(v))
        for name, conv in _REC_SPECS[type(m)]
        for v in (values[name],)
    }


def _json_models(seq: tuple[BaseModel, ...]) -> list[dict[str, Any]]:
    return [_to_json(m) for m in seq]


def _rec_models(seq: tuple[BaseModel, ...]) -> list[dict[str, Any]]:
    return [_to_record(m) for m in seq]


def _scalars(seq: tuple[Any, ...]) -> list[Any]:
    return list(seq)


def _rec_named(m: _Model) -> tuple[str, dict[str, Any]]:
    return (m.AVRO_NAME, _to_record(m))


def _enum_value(v: Enum) -> Any:
    return v.value


def _strip_optional(ann: Any) -> Any:
    if get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) in (Union, UnionType):
        args = [a for a in get_args(ann) if a is not NoneType]
        if len(args) == 1:
            return _strip_optional(args[0])
    return ann


def _convs(ann: Any) -> tuple[_Conv, _Conv]:
    """(json converter, record converter) for one field annotation."""
    ann = _strip_optional(ann)
    origin = get_origin(ann)
    if origin in (Union, UnionType):  # the payload union
        return _to_json, _rec_named
    if origin is tuple:
        item = _strip_optional(get_args(ann)[0])
        if isinstance(item, type) and issubclass(item, BaseModel):
            return _json_models, _rec_models
        return _scalars, _scalars  # strings
    if origin is dict:
        return dict, None
    if isinstance(ann, type):
        if issubclass(ann, BaseModel):
            return _to_json, _to_record
        if issubclass(ann, Enum):
            return _enum_value, None
        if issubclass(ann, Decimal):
            return _money_fmt, None  # values are validated and canonical
        if issubclass(ann, datetime):
            return _ts_fmt, None  # values are validated: UTC, whole milliseconds
        if issubclass(ann, UUID):
            return str, None
        if issubclass(ann, bool | int | str):
            return None, None
    raise TypeError(f"no conversion for annotation {ann!r}")  # pragma: no cover


def _build_specs() -> None:
    models: list[type[BaseModel]] = [
        Money,
        Cost,
        ContentRef,
        WorkflowStep,
        WorkflowEdge,
        WorkflowSnapshot,
        ValidationEvidence,
        *PAYLOAD_TYPES.values(),
        TraceEvent,
    ]
    for cls in models:
        jspec = []
        rspec = []
        for name, info in cls.model_fields.items():
            jconv, rconv = _convs(info.annotation)
            jspec.append((name, jconv))
            rspec.append((name, rconv))
        _JSON_SPECS[cls] = tuple(jspec)
        _REC_SPECS[cls] = tuple(rspec)


_build_specs()
