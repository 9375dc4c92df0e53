"""Avro body -> canonical event objects in one pass: the processors' decoder.

:meth:`Codec.decode_objs` is the processors' hot path: fastavro reads a record (building
``UUID``, ``datetime`` and ``Decimal`` objects for the logical types), then
:func:`~fleetledger.schemas.fastpath.record_to_json_obj` checks it and turns those objects
back into text.  This module *compiles* one writer schema, together with the models'
field rules, into a straight-line Python reader of the Avro binary body that writes the
canonical object directly: a UUID is checked as text, a timestamp is formatted from its
milliseconds, an amount from its unscaled integer, and every other field gets exactly
the fast path's own check (:func:`~fleetledger.schemas.fastpath._inline_check` or the
compiled converter).

Contract: for every body, the reader either returns exactly what fastavro plus
``record_to_json_obj`` return, or raises :class:`Unreadable`, after which the caller
decodes the message the general way (which then gives the result or the precise error).
So anything unusual - a non-canonical UUID, a union branch that does not match the event
type, a value out of range, a truncated or malformed body, trailing bytes - costs a
second, general decode, never a different answer (messages of older writer versions,
which need schema resolution, go the general way directly).  A schema (or a part of it)
this module does not know how to compile gets no reader at all; the property tests hold
the two paths equal and check that the current contract compiles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, get_args, get_origin
from uuid import UUID

from pydantic import BaseModel, PlainValidator

from fleetledger.kernel.errors import DecodeError, SchemaError
from fleetledger.schemas.fastpath import (
    _MISSING,
    Rejected,
    _compile,
    _flat_meta,
    _inline_check,
)
from fleetledger.schemas.models import (
    _MAX_INTEGER_DIGITS,
    _UUID_TEXT,
    PAYLOAD_TYPES,
    TraceEvent,
    _validate_amount,
    _validate_ts,
)

__all__ = ["BodyReader", "Unreadable", "compile_reader"]

#: ``reader(data, start) -> canonical objects of the message's events``.
BodyReader = Callable[[bytes, int], list[dict[str, Any]]]


class Unreadable(DecodeError):
    """The compiled reader does not vouch for this body: decode it the general way."""


class _Unsupported(SchemaError):
    """A schema construct the compiler does not handle (no reader is built)."""


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MS_PER_DAY = 86_400_000
_MAX_UNSCALED = 10 ** (_MAX_INTEGER_DIGITS + 10)  # amounts the models may reject start here


def _day_text(days: int, cache: dict[int, str]) -> str:
    """``YYYY-MM-DD`` of a day counted from 1970-01-01 (memoized: events cluster in days)."""
    text = cache.get(days)
    if text is None:
        if len(cache) > 4096:
            cache.clear()
        d = date.fromordinal(_EPOCH_ORDINAL + days)  # ValueError outside years 1..9999
        text = f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
        cache[days] = text
    return text


def ts_text_of_millis(ms: int, cache: dict[int, str]) -> str:
    """The canonical text (``_ts_fmt``) of a timestamp-millis value."""
    days, rem = divmod(ms, _MS_PER_DAY)
    secs, milli = divmod(rem, 1000)
    hours, secs = divmod(secs, 3600)
    minutes, secs = divmod(secs, 60)
    return f"{_day_text(days, cache)}T{hours:02d}:{minutes:02d}:{secs:02d}.{milli:03d}Z"


def amount_text_of_unscaled(unscaled: int, scale: int) -> str:
    """The canonical text (``money_str``) of a decimal ``unscaled x 10**-scale``."""
    if unscaled == 0:
        return "0"
    whole, frac = divmod(-unscaled if unscaled < 0 else unscaled, 10**scale)
    text = str(whole) if frac == 0 else f"{whole}.{frac:0{scale}d}".rstrip("0")
    return "-" + text if unscaled < 0 else text


def _varint_rest(d: bytes, p: int, first: int) -> tuple[int, int]:
    """The unsigned value of a varint whose first byte (at ``p - 1``) was ``first`` (with
    its continuation bit set), and the position after it; at most 64 bits."""
    n = first & 127
    shift = 7
    while True:
        b = d[p]
        p += 1
        n |= (b & 127) << shift
        if b < 128:
            break
        shift += 7
        if shift > 63:
            raise Unreadable("found a varint longer than 10 bytes")
    if n >> 64:
        raise Unreadable("found a varint of more than 64 bits")
    return n, p


# ------------------------------------------------------------------------ code emitters
#
# The generated code keeps the body in ``d`` (bytes), the read position in ``p`` and the
# body's end in ``end``.  Every emitter appends statements that leave its value in a named
# local; a malformed body fails with an IndexError/ValueError/UnicodeDecodeError or an
# explicit ``raise Unreadable``, all of which the wrapper turns into Unreadable.


class _Gen:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "Unreadable": Unreadable,
            "Rejected": Rejected,
            "_MISSING": _MISSING,
            "_ts": ts_text_of_millis,
            "_amount": amount_text_of_unscaled,
            "_uuid_ok": _UUID_TEXT.fullmatch,
            "_days": {},
            "_from_bytes": int.from_bytes,
            "_varint": _varint_rest,
        }
        self._n = 0

    def var(self, prefix: str = "v") -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any, prefix: str = "K") -> str:
        name = self.var(prefix)
        self.consts[name] = value
        return name

    def emit(self, ind: int, code: str) -> None:
        self.lines += ["    " * ind + line for line in code.split("\n")]

    def resolve(self, t: Any) -> Any:
        if isinstance(t, str) and t in self.named:
            return self.named[t]
        return t

    # --- primitives ---------------------------------------------------------------

    def long(self, ind: int, target: str) -> None:
        """A zigzag varint (Avro int and long); at most 64 bits, like fastavro's reader."""
        self.emit(
            ind,
            f"""b = d[p]
p += 1
if b > 127:
    b, p = _varint(d, p, b)
{target} = (b >> 1) ^ -(b & 1)""",
        )

    def raw_bytes(self, ind: int, target: str, *, text: bool = False) -> None:
        """Avro bytes (a length, then the bytes), or with ``text`` a UTF-8 string."""
        length = self.var("n")
        self.long(ind, length)
        self.emit(
            ind,
            f"""e = p + {length}
if {length} < 0 or e > end: raise Unreadable
{target} = d[p:e]{".decode()" if text else ""}
p = e""",
        )

    def string(self, ind: int, target: str) -> None:
        self.raw_bytes(ind, target, text=True)

    def index(self, ind: int, target: str, count: int) -> None:
        self.long(ind, target)
        self.emit(ind, f"if not 0 <= {target} < {count}: raise Unreadable")

    def raw(self, ind: int, t: Any, target: str) -> None:
        """A value with no model rule: what fastavro returns for it (no logical types)."""
        t = self.resolve(t)
        kind = t.get("type") if isinstance(t, dict) else t
        if isinstance(t, dict) and "logicalType" in t:
            raise _Unsupported(f"logical type {t['logicalType']} without a model rule")
        if kind in ("long", "int"):
            self.long(ind, target)
        elif kind == "string":
            self.string(ind, target)
        elif kind == "bytes":
            self.raw_bytes(ind, target)
        elif kind == "boolean":
            self.emit(ind, f"b = d[p]\np += 1\nif b > 1: raise Unreadable\n{target} = b == 1")
        elif kind == "null":
            self.emit(ind, f"{target} = None")
        elif kind == "enum":
            symbols = self.const(tuple(t["symbols"]), "S")
            i = self.var("i")
            self.index(ind, i, len(t["symbols"]))
            self.emit(ind, f"{target} = {symbols}[{i}]")
        else:
            raise _Unsupported(f"Avro type {kind!r}")

    def blocks(self, ind: int, body: Callable[[int], None]) -> None:
        """Avro array/map blocks; ``body(ind)`` reads one item."""
        count, k = self.var("c"), self.var("k")
        self.emit(ind, "while True:")
        self.long(ind + 1, count)
        self.emit(
            ind + 1,
            f"if {count} == 0: break\nif {count} < 0:\n    {count} = -{count}",
        )
        self.long(ind + 2, self.var("size"))
        self.emit(ind + 1, f"for {k} in range({count}):")
        body(ind + 2)

    # --- values with their model rule ----------------------------------------------

    def value(self, ind: int, t: Any, ann: Any, meta: list[Any], target: str) -> None:
        """Read a value of Avro type ``t`` into ``target`` as the fast path converts a
        field annotated ``ann`` (with ``meta``), or raise Unreadable where it rejects."""
        t = self.resolve(t)
        base, flat, optional = _flat_meta(ann, meta)
        if isinstance(t, list):
            if len(t) == 2 and "null" in t:
                i = self.var("i")
                self.index(ind, i, 2)
                null_first = t[0] == "null"
                other = t[1] if null_first else t[0]
                self.emit(ind, f"if {i} == {0 if null_first else 1}:")
                if optional:
                    self.emit(ind + 1, f"{target} = None")
                else:
                    self.emit(ind + 1, "raise Unreadable")
                self.emit(ind, "else:")
                self.value(ind + 1, other, base, flat, target)
                return
            raise _Unsupported("a union other than [null, T]")
        kind = t.get("type") if isinstance(t, dict) else t
        logical = t.get("logicalType") if isinstance(t, dict) else None
        origin = get_origin(base)
        if kind == "record":
            if not (isinstance(base, type) and issubclass(base, BaseModel)):
                raise _Unsupported(f"record {t['name']} for {base!r}")
            self.record(ind, t, base, target)
        elif kind == "array":
            if origin is not tuple:
                raise _Unsupported(f"array for {base!r}")
            item_ann = get_args(base)[0]
            item = self.var("x")
            self.emit(ind, f"{target} = []")

            def array_item(i: int) -> None:
                self.value(i, t["items"], item_ann, [], item)
                self.emit(i, f"{target}.append({item})")

            self.blocks(ind, array_item)
        elif kind == "map":
            if origin is not dict:
                raise _Unsupported(f"map for {base!r}")
            key_ann, val_ann = get_args(base)
            key, val = self.var("key"), self.var("x")
            self.emit(ind, f"{target} = {{}}")

            def map_item(i: int) -> None:
                self.value(i, "string", key_ann, [], key)
                self.value(i, t["values"], val_ann, [], val)
                self.emit(i, f"{target}[{key}] = {val}")

            self.blocks(ind, map_item)
        elif logical == "uuid" and kind == "string" and base is UUID:
            # fastavro builds UUID(text); the fast path writes str() of it: equal to the
            # text exactly when the text is canonical (anything else: the general way)
            self.string(ind, target)
            self.emit(ind, f"if _uuid_ok({target}) is None: raise Unreadable")
        elif logical == "timestamp-millis" and kind == "long" and _validator(flat) is _validate_ts:
            ms = self.var("ms")
            self.long(ind, ms)
            self.emit(ind, f"{target} = _ts({ms}, _days)")
        elif (
            logical == "decimal"
            and kind == "bytes"
            and _validator(flat) is _validate_amount
            and t.get("precision") == _MAX_INTEGER_DIGITS + t.get("scale", 0)
        ):
            raw = self.var("raw")
            self.raw_bytes(ind, raw)
            unscaled = self.var("u")
            self.emit(
                ind,
                f"""if not {raw}: raise Unreadable
{unscaled} = _from_bytes({raw}, "big", signed=True)
if not -{_MAX_UNSCALED} < {unscaled} < {_MAX_UNSCALED}: raise Unreadable
{target} = _amount({unscaled}, {int(t.get("scale", 0))})""",
            )
        else:
            self.raw(ind, t, target)
            check = _inline_check(base, flat, self.consts, self._n)
            self._n += 1
            if check is None:
                conv = self.const(_compile(base, flat), "C")
                check = f"x = {conv}(x)"
            self.emit(ind, f"x = {target}\n{check}\n{target} = x")

    def record(self, ind: int, t: dict[str, Any], cls: type[BaseModel], target: str) -> None:
        """A record read as the fast path converts a dict for model ``cls``: the fields'
        values in Avro order, then the object in the model's field order (nulls left out)."""
        fields = cls.model_fields
        avro = {f["name"]: f["type"] for f in t["fields"]}
        if set(avro) != set(fields):
            raise _Unsupported(f"record {t['name']}: fields differ from {cls.__name__}")
        local = {name: self.var("f") for name in avro}
        for name, ftype in avro.items():
            info = fields[name]
            if cls is TraceEvent and name == "payload":
                self.payload(ind, ftype, local["type"], local[name])
                continue
            # every field is on the wire, so a model default never applies
            self.value(ind, ftype, info.annotation, list(info.metadata), local[name])
        self.emit(ind, f"{target} = {{}}")
        for name, info in fields.items():
            _, _, optional = _flat_meta(info.annotation, list(info.metadata))
            if optional:
                self.emit(ind, f"if {local[name]} is not None: {target}[{name!r}] = {local[name]}")
            elif not (cls is TraceEvent and name == "payload"):
                self.emit(ind, f"{target}[{name!r}] = {local[name]}")
        if cls is TraceEvent:
            self.emit(ind, f"{target}['payload'] = {local['payload']}")

    def payload(self, ind: int, t: Any, etype: str, target: str) -> None:
        """The payload union: the branch must be the record of the event's type."""
        if not isinstance(t, list):
            raise _Unsupported("a payload that is not a union")
        models = {cls.__name__: (etype.value, cls) for etype, cls in PAYLOAD_TYPES.items()}
        i = self.var("i")
        self.index(ind, i, len(t))
        for k, branch in enumerate(t):
            branch = self.resolve(branch)
            self.emit(ind, f"{'if' if k == 0 else 'elif'} {i} == {k}:")
            short = branch.get("name", "").rsplit(".", 1)[-1] if isinstance(branch, dict) else ""
            found = models.get(short)
            if found is None or branch.get("type") != "record":
                self.emit(ind + 1, "raise Unreadable")
                continue
            self.emit(ind + 1, f"if {etype} != {found[0]!r}: raise Unreadable")
            self.record(ind + 1, branch, found[1], target)


