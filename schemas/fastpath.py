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

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from uuid import UUID

from annotated_types import Ge, Le
from pydantic import BaseModel, PlainValidator, StringConstraints
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined

from .models import PAYLOAD_TYPES, TraceEvent, _money_fmt, _ts_fmt

Conv = Callable[[Any], Any]
_OMIT = object()


class Rejected(Exception):
    """The record is not valid; the model path reports why."""


def _reject(*_: Any) -> Any:
    raise Rejected


def _scalar(base: Any, meta: list[Any]) -> Conv:
    """Check-and-convert for one scalar annotation with its constraint metadata."""
    plain: Callable[[Any], Any] | None = None
    ge = le = None
    min_length = 0
    flat: list[Any] = []
    for m in meta:  # Field(...) inside Annotated carries its constraints as metadata
        flat += m.metadata if isinstance(m, FieldInfo) else [m]
    for m in flat:
        if isinstance(m, PlainValidator):
            plain = m.func  # type: ignore[assignment]
        elif isinstance(m, Ge):
            ge = m.ge
        elif isinstance(m, Le):
            le = m.le
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
            return _OMIT if v is None else inner(v)

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


def _model(cls: type[BaseModel]) -> Conv:
    found = _MODELS.get(cls)
    if found is not None:
        return found
    fields: list[tuple[str, Conv, bool, Any]] = []

    def convert(v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise Rejected
        out: dict[str, Any] = {}
        seen = 0
        for name, conv, required, default in fields:
            if name in v:
                seen += 1
                raw = v[name]
            elif required:
                raise Rejected
            else:
                raw = default
            value = conv(raw)
            if value is not _OMIT:
                out[name] = value
        if seen != len(v):  # extra="forbid"
            raise Rejected
        return out

    _MODELS[cls] = convert  # before compiling fields: records may nest
    for name, info in cls.model_fields.items():
        if name == "payload":
            continue
        required = info.default is PydanticUndefined and info.default_factory is None
        conv = _compile(info.annotation, list(info.metadata))
        fields.append((name, conv, required, None if required else _default(info)))
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
    obj = _ENVELOPE(envelope)
    obj["payload"] = chosen[0](payload)
    return obj
