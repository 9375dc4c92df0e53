"""Record -> canonical event object without building pydantic models: the processors' path.

Processors need the canonical JSON object of every event (``TraceEvent.to_json_obj()``),
validated exactly as the models validate it.  Building the models costs more than the
Avro decode itself, so this module *compiles* each model's field annotations once -
strict types, ``ge``/``le`` and ``min_length`` constraints, the models' own plain
validators (amounts, timestamps, currencies, traceparents), enums, optional fields and
defaults, nested records, the payload chosen by ``type``, ``extra="forbid"`` - into plain
functions over fastavro records.

Contract: for every record, ``record_to_json_obj(rec)`` returns exactly
``TraceEvent.from_record(rec).to_json_obj()``, or raises :class:`Rejected` where the
model would raise (the caller then asks the model for the precise error message).  The
rules are read from the models themselves, so there is one definition of validity; a
property test holds the two paths equal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from uuid import UUID

from annotated_types import Ge, Le
from pydantic import BaseModel, PlainSerializer, PlainValidator, StringConstraints, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined

from fleetledger.kernel.errors import EventValidationError
from fleetledger.schemas.models import (
    PAYLOAD_TYPES,
    CanonicalText,
    TraceEvent,
    _money_fmt,
    _to_json,
    _ts_fmt,
)

Conv = Callable[[Any], Any]


class Rejected(Exception):
    """The record is not valid; the model path reports why."""


def _reject(*_: Any) -> Any:
    raise Rejected


def _scalar(base: Any, meta: list[Any]) -> Conv:
    """Check-and-convert for one scalar annotation with its constraint metadata."""
    plain: Callable[[Any], Any] | None = None
    ge: int | None = None
    le: int | None = None
    min_length = 0
    flat: list[Any] = []
    for m in meta:  # Field(...) inside Annotated carries its constraints as metadata
        flat += m.metadata if isinstance(m, FieldInfo) else [m]
    for m in flat:
        if isinstance(m, PlainValidator):
            plain = m.func  # type: ignore[assignment]
        elif isinstance(m, Ge):
            ge = int(m.ge)  # type: ignore[call-overload]
        elif isinstance(m, Le):
            le = int(m.le)  # type: ignore[call-overload]
        elif isinstance(m, StringConstraints) and m.min_length:
            min_length = m.min_length
    if plain is not None:
        validate = plain
        fmt: Conv | None = _money_fmt if base is Decimal else _ts_fmt if base is datetime else None

        def via_validator(v: Any) -> Any:
            try:
                out = validate(v)
            except (PydanticCustomError, ValueError, TypeError) as exc:
                raise Rejected from exc
            return out if fmt is None else fmt(out)

        return via_validator
    if base is bool:
        return lambda v: v if type(v) is bool else _reject()
    if base is int:
        lo = ge if ge is not None else -(2**63)
        hi = le if le is not None else 2**63

        def integer(v: Any) -> Any:
            if type(v) is int and lo <= v <= hi:
                return v
            raise Rejected

        return integer
    if base is str:
        if min_length:
            return lambda v: v if type(v) is str and len(v) >= min_length else _reject()
        return lambda v: v if type(v) is str else _reject()
    if base is UUID:

        def uuid_text(v: Any) -> str:
            if isinstance(v, UUID):
                return str(v)
            if isinstance(v, str):
                try:
                    return str(UUID(v))
                except ValueError as exc:
                    raise Rejected from exc
            raise Rejected

        return uuid_text
    if isinstance(base, type) and issubclass(base, Enum):
        values = {e.value for e in base}
        return lambda v: v if type(v) is str and v in values else _enum(base, v)
    raise TypeError(f"no fast conversion for {base!r}")  # pragma: no cover


def _enum(cls: type[Enum], v: Any) -> Any:
    if isinstance(v, cls):
        return v.value
    raise Rejected


def _compile(ann: Any, meta: list[Any]) -> Conv:
    origin = get_origin(ann)
    if origin is Annotated:
        base, *more = get_args(ann)
        return _compile(base, [*meta, *more])
    if origin in (Union, UnionType):
        args = [a for a in get_args(ann) if a is not NoneType]
        inner = _compile(args[0], meta) if len(args) == 1 else _reject

        def optional(v: Any) -> Any:
            return None if v is None else inner(v)  # a null inside a container stays

        return optional
    if origin is tuple:
        item = _compile(get_args(ann)[0], [])

        def sequence(v: Any) -> Any:
            if not isinstance(v, list | tuple):
                raise Rejected
            return [item(x) for x in v]

        return sequence
    if origin is dict:
        key_t, val_t = get_args(ann)
        key, val = _compile(key_t, []), _compile(val_t, [])

        def mapping(v: Any) -> Any:
            if not isinstance(v, Mapping):
                raise Rejected
            return {key(k): val(x) for k, x in v.items()}

        return mapping
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return _model(ann)
    return _scalar(ann, meta)


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


_MODELS: dict[type[BaseModel], Conv] = {}
_MISSING = object()


def _flat_meta(ann: Any, meta: list[Any]) -> tuple[Any, list[Any], bool]:
    """(base annotation, constraint metadata, optional?) with Annotated/Optional peeled."""
    optional = False
    while True:
        origin = get_origin(ann)
        if origin is Annotated:
            ann, *more = get_args(ann)
            meta = [*meta, *more]
        elif origin in (Union, UnionType):
            args = [a for a in get_args(ann) if a is not NoneType]
            if len(args) != 1:
                return ann, meta, optional
            optional, ann = True, args[0]
        else:
            break
    flat: list[Any] = []
    for m in meta:
        flat += m.metadata if isinstance(m, FieldInfo) else [m]
    return ann, flat, optional


def _inline_check(base: Any, meta: list[Any], consts: dict[str, Any], i: int) -> str | None:
    """Python statements checking ``x`` (and rebinding it to its JSON value), or None."""
    if any(isinstance(m, PlainValidator) for m in meta):
        return None
    ge = next((m.ge for m in meta if isinstance(m, Ge)), None)
    le = next((m.le for m in meta if isinstance(m, Le)), None)
    min_length = next(
        (m.min_length for m in meta if isinstance(m, StringConstraints) and m.min_length), 0
    )
    if base is str:
        if min_length == 1:
            return "if type(x) is not str or not x: raise Rejected"
        if min_length:
            return f"if type(x) is not str or len(x) < {min_length}: raise Rejected"
        return "if type(x) is not str: raise Rejected"
    if base is bool:
        return "if type(x) is not bool: raise Rejected"
    if base is int:
        lo = ge if ge is not None else -(2**63)
        hi = le if le is not None else 2**63
        return f"if type(x) is not int or not ({lo} <= x <= {hi}): raise Rejected"
    if isinstance(base, type) and issubclass(base, Enum):
        consts[f"E{i}"] = {**{e.value: e.value for e in base}, **{e: e.value for e in base}}
        return "\n".join(
            [
                "try:",
                f"    x = E{i}.get(x, _MISSING)",
                "except TypeError:",
                "    raise Rejected from None",
                "if x is _MISSING: raise Rejected",
            ]
        )
    return None


def _model(cls: type[BaseModel]) -> Conv:
    """Generate one straight-line function per model: no per-field calls for scalars."""
    found = _MODELS.get(cls)
    if found is not None:
        return found
    consts: dict[str, Any] = {"Rejected": Rejected, "_MISSING": _MISSING, "Mapping": Mapping}
    lines = [
        "def convert(v):",
        "    if type(v) is not dict and not isinstance(v, Mapping): raise Rejected",
        "    get = v.get",
        "    n = 0",
        "    out = {}",
    ]
    for i, (name, info) in enumerate(cls.model_fields.items()):
        if name == "payload":
            continue
        required = info.default is PydanticUndefined and info.default_factory is None
        base, meta, optional = _flat_meta(info.annotation, list(info.metadata))
        lines.append(f"    x = get({name!r}, _MISSING)")
        if required:
            lines += ["    if x is _MISSING: raise Rejected", "    n += 1"]
        else:
            consts[f"D{i}"] = _default(info)
            lines += [f"    if x is _MISSING: x = D{i}", "    else: n += 1"]
        check = _inline_check(base, meta, consts, i)
        if check is None:  # validators, UUIDs, nested records, sequences, mappings
            consts[f"C{i}"] = _compile(base, meta)
            check = f"x = C{i}(x)"
        body = [f"    {line}" for line in check.split("\n")] + [f"    out[{name!r}] = x"]
        if optional:
            lines.append("    if x is not None:")
            lines += [f"    {line}" for line in body]
        else:
            lines += body
    lines += ["    if n != len(v): raise Rejected", "    return out"]
    namespace = dict(consts)
    exec(compile("\n".join(lines), f"<fastpath {cls.__name__}>", "exec"), namespace)
    convert: Conv = namespace["convert"]
    _MODELS[cls] = convert
    return convert


_PAYLOADS: dict[str, tuple[Conv, str]] = {
    t.value: (_model(cls), t.value) for t, cls in PAYLOAD_TYPES.items()
}
_ENVELOPE = _model(TraceEvent)


def record_to_json_obj(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical JSON object of a fastavro event record, validated like the model."""
    if not isinstance(rec, Mapping):
        raise Rejected
    payload = rec.get("payload")
    if isinstance(payload, tuple) and len(payload) == 2:
        payload = payload[1]
    etype = rec.get("type")
    chosen = _PAYLOADS.get(etype) if isinstance(etype, str) else None
    if chosen is None or payload is None:
        raise Rejected
    envelope = {k: v for k, v in rec.items() if k != "payload"}
    obj: dict[str, Any] = _ENVELOPE(envelope)
    obj["payload"] = chosen[0](payload)
    return obj


