"""Merkle tree of RFC 6962 / RFC 9162 (section 2.1) over SHA-256: roots and inclusion proofs.

``leaf = H(0x00 || data)``, ``node = H(0x01 || left || right)``; a tree of ``n > 1``
leaves splits at ``k``, the largest power of two smaller than ``n``.  The empty tree's
root is ``H("")``.  Pure functions over bytes; nothing here knows about bundles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fleetledger.kernel.errors import VerificationError

ALGORITHM = "rfc9162-sha256"
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves.

    Computed bottom-up: pair neighbours level by level and carry an unpaired last node up
    unchanged.  This equals the recursive definition (split at the largest power of two
    below n) and does n - 1 node hashes without slicing.
    """
    if not hashes:
        return hashlib.sha256(b"").digest()
    level = list(hashes)
    sha = hashlib.sha256
    while len(level) > 1:
        odd = level[-1] if len(level) % 2 else None
        level = [
            sha(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if odd is not None:
            level.append(odd)
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 2.1.1 over the leaves' data."""
    return root_of_leaf_hashes([leaf_hash(d) for d in leaves])


def inclusion_path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1 (audit path), over hashed leaves, leaf first."""
    n = len(hashes)
    if not 0 <= index < n:
        raise VerificationError(
            "proof", f"found leaf index {index}, expected 0 <= index < tree size {n}"
        )
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_path(hashes[:k], index), root_of_leaf_hashes(hashes[k:])]
    return [*inclusion_path(hashes[k:], index - k), root_of_leaf_hashes(hashes[:k])]


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root an audit path leads to (RFC 9162 2.1.3.2); raises if the path cannot fit."""
    if not 0 <= index < size:
        raise VerificationError(
            "proof", f"found leaf index {index}, expected 0 <= index < tree size {size}"
        )
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise VerificationError(
                "proof",
                f"found an audit path of {len(path)} hashes, too long for leaf "
                f"{index} of a tree of {size}",
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(
            "proof",
            f"found an audit path of {len(path)} hashes, too short for leaf "
            f"{index} of a tree of {size}",
        )
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``path`` proves hashed ``leaf`` at ``index`` of a ``size`` tree with ``root``."""
    try:
        return root_from_inclusion(index, size, leaf, path) == root
    except VerificationError:
        return False
