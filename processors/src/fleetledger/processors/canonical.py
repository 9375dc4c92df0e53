"""Canonical JSON (RFC 8785, JCS) and the hashes built on it.

What gets hashed and signed is defined here, apart from the Avro wire format:
``canonical_bytes(obj)`` is the JCS serialization of a JSON value made of dicts, lists,
strings, ints, bools and None.  Floats are refused: no hashed or billed field is a float.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import orjson
import rfc8785

from fleetledger.kernel.errors import ProcessorError

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
# UTF-8 lead bytes of U+E000..U+10FFFF: the only characters whose UTF-16 order (JCS key
# order) differs from the code point order orjson sorts by.
_ORDER_SENSITIVE = re.compile(rb"[\xee-\xf4]")


def _no_float(value: str) -> Any:
    raise ProcessorError(f"found number {value}; hashed data holds no floats, expected an integer")


def load_json(data: bytes | str) -> Any:
    """Parse JSON from outside (a bundle file, an envelope) for hashing: floats, NaN and
    Infinity are refused, so nothing read this way can reach ``canonical_bytes`` with a float.
    """
    try:
        return json.loads(data, parse_float=_no_float, parse_constant=_no_float)
    except ValueError as exc:
        raise ProcessorError(f"not JSON: {exc}") from exc


def reference_canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 by the ``rfc8785`` reference implementation (floats refused)."""
    _refuse_floats(obj, "$")
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ProcessorError(f"cannot canonicalize value: {exc}") from exc


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 canonical JSON of a float-free JSON value.

    Precondition: ``obj`` holds no floats.  Event objects from the contract (whose models
    refuse floats) and everything built from them meet it; JSON from outside must be read
    with :func:`load_json`, which refuses floats.  Use :func:`checked_canonical_bytes` for
    values of unknown origin.

    orjson with sorted keys produces JCS bytes for every such value whose strings stay
    below U+E000 (string escapes are identical; integers are limited to the I-JSON range
    as JCS requires).  Output with a character at or above U+E000 takes the reference
    path, so the result is byte-identical to ``rfc8785.dumps`` either way.
    """
    try:
        out = orjson.dumps(obj, option=_FAST_OPTIONS)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise ProcessorError(
            f"cannot canonicalize value: {exc}; expected JSON values with integers within +-2^53"
        ) from exc
    if out.isascii() or _ORDER_SENSITIVE.search(out) is None:
        return out
    return reference_canonical_bytes(obj)


def checked_canonical_bytes(obj: Any) -> bytes:
    """``canonical_bytes`` for values of unknown origin: floats are refused first."""
    _refuse_floats(obj, "$")
    return canonical_bytes(obj)


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