# ------------------------------------------------ canonical JSON objects (verification)
#
# The converse check: is a JSON value *already* the canonical object of a valid event,
# ``TraceEvent.parse(obj).to_json_obj() == obj``?  Verifiers ask it of every event of a
# bundle.  Compiled from the same annotations: each field must be present unless its
# default is null (the canonical object omits nulls and keeps every other default), of its
# exact JSON type, and the canonical text of its value - the field's own validator and
# serializer round trip, or the ``CanonicalText`` predicate the model declares for it.

_JSON_MODELS: dict[type[BaseModel], Conv] = {}


def _json_value(ann: Any, meta: list[Any]) -> Conv:
    """A check (raising Rejected) that ``v`` is the canonical JSON value of ``ann``."""
    base, flat, _optional = _flat_meta(ann, meta)
    origin = get_origin(base)
    if origin is tuple:
        item = _json_value(get_args(base)[0], [])

        def sequence(v: Any) -> None:
            if type(v) is not list:
                raise Rejected
            for x in v:
                item(x)

        return sequence
    if origin is dict:
        key_t, val_t = get_args(base)
        key, val = _json_value(key_t, []), _json_value(val_t, [])

        def mapping(v: Any) -> None:
            if type(v) is not dict:
                raise Rejected
            for k, x in v.items():
                key(k)
                val(x)

        return mapping
    if isinstance(base, type) and issubclass(base, BaseModel):
        return _json_model(base)
    consts: dict[str, Any] = {"Rejected": Rejected}
    code = _json_scalar_check(base, flat, consts, 0)
    namespace = dict(consts)
    exec(compile(f"def check(x):\n{_indent(code, 1)}", "<canonical scalar>", "exec"), namespace)
    check: Conv = namespace["check"]
    return check


