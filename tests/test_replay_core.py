"""The pure replay core: matching keys, the matcher, divergences and the report."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from fleetledger.kernel.errors import ReplayMissError
from fleetledger.processors.actions import Action, actions_of, hash_key, match_key, normalise
from fleetledger.processors.jsondiff import content_value, diff, get_pointer
from fleetledger.processors.replay import Matcher, Recording, Request, compare

from .runbuilder import RunBuilder

CHAT = {"messages": [{"content": "hi", "role": "user"}], "model": "gpt-4.1", "temperature": 0.2}


def recorded() -> dict[str, Any]:
    return (
        RunBuilder("orig")
        .step("plan")
        .model(CHAT, {"text": "hello"}, cost="0.02")
        .tool("search", {"q": "x"}, {"items": [1, 2]})
        .tool("search", {"q": "y"}, {"items": [3]})
        .step("act")
        .tool("generate_id", {}, {"id": "u1"})
        .bundle()
    )


def replayed(b: RunBuilder) -> list[Action]:
    """The actions of a replay written with the builder (no chain needed)."""
    return actions_of(b.bundle()["events"])


# --------------------------------------------------------------------------- json diff


def test_diff_kinds_and_pointers() -> None:
    a = {"tags": ["a", "b", "c"], "x": 0.1 + 0.2, "n": 1, "gone": True, "k/~": [1, 2]}
    b = {"tags": ["c", "a", "b"], "x": 0.3, "n": 2, "new": None, "k/~": [1, 2, 3]}
    changes = {c.pointer: c.kind for c in diff(a, b)}
    assert changes == {
        "/gone": "removed",
        "/k~1~0/2": "added",
        "/n": "changed",
        "/new": "added",
        "/tags": "reordered",
        "/x": "precision",
    }
    assert get_pointer(b, "/k~1~0/2") == 3
    assert diff({"a": 1}, {"a": 1.0}) == []
    assert [c.kind for c in diff({"a": True}, {"a": 1})] == ["changed"]


def test_content_value_keeps_plain_text() -> None:
    assert content_value('{"a":[1,2.5]}') == {"a": [1, 2.5]}
    assert content_value("not json {") == "not json {"
    assert content_value(None) is None


# --------------------------------------------------------------------------- the key


def test_key_ignores_volatile_members_nulls_and_the_model_member() -> None:
    base = match_key("model_io", "openai", "gpt-4.1", CHAT)
    noisy = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "user": None}
    assert match_key("model_io", "openai", "gpt-4.1", noisy) == base
    assert match_key("model_io", "openai", "gpt-4.1", {**CHAT, "request_id": "r-9"}) == base
    assert normalise({"model": "gpt-4.1", "n": 1.0}, "gpt-4.1") == {"n": 1}


def test_key_changes_with_what_was_asked() -> None:
    base = match_key("model_io", "openai", "gpt-4.1", CHAT)
    assert match_key("model_io", "openai", "gpt-4.1", {**CHAT, "temperature": 0.3}) != base
    assert match_key("model_io", "anthropic", "gpt-4.1", CHAT) != base
    assert match_key("model_io", "openai", "gpt-4o", CHAT) != base
    assert match_key("tool_call", "openai", "gpt-4.1", CHAT) != base
    # the order of object members never matters, list order does
    assert match_key("tool_call", None, "t", {"a": 1, "b": 2}) == match_key(
        "tool_call", None, "t", {"b": 2, "a": 1}
    )
    assert match_key("tool_call", None, "t", [1, 2]) != match_key("tool_call", None, "t", [2, 1])


def test_actions_have_step_positions_and_keys() -> None:
    rec = Recording.from_bundle(recorded())
    assert [(a.label, a.step_id, a.position) for a in rec.actions] == [
        ("model_io openai/gpt-4.1", "plan", 0),
        ("tool_call `search`", "plan", 1),
        ("tool_call `search`", "plan", 2),
        ("tool_call `generate_id`", "act", 0),
    ]
    assert rec.actions[0].key == match_key("model_io", "openai", "gpt-4.1", CHAT)
    assert rec.actions[0].seq == 2 and rec.actions[0].entry_hash is not None
    assert rec.cost == Decimal("0.02") and rec.currency == "USD"


# --------------------------------------------------------------------------- matcher


def test_same_key_recordings_are_taken_in_order() -> None:
    b = (
        RunBuilder("orig")
        .step("plan")
        .tool("roll", {}, {"n": 1})
        .tool("roll", {}, {"n": 2})
        .tool("roll", {}, {"n": 3})
        .bundle()
    )
    m = Matcher(Recording.from_bundle(b))
    got = [m.answer(Request("tool_call", "roll", None, {}, step_id="plan")) for _ in range(3)]
    assert [a.outputs["n"] for a in got if a is not None] == [1, 2, 3]
    with pytest.raises(ReplayMissError, match="already taken"):
        m.answer(Request("tool_call", "roll", None, {}, step_id="plan"))


def test_a_reordered_call_gets_its_own_answer() -> None:
    m = Matcher(Recording.from_bundle(recorded()))
    second = m.answer(Request("tool_call", "search", None, {"q": "y"}, step_id="plan"))
    first = m.answer(Request("tool_call", "search", None, {"q": "x"}, step_id="plan"))
    assert second is not None and second.outputs == {"items": [3]}
    assert first is not None and first.outputs == {"items": [1, 2]}


def test_a_miss_fails_closed_with_key_nearest_and_diff() -> None:
    m = Matcher(Recording.from_bundle(recorded()))
    m.note("plan")  # the model call was recorded by the replay
    request = Request("tool_call", "search", None, {"q": "z"}, step_id="plan")
    with pytest.raises(ReplayMissError) as info:
        m.answer(request)
    err = info.value
    assert err.key == match_key("tool_call", None, "search", {"q": "z"})
    assert err.nearest is not None and err.nearest["seq"] == 3 and err.nearest["position"] == 1
    assert err.diff == [
        {"pointer": "/payload/inputs/q", "kind": "changed", "before": "x", "after": "z"}
    ]
    assert "tool_call `search` at step plan position 1" in str(err)
    assert err.key in str(err)


def test_live_calls_allowed_return_none_and_are_noted() -> None:
    m = Matcher(Recording.from_bundle(recorded()), allow_live=True)
    assert m.answer(Request("tool_call", "fetch", None, {"u": 1}, step_id="plan")) is None
    assert [x.live for x in m.misses] == [True]


def test_hash_only_recordings_match_by_the_inputs_hash() -> None:
    import hashlib

    digest = hashlib.sha256(b'{"q":"secret"}').hexdigest()
    rec = Recording.from_bundle(recorded())
    hashed = Action(
        **{
            **rec.actions[1].__dict__,
            "index": 9,
            "inputs": None,
            "inputs_sha256": digest,
            "key": hash_key("tool_call", None, "search", digest),
        }
    )
    m = Matcher(Recording(**{**rec.__dict__, "actions": (hashed,)}))
    req = Request("tool_call", "search", None, {"q": "secret"}, inputs_sha256=digest)
    assert m.answer(req) is hashed


# --------------------------------------------------------------------------- compare


def test_identical_replay_matches_everything_at_zero_cost() -> None:
    rec = Recording.from_bundle(recorded())
    replay = list(rec.actions)
    served = {a.key: 1 for a in replay}
    report = compare(rec, [_zero(a) for a in replay], served=served, replay_run_id="rp")
    assert report.ok and report.match_rate == Decimal(100)
    assert (report.original_cost, report.replay_cost, report.savings) == (
        Decimal("0.02"),
        Decimal(0),
        Decimal("0.02"),
    )
    assert [r.status for r in report.rows] == ["match"] * 4
    assert report.to_json()["divergence_count"] == 0


def _zero(a: Action) -> Action:
    return Action(**{**a.__dict__, "cost": Decimal(0)})


def test_each_divergence_kind() -> None:
    rec = Recording.from_bundle(
        RunBuilder("orig")
        .step("plan")
        .model(CHAT, {"text": "hello"})
        .tool("search", {"q": "x"}, {"items": [1]})
        .tool("lookup", {"id": 1}, {"v": 1})
        .step("act")
        .tool("generate_id", {}, {"id": "u1"})
        .tool("render", {"t": 1}, {"ok": True})
        .tool("notify", {"to": "a"}, {"ok": True})
        .bundle()
    )
    replay = replayed(
        RunBuilder("rp")
        .step("plan")
        .model(CHAT, {"text": "hello"})  # served
        .tool("fetch", {"q": "x"}, {"items": [1]})  # action mismatch (search)
        .tool("lookup", {"id": 2}, {"v": 1})  # input mismatch
        .tool("audit", {}, {"ok": True})  # extra
        .step("act")
        .tool("render", {"t": 1}, {"ok": True})  # reordered (recorded after generate_id)
        .tool("generate_id", {}, {"id": "u2"})  # re-executed: output mismatch
        # notify is missing
    )
    served = {replay[0].key: 1, replay[4].key: 1}
    report = compare(rec, replay, served=served)
    kinds = [
        (d.kind, d.replay.name if d.replay else d.original.name if d.original else "")
        for d in report.divergences
    ]
    assert kinds == [
        ("action_mismatch", "fetch"),
        ("input_mismatch", "lookup"),
        ("extra", "audit"),
        ("reordered", "render"),
        ("output_mismatch", "generate_id"),
        ("missing", "notify"),
    ]
    by_kind = {d.kind: d for d in report.divergences}
    assert by_kind["action_mismatch"].message.startswith(
        "expected tool_call `search` at step plan position 1"
    )
    assert "replay made `fetch`" in by_kind["action_mismatch"].message
    assert [c.to_json() for c in by_kind["input_mismatch"].changes] == [
        {"pointer": "/payload/inputs/id", "kind": "changed", "before": 1, "after": 2}
    ]
    assert [c.pointer for c in by_kind["output_mismatch"].changes] == ["/payload/outputs/id"]
    assert report.matched == 1 and len(report.rows) == 7
    assert report.match_rate == Decimal("14.3")
    assert report.counts() == {
        "action_mismatch": 1,
        "input_mismatch": 1,
        "output_mismatch": 1,
        "reordered": 1,
        "missing": 1,
        "extra": 1,
    }
    rows = {r.action: r for r in report.rows}
    assert rows["tool_call `generate_id`"].original == 'output: {"id":"u1"}'
    assert rows["tool_call `generate_id`"].replay == 'output: {"id":"u2"}'


def test_a_stopping_miss_is_a_divergence_and_the_rest_is_not_reached() -> None:
    rec = Recording.from_bundle(recorded())
    m = Matcher(rec)
    first = m.answer(Request("model_io", "gpt-4.1", "openai", CHAT, step_id="plan"))
    assert first is not None
    m.note("plan")
    with pytest.raises(ReplayMissError) as info:
        m.answer(Request("tool_call", "search", None, {"q": "z"}, step_id="plan"))
    report = compare(
        rec,
        [_zero(first)],
        served={first.key: 1},
        misses=m.misses,
        stopped=str(info.value),
    )
    assert not report.ok and report.stopped == str(info.value)
    assert [d.kind for d in report.divergences] == ["input_mismatch"]
    assert [r.status for r in report.rows] == [
        "match",
        "input_mismatch",
        "not_reached",
        "not_reached",
    ]
    assert report.rows[1].replay.endswith("(not recorded)")
