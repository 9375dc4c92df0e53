"""Determinism findings (outputs, recordings, source, external state) and the score."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleetledger.processors.determinism import (
    BANDS,
    RULES,
    Finding,
    analyze,
    band_of,
    score_of,
)
from fleetledger.processors.sourcescan import scan_source

from .runbuilder import T0, RunBuilder


def _ids(report_findings: tuple[Finding, ...]) -> list[tuple[str, str | None]]:
    return [(f.rule_id, f.pointer) for f in report_findings]


def test_a_clean_run_scores_100() -> None:
    b = (
        RunBuilder("clean")
        .step("plan")
        .model({"q": "hi"}, {"text": "hello", "n": 0.25})
        .tool("lookup", {"id": 7}, {"name": "ada", "id": 7})
        .bundle()
    )
    report = analyze(b)
    assert report.findings == ()
    assert (report.score, report.band, report.colour) == (100, "highly deterministic", "green")


def test_output_patterns() -> None:
    now = (T0 + timedelta(milliseconds=300)).isoformat().replace("+00:00", "Z")
    b = (
        RunBuilder("patterns")
        .step("plan")
        .tool(
            "generate_report",
            {"ticket": "T-1", "ref": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"},
            {
                "generated_at": now,
                "id": "9f0c1d7e-5b3a-4c2e-8d1f-2a3b4c5d6e7f",
                "ref": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                "event": "018f4b2a-3c4d-7e5f-8a9b-0c1d2e3f4a5b",
                "total": 0.1 + 0.2,
                "token": "tok_8ZkQ2vX9pLm4Rt7Wy3Nb",
                "old": "2020-01-01T00:00:00Z",
            },
        )
        .bundle()
    )
    report = analyze(b)
    assert _ids(report.findings) == [
        ("D101", "/payload/outputs/generated_at"),
        ("D102", "/payload/outputs/id"),
        ("D103", "/payload/outputs/event"),
        ("D104", "/payload/outputs/token"),
        ("D105", "/payload/outputs/total"),
    ]
    ts = next(f for f in report.findings if f.rule_id == "D101")
    assert ts.description == (
        f'Output contains the current timestamp "{now}", which will differ on replay.'
    )
    assert ts.seq == 2 and ts.entry_hash == b["events"][2]["entry_hash"]
    assert ts.action == "tool_call `generate_report`" and ts.severity == "high"
    assert ts.to_json()["recommendation"]["before"] == RULES["D101"].before


def test_provider_metadata_in_model_outputs_is_not_a_finding() -> None:
    b = (
        RunBuilder("meta")
        .step("plan")
        .model(
            {"messages": []},
            {"id": "chatcmpl-9xY3kQ2vX9pLm4Rt7Wy3Nb", "created": 1793534400, "text": "ok"},
        )
        .bundle()
    )
    assert analyze(b).findings == ()


def test_same_call_recorded_twice_with_different_outputs() -> None:
    b = (
        RunBuilder("twice")
        .step("plan")
        .tool("pick", {"from": "abc"}, {"order": ["a", "b", "c"], "w": 0.3, "v": 1})
        .tool("pick", {"from": "abc"}, {"order": ["c", "a", "b"], "w": 0.1 + 0.2, "v": 2})
        .bundle()
    )
    found = [(f.rule_id, f.pointer, f.seq) for f in analyze(b).findings if f.rule_id >= "D2"]
    assert found == [
        ("D201", "/payload/outputs/v", 3),
        ("D202", "/payload/outputs/order", 3),
        ("D203", "/payload/outputs/w", 3),
    ]


def test_against_a_second_recording() -> None:
    a = RunBuilder("a").step("plan").tool("stamp", {"n": 1}, {"at": "x1", "id": "u"}).bundle()
    b = RunBuilder("b").step("plan").tool("stamp", {"n": 1}, {"at": "x2", "id": "u"}).bundle()
    report = analyze(b, against=a)
    assert [(f.rule_id, f.pointer, f.source) for f in report.findings] == [
        ("D201", "/payload/outputs/at", "recordings")
    ]
    assert "the same call in run a (seq 2)" in report.findings[0].description
    assert report.against == "a"


def test_writes_without_idempotency_keys() -> None:
    b = (
        RunBuilder("writes")
        .step("plan")
        .tool("issue_refund", {"amount": 5}, {"ok": True})
        .tool("sendEmail", {"to": "a", "idempotency_key": "run/plan/1"}, {"ok": True})
        .tool("search", {"q": 1}, {"items": []})
        .bundle()
    )
    found = [(f.rule_id, f.action) for f in analyze(b).findings]
    assert found == [("D401", "tool_call `issue_refund`")]


SOURCE = """\
import random, time, uuid
from datetime import datetime as dt, UTC
import numpy as np

