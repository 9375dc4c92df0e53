"""Canonical JSON (RFC 8785, JCS) and the hashes built on it.

What gets hashed and signed is defined here, apart from the Avro wire format:
``canonical_bytes(obj)`` is the JCS serialization of a JSON value made of dicts, lists,
strings, ints, bools and None.  Floats are refused: no hashed or billed field is a float.
"""

from __future__ import annotations

import hashlib
from typing import Any

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


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 canonical JSON of ``obj``; raises ProcessorError on floats or non-JSON values."""
    _refuse_floats(obj, "$")
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ProcessorError(f"cannot canonicalize value: {exc}") from exc


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
