"""RFC 6962 / 9162 Merkle tree: the published roots and audit paths, and every proof."""

from __future__ import annotations

import hashlib

import pytest

from fleetledger.kernel.errors import VerificationError
from fleetledger.processors import merkle

# The test tree of certificate-transparency (RFC 6962 reference code, merkle_test):
# eight leaves of raw data and the Merkle Tree Hash of the first n of them.
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# Audit paths published with the same tree.
PATHS = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_roots_match_the_rfc6962_reference_tree(size: int) -> None:
    assert merkle.merkle_root(LEAVES[:size]).hex() == ROOTS[size]


def test_empty_tree_and_domain_separation_by_hand() -> None:
    assert merkle.merkle_root([]) == hashlib.sha256(b"").digest()
    a, b = b"a", b"b"
    la = hashlib.sha256(b"\x00a").digest()
    lb = hashlib.sha256(b"\x00b").digest()
    assert merkle.merkle_root([a]) == la
    assert merkle.merkle_root([a, b]) == hashlib.sha256(b"\x01" + la + lb).digest()
    # three leaves split 2 + 1 (largest power of two smaller than 3), not 1 + 2
    lc = hashlib.sha256(b"\x00c").digest()
    left = hashlib.sha256(b"\x01" + la + lb).digest()
    assert merkle.merkle_root([a, b, b"c"]) == hashlib.sha256(b"\x01" + left + lc).digest()


@pytest.mark.parametrize(("index", "size"), sorted(PATHS))
def test_published_audit_paths(index: int, size: int) -> None:
    hashes = [merkle.leaf_hash(d) for d in LEAVES[:size]]
    path = merkle.inclusion_path(hashes, index)
    assert [p.hex() for p in path] == PATHS[(index, size)]
    assert merkle.verify_inclusion(index, size, hashes[index], path, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize("size", range(1, 34))
def test_every_leaf_of_every_size_proves_and_nothing_else_does(size: int) -> None:
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    root = merkle.root_of_leaf_hashes(hashes)
    for index in range(size):
        path = merkle.inclusion_path(hashes, index)
        assert merkle.verify_inclusion(index, size, hashes[index], path, root)
        # another leaf, another index, a changed path hash, a shortened path: all refused
        other = hashes[(index + 1) % size]
        if size > 1:
            assert not merkle.verify_inclusion(index, size, other, path, root)
            assert not merkle.verify_inclusion((index + 1) % size, size, hashes[index], path, root)
            bad = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]]
            assert not merkle.verify_inclusion(index, size, hashes[index], bad, root)
            assert not merkle.verify_inclusion(index, size, hashes[index], path[:-1], root)
        assert not merkle.verify_inclusion(index, size, hashes[index], [*path, root], root)


def test_index_outside_the_tree_is_refused() -> None:
    assert not merkle.verify_inclusion(3, 3, b"x" * 32, [], b"x" * 32)
    with pytest.raises(VerificationError, match="leaf index 3"):
        merkle.inclusion_path([b"x" * 32] * 3, 3)