def _indent(code: str, levels: int) -> str:
    pad = "    " * levels
    return "\n".join(pad + line for line in code.split("\n"))


def _json_scalar_check(base: Any, meta: list[Any], consts: dict[str, Any], i: int) -> str:
    """Statements raising Rejected unless ``x`` is the canonical JSON text of a scalar."""
    canonical = next((m for m in meta if isinstance(m, CanonicalText)), None)
    if canonical is not None:
        consts[f"K{i}"] = canonical.check
        return f"if type(x) is not str or not K{i}(x): raise Rejected"
    plain = next((m.func for m in meta if isinstance(m, PlainValidator)), None)
    if plain is not None:
        ser = next((m.func for m in meta if isinstance(m, PlainSerializer)), None)
        consts[f"V{i}"], consts[f"S{i}"] = plain, ser
        out = f"S{i}(y)" if ser is not None else "y"
        return "\n".join(
            [
                "if type(x) is not str: raise Rejected",
                "try:",
                f"    y = V{i}(x)",
                "except (PydanticCustomError, ValueError, TypeError, ArithmeticError):",
                "    raise Rejected from None",
                f"if {out} != x: raise Rejected",
            ]
        )
    if isinstance(base, type) and issubclass(base, Enum):
        consts[f"E{i}"] = frozenset(e.value for e in base)
        return f"if type(x) is not str or x not in E{i}: raise Rejected"
    inline = _inline_check(base, meta, consts, i)
    if inline is None:  # pragma: no cover - every annotation of the contract is handled
        raise TypeError(f"no canonical JSON check for {base!r}")
    return inline