def step(tags, seed):
    now = dt.now(UTC)
    t = time.time()
    pick = random.choice(tags)
    rid = uuid.uuid4()
    ok = uuid.uuid5(uuid.NAMESPACE_URL, "x")
    rng = random.Random()
    seeded = random.Random(seed)
    g = np.random.default_rng()
    uniq = set(tags)
    for tag in uniq:
        print(tag)
    names = [t for t in {1, 2}]
    ordered = sorted(set(tags))
    joined = ",".join(set(tags))
    return list(uniq)
"""


def test_source_scan_finds_what_deterministic_code_must_not_call() -> None:
    hits = [(h.rule_id, h.line, h.call) for h in scan_source(SOURCE, "agent.py")]
    assert hits == [
        ("D301", 6, "datetime.datetime.now"),
        ("D301", 7, "time.time"),
        ("D302", 8, "random.choice"),
        ("D303", 9, "uuid.uuid4"),
        ("D304", 11, "random.Random() without a seed"),
        ("D304", 13, "numpy.random.default_rng() without a seed"),
        ("D305", 15, "iteration over a set"),
        ("D305", 17, "iteration over a set"),
        ("D305", 19, "join() of a set"),
        ("D305", 20, "list() of a set"),
    ]


def test_findings_are_in_a_stable_order_with_source_last() -> None:
    b = RunBuilder("r").step("plan").tool("issue_refund", {}, {"ok": True}).bundle()
    one = analyze(b, sources={"b.py": SOURCE, "a.py": "import time\nx = time.time()\n"})
    two = analyze(b, sources={"a.py": "import time\nx = time.time()\n", "b.py": SOURCE})
    assert one == two
    assert one.findings[0].rule_id == "D401"
    assert [f.path for f in one.findings[1:3]] == ["a.py", "b.py"]
    assert one.sources == ("a.py", "b.py")


@pytest.mark.parametrize(
    ("findings", "score"),
    [
        ([], 100),
        ([("D101", 0.9)], 82),  # high 20 * 0.9
        ([("D101", 0.9), ("D101", 0.5)], 78),  # a second finding of a rule adds 25%
        ([("D402", 1.0)], 60),  # critical
        ([("D105", 0.6)], 98),
        ([("D402", 1.0), ("D402", 1.0), ("D101", 0.9), ("D202", 0.9)], 23),
        ([("D402", 1.0)] * 3 + [("D101", 1.0)] * 9 + [("D305", 1.0)] * 9, 0),
    ],
)
def test_score_formula(findings: list[tuple[str, float]], score: int) -> None:
    assert score_of([Finding(rule, conf, "x") for rule, conf in findings]) == score


def test_bands() -> None:
    assert [band_of(s)[0] for s in (100, 90, 89, 70, 69, 50, 49, 0)] == [
        "highly deterministic",
        "highly deterministic",
        "moderately deterministic",
        "moderately deterministic",
        "low determinism",
        "low determinism",
        "highly non-deterministic",
        "highly non-deterministic",
    ]
    assert [b[2] for b in BANDS] == ["green", "yellow", "orange", "red"]


def test_rule_ids_are_unique_and_documented() -> None:
    from pathlib import Path

    spec = (Path(__file__).parent.parent / "SPEC.md").read_text()
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id
        assert f"`{rule_id}`" in spec, f"SPEC.md does not document {rule_id}"
