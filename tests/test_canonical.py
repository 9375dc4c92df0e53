"""The fast canonicalizer is byte-identical to the rfc8785 reference on contract values."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetledger.kernel.errors import ProcessorError
from fleetledger.processors.bundle import assemble, assemble_encoded, bundle_digest, sealed
from fleetledger.processors.canonical import canonical_bytes, checked_canonical_bytes, load_json
from fleetledger.processors.core import CoreConfig

from . import eventdicts as ev
from .runbuilder import entries

LIMIT = 2**53 - 1  # I-JSON safe integers, as JCS requires
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-LIMIT, max_value=LIMIT)
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"]))
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(alphabet=st.characters(blacklist_categories=["Cs"])), children, max_size=5
        )
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(documents)
def test_identical_to_rfc8785_on_generated_documents(doc: Any) -> None:
    assert canonical_bytes(doc) == rfc8785.dumps(doc)


@pytest.mark.parametrize(
    "doc",
    [
        {"\ue000": 1, "\U0001f600": 2, "a": 3},  # UTF-16 order differs from code point order
        {"k": "\u2028\u2029\x7f\x00\x1f", "ratio:1.5,": [":2e5]"]},
        ev.simple_run()[1],
        [LIMIT, -LIMIT, 0, True, False, None],
    ],
)
def test_identical_on_tricky_values(doc: Any) -> None:
    assert canonical_bytes(doc) == rfc8785.dumps(doc)


@pytest.mark.parametrize("bad", [1.5, {"a": [0.1]}, float("nan"), {"x": float("inf")}, 2**53])
def test_floats_and_out_of_range_integers_are_refused(bad: Any) -> None:
    with pytest.raises(ProcessorError, match=r"float|2\^53"):
        checked_canonical_bytes(bad)


@pytest.mark.parametrize("text", ['{"a": 1.5}', "[1e3]", '{"x": NaN}', "[-Infinity]", "[1.0]"])
def test_json_from_outside_cannot_carry_floats(text: str) -> None:
    with pytest.raises(ProcessorError, match="no floats"):
        load_json(text)


def test_out_of_range_integers_are_refused_on_the_fast_path() -> None:
    with pytest.raises(ProcessorError, match=r"2\^53"):
        canonical_bytes({"n": 2**53})


bundle_members = st.dictionaries(
    st.sampled_from(["bundle_version", "chain", "events", "merkle", "run", "totals", "blobs"]),
    documents,
    max_size=7,
)


@settings(max_examples=300, deadline=None)
@given(bundle_members)
def test_sealing_a_bundle_gives_the_reference_digest_and_bytes(members: dict[str, Any]) -> None:
    bundle = {**members, "integrity": {"digest_algorithm": "sha256", "canonicalization": "RFC8785"}}
    body = rfc8785.dumps(bundle)
    data = sealed(bundle)
    assert bundle["integrity"]["digest"] == hashlib.sha256(body).hexdigest()
    assert data == rfc8785.dumps(bundle)


def test_an_assembled_bundle_s_bytes_are_its_canonical_json_and_digest() -> None:
    events = ev.simple_run("run-\ue000", n_calls=4)
    events[0]["agent_id"] = "agent \U0001f600 \ue000 \u2028"  # UTF-16 order differs here
    document, data = assemble_encoded("run-\ue000", entries(events), CoreConfig())
    assert data == rfc8785.dumps(document)
    assert document["integrity"]["digest"] == bundle_digest(document)
    assert assemble("run-\ue000", entries(events), CoreConfig()) == document
