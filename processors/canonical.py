"""Canonical JSON (RFC 8785, JCS) and the hashes built on it.

What gets hashed and signed is defined here, apart from the Avro wire format:
``canonical_bytes(obj)`` is the JCS serialization of a JSON value made of dicts, lists,
strings, ints, bools and None.  Floats are refused: no hashed or billed field is a float.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
import rfc8785

from ..errors import ProcessorError

CHAIN_DOMAIN = b"fleetledger/chain/v1"


def _refuse_floats(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise ProcessorError(f"found float {value!r} at {path}; hashed data holds no floats")
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_floats(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_floats(v, f"{path}[{i}]")


_FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
# A float token in orjson's compact output: after ':' ',' '[' or at the start, with a
# fraction or an exponent, before ',' ']' '}' or the end.  It may also match inside a
# string (then the precise path decides), but it never misses a float.
_FLOAT_TOKEN = re.compile(rb"(?:^|[:,\[])-?\d+(?:\.\d+(?:[eE][+-]?\d+)?|[eE][+-]?\d+)(?=[,\]}]|$)")
# UTF-8 lead bytes of U+E000..U+10FFFF: the only characters whose UTF-16 order (JCS key
# order) differs from the code point order orjson sorts by.
_ORDER_SENSITIVE = re.compile(rb"[\xee-\xf4]")


def reference_canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 by the ``rfc8785`` reference implementation (floats refused)."""
    _refuse_floats(obj, "$")
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ProcessorError(f"cannot canonicalize value: {exc}") from exc


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 canonical JSON of ``obj``; raises ProcessorError on floats or non-JSON values.

    orjson with sorted keys produces JCS bytes for every value without floats whose
    strings stay below U+E000 (string escapes are identical; integers are limited to
    +-2^53 as JCS requires).  Anything else - a possible float, a ``null`` (orjson writes
    NaN as null), a character at or above U+E000 - takes the reference path, so the
    result is byte-identical to ``rfc8785.dumps`` whichever path ran.
    """
    try:
        out = orjson.dumps(obj, option=_FAST_OPTIONS)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise ProcessorError(
            f"cannot canonicalize value: {exc}; expected JSON values with integers within +-2^53"
        ) from exc
    if b"null" in out or _FLOAT_TOKEN.search(out) or _ORDER_SENSITIVE.search(out):
        return reference_canonical_bytes(obj)
    return out


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def event_hash(obj: Any) -> bytes:
    """H(canonical JSON of the event object)."""
    return hashlib.sha256(canonical_bytes(obj)).digest()


def genesis(run_id: str) -> bytes:
    """The chain's starting value: H("fleetledger/chain/v1" || 0x00 || utf8(run_id))."""
    return hashlib.sha256(CHAIN_DOMAIN + b"\x00" + run_id.encode("utf-8")).digest()


def link(prev: bytes, ev_hash: bytes) -> bytes:
    """Entry hash: H(previous entry hash || event hash), raw 32-byte digests."""
    return hashlib.sha256(prev + ev_hash).digest()