def _validator(meta: list[Any]) -> Any:
    return next((m.func for m in meta if isinstance(m, PlainValidator)), None)


def compile_reader(schema: dict[str, Any], kind: str) -> BodyReader | None:
    """A reader of bodies written with the fastavro-parsed ``schema`` (a TraceEvent or an
    EventBatch record), or None where the schema holds what this module cannot compile."""
    gen = _Gen(schema.get("__named_schemas", {}))
    try:
        if kind == "event":
            gen.emit(0, "def read_body(d, p):\n    end = len(d)")
            gen.record(1, schema, TraceEvent, "out")
            gen.emit(1, "if p != end: raise Unreadable\nreturn [out]")
        else:
            fields = {f["name"]: f["type"] for f in schema["fields"]}
            events = gen.resolve(fields.get("events"))
            if set(fields) != {"run_id", "events"} or not isinstance(events, dict):
                raise _Unsupported("an EventBatch other than {run_id, events: [TraceEvent]}")
            gen.emit(0, "def read_body(d, p):\n    end = len(d)")
            gen.raw(1, fields["run_id"], "run_id")
            gen.emit(1, "out = []")

            def event(ind: int) -> None:
                gen.record(ind, gen.resolve(events["items"]), TraceEvent, "ev")
                gen.emit(ind, "if ev['run_id'] != run_id: raise Unreadable\nout.append(ev)")

            gen.blocks(1, event)
            gen.emit(1, "if p != end: raise Unreadable\nreturn out")
    except _Unsupported:
        return None
    namespace = dict(gen.consts)
    exec(compile("\n".join(gen.lines), f"<fastread {kind}>", "exec"), namespace)
    inner: Callable[[bytes, int], list[dict[str, Any]]] = namespace["read_body"]

    def read(data: bytes, start: int) -> list[dict[str, Any]]:
        try:
            return inner(data, start)
        except Exception:  # whatever failed, the general decode has the answer
            raise Unreadable from None

    return read
