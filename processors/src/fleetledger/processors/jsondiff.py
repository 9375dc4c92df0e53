"""JSON values compared path by path, with RFC 6901 pointers.

Recorded ``inputs``/``outputs`` are JSON text inside the events; :func:`content_value`
turns such a text into the value it holds (or keeps plain text as a string).  :func:`diff`
lists where two values differ, each :class:`Change` at a JSON Pointer with a kind:

``changed``
    a scalar differs, or the two values are of different JSON types;
``added`` / ``removed``
    an object member or list item present on one side only;
``reordered``
    two lists holding the same items (as a multiset) in a different order: an unordered
    collection (a set, a dict's keys) serialized in whatever order it iterated in;
``precision``
    two numbers that differ by less than a relative ``1e-9`` (or an absolute ``1e-12``):
    float noise, such as a sum taken in another order.

Changes come out in document order (object members by key, list items by index), so the
same two values always give the same list.  Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ABS_TOLERANCE",
    "REL_TOLERANCE",
    "Change",
    "ChangeKind",
    "content_value",
    "diff",
    "escape_token",
    "get_pointer",
    "is_number",
    "short",
]

ChangeKind = Literal["changed", "added", "removed", "reordered", "precision"]
#: Numbers closer than this (relative to the larger one) differ by precision only.
REL_TOLERANCE = 1e-9
#: ... or closer than this in absolute terms.
ABS_TOLERANCE = 1e-12
_MISSING: Any = object()


@dataclass(frozen=True)
class Change:
    """One difference between two JSON values, at ``pointer`` (RFC 6901; ``""`` = root)."""

    pointer: str
    kind: ChangeKind
    before: Any = None  # absent for ``added``
    after: Any = None  # absent for ``removed``

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pointer": self.pointer, "kind": self.kind}
        if self.kind != "added":
            out["before"] = _jsonable(self.before)
        if self.kind != "removed":
            out["after"] = _jsonable(self.after)
        return out

    def describe(self) -> str:
        """``/a/0: 'x' -> 'y'`` (one line, values shortened)."""
        at = self.pointer or "/"
        if self.kind == "added":
            return f"{at}: added {short(self.after)}"
        if self.kind == "removed":
            return f"{at}: removed {short(self.before)}"
        if self.kind == "reordered":
            return (
                f"{at}: same items in another order ({short(self.before)} -> {short(self.after)})"
            )
        what = " (precision)" if self.kind == "precision" else ""
        return f"{at}: {short(self.before)} -> {short(self.after)}{what}"


def _jsonable(value: Any) -> Any:
    """Floats as their shortest repr text (so a report can be canonical JSON)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def short(value: Any, width: int = 60) -> str:
    """A value as compact JSON, cut to ``width`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def content_value(text: str | None) -> Any:
    """The value recorded ``inputs``/``outputs`` text holds: its JSON value, or the text
    itself when it is not JSON; None for None.  NaN and infinities (which JSON text from
    Python may hold) are kept as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=str)
    except ValueError:
        return text


def escape_token(token: str) -> str:
    """One reference token of a JSON Pointer (``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return token.replace("~", "~0").replace("/", "~1")


def get_pointer(value: Any, pointer: str) -> Any:
    """The value at ``pointer``; raises KeyError when there is none."""
    if pointer == "":
        return value
    if not pointer.startswith("/"):
        raise KeyError(pointer)
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise KeyError(pointer)
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return False
    return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values (``1 == 1.0``, but ``True`` is not ``1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if is_number(a) and is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _walk(a: Any, b: Any, at: str) -> Iterator[Change]:
    if _same(a, b):
        return
    if is_number(a) and is_number(b):
        yield Change(at, "precision" if _close(float(a), float(b)) else "changed", a, b)
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            here = f"{at}/{escape_token(key)}"
            if key not in b:
                yield Change(here, "removed", a[key], None)
            elif key not in a:
                yield Change(here, "added", None, b[key])
            else:
                yield from _walk(a[key], b[key], here)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) == len(b) and sorted(map(_sort_key, a)) == sorted(map(_sort_key, b)):
            yield Change(at, "reordered", a, b)
            return
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from _walk(x, y, f"{at}/{i}")
        for i in range(len(b), len(a)):
            yield Change(f"{at}/{i}", "removed", a[i], None)
        for i in range(len(a), len(b)):
            yield Change(f"{at}/{i}", "added", None, b[i])
        return
    yield Change(at, "changed", a, b)


def diff(before: Any, after: Any, *, limit: int | None = None) -> list[Change]:
    """Where ``after`` differs from ``before`` (document order; the first ``limit``)."""
    out: list[Change] = []
    for change in _walk(before, after, ""):
        out.append(change)
        if limit is not None and len(out) >= limit:
            break
    return out
