"""Run diffs, artifact revisions, and which revision crossed each approval boundary."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from fleetledger.kernel.errors import ReplayError, VerificationError
from fleetledger.processors.approvals import approvals, check_approvals
from fleetledger.processors.evidence import verify_bundle
from fleetledger.processors.rundiff import artifact_history, diff_artifact, diff_runs

from .runbuilder import RunBuilder


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_runs_aligned_by_step_and_position() -> None:
    a = (
        RunBuilder("a", revision="3")
        .step("plan")
        .model({"q": "hi"}, {"text": "hello"}, cost="0.02")
        .tool("search", {"q": "x"}, {"items": [1, 2]})
        .tool("render", {}, {"ok": True})
        .step("act")
        .tool("send", {"to": "a"}, {"ok": True})
        .bundle()
    )
    b = (
        RunBuilder("b", revision="4")
        .step("plan")
        .model({"q": "hi"}, {"text": "hello!"}, cost="0.03")
        .tool("lookup", {"id": 1}, {"v": 1})  # inserted: must not shift what follows
        .tool("search", {"q": "x"}, {"items": [2, 1]})
        .tool("render", {}, {"ok": True})
        .bundle()
    )
    d = diff_runs(a, b)
    assert [(p.step_id, p.label, p.status) for p in d.pairs] == [
        ("plan", "model_io openai/gpt-4.1", "changed"),
        ("plan", "tool_call `lookup`", "only_b"),
        ("plan", "tool_call `search`", "changed"),
        ("plan", "tool_call `render`", "same"),
        ("act", "tool_call `send`", "only_a"),
    ]
    assert [c.to_json() for c in d.pairs[0].changes] == [
        {
            "pointer": "/payload/outputs/text",
            "kind": "changed",
            "before": "hello",
            "after": "hello!",
        }
    ]
    assert d.pairs[2].changes[0].kind == "reordered"
    assert d.pairs[0].cost_delta == Decimal("0.01")
    assert d.cost_delta == Decimal("0.01")
    assert [(c.pointer, c.before, c.after) for c in d.workflow_changes] == [("/revision", "3", "4")]
    assert d.same_workflow and d.counts() == {"same": 1, "changed": 2, "only_a": 1, "only_b": 1}
    assert d.to_json()["counts"]["changed"] == 2


def _gated(*, late_change: bool = False, missing: bool = False) -> dict[str, object]:
    b = (
        RunBuilder("art")
        .step("plan")
        .artifact("report.md", 1, "draft one")
        .artifact("report.md", 1, "draft one", state="verified")
        .artifact("report.md", 2, "draft two", state="verified")
        .gate("g1", "approve", artifact_key="report.md", artifact_version=3 if missing else 2)
        .artifact("report.md", 2, "draft two", state="pinned")
    )
    if late_change:
        b.artifact("report.md", 2, "sneaky edit", state="pinned")
    return b.bundle()


def test_which_revision_crossed_the_approval_boundary() -> None:
    bundle = _gated()
    (ap,) = approvals(bundle)
    assert (ap.gate_id, ap.decision, ap.artifact_key, ap.artifact_version) == (
        "g1",
        "approve",
        "report.md",
        2,
    )
    assert ap.content_hash == _sha("draft two") and ap.state == "verified"
    assert ap.artifact_seq == 4 and ap.problem is None
    assert check_approvals(bundle) == 1
    verify_bundle(bundle)  # the approvals check passes inside verify


def test_an_approval_of_a_revision_never_written_fails_verify() -> None:
    bundle = _gated(missing=True)
    with pytest.raises(
        VerificationError, match=r"^approvals \(seq 6\): gate 'g1'.*no report.md v3"
    ):
        verify_bundle(bundle)


def test_content_changed_under_an_approved_version_fails_verify() -> None:
    with pytest.raises(VerificationError, match=r"report\.md v2 changed after the decision"):
        check_approvals(_gated(late_change=True))


def test_an_edit_decides_on_the_revision_shown_and_names_the_one_it_produces() -> None:
    bundle = (
        RunBuilder("edit")
        .step("write")
        .artifact("report.md", 1, "draft one")
        .gate("g1", "edit", artifact_key="report.md", artifact_version=1, resolved_version=2)
        .artifact("report.md", 2, "edited", state="verified")
        .bundle()
    )
    (ap,) = approvals(bundle)
    assert (ap.artifact_version, ap.content_hash, ap.problem) == (1, _sha("draft one"), None)
    verify_bundle(bundle)
    # an approve naming a version not yet written is still refused
    approve = (
        RunBuilder("approve")
        .step("write")
        .artifact("report.md", 1, "draft one")
        .gate("g1", "approve", artifact_key="report.md", artifact_version=1, resolved_version=2)
        .bundle()
    )
    with pytest.raises(VerificationError, match=r"no report\.md v2 before the decision"):
        verify_bundle(approve)


def test_artifact_versions_diffed() -> None:
    bundle = _gated()
    history = artifact_history(bundle, "report.md")
    assert [(r.version, r.state, len(r.decisions)) for r in history] == [
        (1, "verified", 0),
        (2, "pinned", 1),
    ]
    contents = {
        _sha("draft one"): {"title": "A", "n": 1},
        _sha("draft two"): {"title": "A", "n": 2},
    }
    d = diff_artifact(bundle, "report.md", 1, 2, content=contents.get)
    assert not d.same_content
    assert [c.pointer for c in d.metadata] == ["/content_hash", "/state", "/version"]
    assert d.content is not None and [c.to_json() for c in d.content] == [
        {"pointer": "/n", "kind": "changed", "before": 1, "after": 2}
    ]
    assert diff_artifact(bundle, "report.md", 1, 2).content is None
    with pytest.raises(ReplayError, match=r"no version 7; expected one of \[1, 2\]"):
        diff_artifact(bundle, "report.md", 1, 7)
    with pytest.raises(ReplayError, match=r"no artifact 'nope'"):
        artifact_history(bundle, "nope")
