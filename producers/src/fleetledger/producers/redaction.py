"""What of a call's inputs and outputs may leave the process: the redaction policy.

A recorder applies one :class:`RedactionPolicy` to every ``inputs``/``outputs`` it
records - through the manual API, the OpenAI/Anthropic instrumentation and the OTLP
receiver alike - before anything is serialized, hashed, written to the blob store or
sent:

* the value of every object key matching one of ``keys`` (full match, case-insensitive;
  by default API keys, authorization headers, cookies, passwords, secrets, tokens) is
  replaced by ``marker``;
* every match of one of ``values`` inside a string (e.g. :data:`EMAIL`) is replaced by
  ``marker``;
* with ``content="hash"`` the (redacted) content is not recorded at all: the event keeps
  only its SHA-256, size and media type (``inputs_ref``/``outputs_ref``).

Every redaction is marked in the event's ``redactions``: ``"inputs"`` when the whole field
was withheld, ``"inputs/messages/0/content"`` (the field name, then an RFC 6901 JSON
pointer) where one value was replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fleetledger.kernel.errors import ConfigError

__all__ = [
    "DEFAULT_SECRET_KEYS",
    "EMAIL",
    "MARKER",
    "Redacted",
    "RedactionPolicy",
]

#: Object keys whose values are secrets (regular expressions, matched in full, any case).
DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    r"api[-_]?key",
    r"x-api-key",
    r"(proxy-)?authorization",
    r"(set-)?cookie",
    r"passw(or)?d",
    r"(client[-_])?secret",
    r"(access|refresh|id|session|auth)[-_]?token",
    r"private[-_]?key",
)
#: E-mail addresses, for ``RedactionPolicy(values=(EMAIL,))``.
EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
#: What replaces a redacted value.
MARKER = "[redacted]"


@dataclass(frozen=True)
class Redacted:
    """One field after the policy: JSON text (or None), the text's pointers redacted."""

    text: str | None
    redactions: tuple[str, ...]
    withheld: bool = False  # content="hash": only the hash of ``text`` may be recorded


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class RedactionPolicy:
    """Recorder-level rules for inputs and outputs (see the module docstring)."""

    content: Literal["keep", "hash"] = "keep"
    keys: tuple[str, ...] = DEFAULT_SECRET_KEYS
    values: tuple[str, ...] = ()
    marker: str = MARKER
    _key_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _value_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _key_hits: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.content not in ("keep", "hash"):
            raise ConfigError(
                f"redaction content: found {self.content!r}, expected 'keep' or 'hash'"
            )
        try:
            key_re = (
                re.compile("|".join(f"(?:{k})" for k in self.keys), re.IGNORECASE)
                if self.keys
                else None
            )
            value_re = (
                re.compile("|".join(f"(?:{v})" for v in self.values)) if self.values else None
            )
        except re.error as exc:
            raise ConfigError(f"redaction pattern: {exc}; expected regular expressions") from exc
        object.__setattr__(self, "_key_re", key_re)
        object.__setattr__(self, "_value_re", value_re)

    @classmethod
    def keep_all(cls) -> RedactionPolicy:
        """Record everything as given (no key or value redaction)."""
        return cls(keys=(), values=())

    # -- applying

    def apply(self, value: Any, field_name: str) -> Redacted:
        """Redact one ``inputs``/``outputs`` value (a JSON value, or text).

        A string that is JSON text is redacted as the JSON value it holds and stays
        text; other strings are treated as one string value.  Mappings and lists are
        serialized with sorted keys.
        """
        if value is None:
            return Redacted(None, ())
        found: list[str] = []
        if isinstance(value, str):
            if not self._active():
                return self._finish(value, found, field_name)
            try:
                parsed = json.loads(value)
            except ValueError:  # plain text: one string value
                clean = self._walk(value, [field_name], found)
                return self._finish(clean if found else value, found, field_name)
            clean = self._walk(parsed, [field_name], found)
            if not found:  # nothing to redact: the text as given
                return self._finish(value, found, field_name)
            return self._finish(_dumps(clean, field_name), found, field_name)
        clean = self._walk(value, [field_name], found) if self._active() else value
        return self._finish(_dumps(clean, field_name), found, field_name)

    def _active(self) -> bool:
        return self._key_re is not None or self._value_re is not None

    def _finish(self, text: str, found: list[str], field_name: str) -> Redacted:
        if self.content == "hash":
            return Redacted(text, (field_name,), withheld=True)
        return Redacted(text, tuple(found))

    def _secret_key(self, key: str) -> bool:
        hit = self._key_hits.get(key)
        if hit is None:
            hit = self._key_re is not None and self._key_re.fullmatch(key) is not None
            if len(self._key_hits) < 4096:
                self._key_hits[key] = hit
        return hit

    def _walk(self, value: Any, path: list[Any], found: list[str]) -> Any:
        """``value`` with the policy applied; the very same object when nothing changed."""
        kind = type(value)
        if kind is str:
            if self._value_re is not None and self._value_re.search(value):
                found.append(_pointer(path, None))
                return self._value_re.sub(self.marker, value)
            return value
        if kind is dict or (kind not in _PLAIN and isinstance(value, Mapping)):
            out: dict[Any, Any] | None = None
            for k, v in value.items():
                if v is not None and type(k) is str and self._secret_key(k):
                    new: Any = self.marker
                    found.append(_pointer(path, k))
                elif type(v) in _PLAIN:
                    continue
                else:
                    path.append(k)
                    new = self._walk(v, path, found)
                    path.pop()
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            if out is None and kind is not dict:
                return dict(value)
            return value if out is None else out
        if kind is list or kind is tuple:
            items: list[Any] | None = None
            for i, v in enumerate(value):
                if type(v) in _PLAIN:
                    continue
                path.append(i)
                new = self._walk(v, path, found)
                path.pop()
                if new is not v:
                    if items is None:
                        items = list(value)
                    items[i] = new
            return value if items is None else items
        return value


#: Types that hold nothing to redact (strings are checked against the value patterns).
_PLAIN = frozenset({int, float, bool, type(None)})


def _pointer(path: list[Any], last: Any) -> str:
    """``<field>/<RFC 6901 tokens>`` of a place in a field's value."""
    parts = [str(path[0]), *(_escape(str(p)) for p in path[1:])]
    if last is not None:
        parts.append(_escape(str(last)))
    return "/".join(parts)


_NOT_JSON: Any = object()


def _dumps(value: Any, field_name: str) -> str:
    from fleetledger.kernel.errors import EventValidationError

    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str
        )
    except (TypeError, ValueError) as exc:
        raise EventValidationError(
            f"{field_name}: found {type(value).__name__} that is not JSON-serializable ({exc}), "
            "expected JSON text or a JSON-serializable mapping/list"
        ) from exc


def merge_redactions(*groups: Sequence[str]) -> tuple[str, ...] | None:
    """The ``redactions`` field: every marker once, in order; None when there are none."""
    out: list[str] = []
    for group in groups:
        for item in group:
            if item not in out:
                out.append(item)
    return tuple(out) if out else None