def _json_model(cls: type[BaseModel]) -> Conv:
    """One generated function per model: raises Rejected unless ``v`` is the canonical
    JSON object of a valid instance (payload excepted, chosen by ``type``)."""
    found = _JSON_MODELS.get(cls)
    if found is not None:
        return found
    decorators = cls.__pydantic_decorators__
    known = {"_build_payload", "_payload_matches_type"} if cls is TraceEvent else set()
    if set(decorators.model_validators) - known or decorators.field_validators:
        # A rule across fields this compiler does not read: ask the model itself.
        def via_model(v: Any) -> None:
            try:
                ok = type(v) is dict and _to_json(cls.model_validate(v)) == v
            except (ValidationError, PydanticCustomError, ValueError, TypeError):
                raise Rejected from None
            if not ok:
                raise Rejected

        _JSON_MODELS[cls] = via_model
        return via_model
    consts: dict[str, Any] = {"Rejected": Rejected, "_MISSING": _MISSING}
    lines = ["def check(v):", "    if type(v) is not dict: raise Rejected", "    get = v.get"]
    lines.append("    try:")  # a required member missing: KeyError
    present = 0
    for i, (name, info) in enumerate(cls.model_fields.items()):
        if name == "payload":
            present += 1
            continue
        base, meta, _optional = _flat_meta(info.annotation, list(info.metadata))
        required = info.default is PydanticUndefined and info.default_factory is None
        omitted_when_default = not required and _default(info) is None
        if get_origin(base) in (tuple, dict) or (
            isinstance(base, type) and issubclass(base, BaseModel)
        ):
            consts[f"C{i}"] = _json_value(base, meta)
            check = f"C{i}(x)"
        else:
            check = _json_scalar_check(base, meta, consts, i)
        if omitted_when_default:
            lines.append(f"        x = get({name!r}, _MISSING)")
            lines.append("        if x is not _MISSING:")
            lines.append("            n += 1")
            lines.append(_indent(check, 3))
        else:
            lines.append(f"        x = v[{name!r}]")
            lines.append(_indent(check, 2))
            present += 1
    lines.insert(3, f"    n = {present}")
    lines += ["    except KeyError:", "        raise Rejected from None"]
    lines.append("    if n != len(v): raise Rejected")
    namespace = dict(consts)
    namespace["PydanticCustomError"] = PydanticCustomError
    exec(compile("\n".join(lines), f"<canonical {cls.__name__}>", "exec"), namespace)
    check_model: Conv = namespace["check"]
    _JSON_MODELS[cls] = check_model
    return check_model


_JSON_PAYLOADS: dict[str, Conv] = {t.value: _json_model(cls) for t, cls in PAYLOAD_TYPES.items()}
_JSON_ENVELOPE = _json_model(TraceEvent)


def is_canonical_event(obj: Any) -> bool:
    """Whether ``obj`` is exactly the canonical JSON object of a valid event
    (``TraceEvent.parse(obj).to_json_obj() == obj``), without building models."""
    if type(obj) is not dict:
        return False
    etype = obj.get("type")
    check = _JSON_PAYLOADS.get(etype) if type(etype) is str else None
    if check is None or "payload" not in obj:
        return False
    try:
        _JSON_ENVELOPE(obj)
        check(obj["payload"])
    except Rejected:
        return False
    return True


def check_canonical_event(obj: Any) -> None:
    """Raise :class:`EventValidationError` unless ``obj`` is the canonical JSON object of a
    valid event; the error names the first field at fault (``field``), what was found
    there and what the contract expects."""
    if is_canonical_event(obj):
        return
    if type(obj) is not dict:
        raise EventValidationError(
            f"invalid event: found a {type(obj).__name__}, expected a JSON object", field=None
        )
    event = TraceEvent.parse(obj)  # raises, naming the field, when a value is invalid
    want = _to_json(event)
    diff = _first_difference(obj, want, "")
    if diff is None:  # pragma: no cover - the compiled check and the model agree (tests)
        raise EventValidationError("invalid event: refused by the contract check")
    where, found, expected = diff
    raise EventValidationError(
        f"non-canonical event: {where}: found {found}, expected {expected} "
        "(the canonical form of the same value)",
        field=where,
    )


def _first_difference(found: Any, expected: Any, path: str) -> tuple[str, str, str] | None:
    if type(found) is dict and type(expected) is dict:
        for k in sorted(set(found) | set(expected)):
            at = f"{path}.{k}" if path else k
            if k not in expected:
                return at, _fmt_json(found[k]), "no member (nulls and unknown fields are omitted)"
            if k not in found:
                return at, "nothing", _fmt_json(expected[k])
            d = _first_difference(found[k], expected[k], at)
            if d:
                return d
        return None
    if type(found) is list and type(expected) is list and len(found) == len(expected):
        for i, (a, b) in enumerate(zip(found, expected, strict=True)):
            d = _first_difference(a, b, f"{path}[{i}]")
            if d:
                return d
        return None
    if type(found) is not type(expected) or found != expected:
        return path or "<root>", _fmt_json(found), _fmt_json(expected)
    return None


def _fmt_json(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."
