"""The published RFC 8785 test vectors (tests/data/jcs, see its README and LICENSE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from fleetledger.kernel.errors import ProcessorError
from fleetledger.processors.canonical import canonical_bytes, checked_canonical_bytes, load_json

from .evidence_fixtures import simulated_messages

DATA = Path(__file__).parent / "data" / "jcs"
NAMES = sorted(p.name for p in (DATA / "input").glob("*.json"))


def has_float(v: Any) -> bool:
    if isinstance(v, float):
        return True
    if isinstance(v, dict):
        return any(has_float(x) for x in v.values())
    if isinstance(v, list):
        return any(has_float(x) for x in v)
    return False


def test_all_vectors_present() -> None:
    assert NAMES == [
        "arrays.json",
        "french.json",
        "structures.json",
        "unicode.json",
        "values.json",
        "weird.json",
    ]
    assert (DATA / "README.md").exists() and (DATA / "LICENSE").exists()


@pytest.mark.parametrize("name", NAMES)
def test_vector(name: str) -> None:
    doc = json.loads((DATA / "input" / name).read_bytes())
    expected = (DATA / "output" / name).read_bytes()
    # the vectors are read right: the reference gives exactly the published bytes
    assert rfc8785.dumps(doc) == expected
    if has_float(doc):
        # hashed data holds no floats: refused on the checked path and when read from outside
        with pytest.raises(ProcessorError, match="float"):
            checked_canonical_bytes(doc)
        with pytest.raises(ProcessorError, match="float"):
            load_json((DATA / "input" / name).read_bytes())
    else:
        assert canonical_bytes(doc) == expected
        assert checked_canonical_bytes(load_json((DATA / "input" / name).read_bytes())) == expected


def test_float_free_vectors_are_the_majority() -> None:
    docs = [json.loads((DATA / "input" / n).read_bytes()) for n in NAMES]
    assert sum(not has_float(d) for d in docs) >= 4


def test_every_simulated_event_is_identical_to_rfc8785() -> None:
    from fleetledger.schemas import Codec

    codec = Codec()
    count = 0
    for _key, value in simulated_messages(40, 11):
        for event in codec.decode(value):
            obj = event.to_json_obj()
            assert canonical_bytes(obj) == rfc8785.dumps(obj)
            count += 1
    assert count > 1000
