"""Determinism analysis: findings with stable rule ids, and a 0-100 score.

Findings come from three sources (SPEC.md, "Determinism"):

1. **patterns in a run's recorded outputs** (``D1xx``): timestamps close to the
   event's own time, UUIDs (random v4; time-based v1/v6/v7), other high-entropy ids,
   floats with long mantissas;
2. **differences between recordings of the same call** (``D2xx``): within the run,
   against a second run (``against``), or between a replay and its original (a
   :class:`~fleetledger.processors.replay.ReplayReport`), classified per JSON path:
   an unordered collection (same items, another order), float precision, a timestamp
   or an id that changed, any other value;
3. **the agent's source**, when given (``D3xx``, :mod:`fleetledger.processors.sourcescan`).

Plus **external state** (``D4xx``): tool calls that write (by name, or the step's
declared kind) without an idempotency key, and calls a replay could not answer.

Every finding has a rule id, a type (the reference's issue types: timestamp, random,
external_state, floating_point, ordering), a severity (critical / high / medium / low),
a confidence in [0, 1], where it is (the action, its event's seq and entry hash and a
JSON Pointer into the event - ``/payload/outputs`` continues into the JSON value the
outputs text holds - or the source file and line), a description and a recommendation
with a before/after snippet.

Score (documented in SPEC.md)::

    penalty(rule) = WEIGHT[severity] * max confidence * (1 + 0.25 * min(n - 1, 4))
    score = max(0, round_half_up(100 - sum of penalty over the rules found))

with ``n`` the rule's number of findings and ``WEIGHT = {critical: 40, high: 20,
medium: 10, low: 3}``; bands 90-100 highly deterministic, 70-89 moderately, 50-69 low
determinism, 0-49 highly non-deterministic.  Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from fleetledger.processors.actions import Action, actions_of
from fleetledger.processors.jsondiff import Change, diff, escape_token, is_number, short
from fleetledger.processors.replay import ReplayReport
from fleetledger.processors.sourcescan import SourceHit, scan_sources

__all__ = [
    "BANDS",
    "RULES",
    "WEIGHTS",
    "DeterminismReport",
    "Finding",
    "Rule",
    "analyze",
    "band_of",
    "score_of",
]

Severity = Literal["critical", "high", "medium", "low"]
IssueType = Literal["timestamp", "random", "external_state", "floating_point", "ordering"]

#: Penalty points of one rule at confidence 1 (see the module docstring).
WEIGHTS: dict[Severity, int] = {"critical": 40, "high": 20, "medium": 10, "low": 3}
#: (lowest score, band name, colour) from the highest band down.
BANDS: tuple[tuple[int, str, str], ...] = (
    (90, "highly deterministic", "green"),
    (70, "moderately deterministic", "yellow"),
    (50, "low determinism", "orange"),
    (0, "highly non-deterministic", "red"),
)
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    type: IssueType
    severity: Severity
    recommendation: str
    before: str
    after: str


def _rule(*args: str) -> Rule:
    return Rule(*args)  # type: ignore[arg-type]


#: Every rule, by id.  Ids are stable: a rule's meaning never changes under its id.
RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        _rule(
            "D101",
            "timestamp-in-output",
            "timestamp",
            "high",
            "Pass the time in as an input (or take it from the run's clock), instead of "
            "reading the wall clock inside the action.",
            'report = {"generated_at": datetime.now(UTC).isoformat(), **data}',
            'def generate_report(data, *, now: datetime):\n    report = {"generated_at": '
            "now.isoformat(), **data}",
        ),
        _rule(
            "D102",
            "random-uuid-in-output",
            "random",
            "medium",
            "Derive ids from the inputs (uuid5 over a stable name) or pass them in; a random "
            "uuid4 differs on every execution.",
            "order_id = str(uuid.uuid4())",
            'order_id = str(uuid.uuid5(NAMESPACE, f"{run_id}/{step}/{n}"))',
        ),
        _rule(
            "D103",
            "time-based-uuid-in-output",
            "random",
            "high",
            "A v1/v6/v7 UUID embeds the time (and randomness): derive the id from the inputs "
            "or pass it in.",
            "event_id = uuid6.uuid7()",
            'event_id = uuid.uuid5(NAMESPACE, f"{run_id}/{seq}")',
        ),
        _rule(
            "D104",
            "high-entropy-id-in-output",
            "random",
            "low",
            "Random tokens in outputs differ on re-execution; generate them from a seeded "
            "source or from the inputs, or keep them out of what later steps read.",
            "token = secrets.token_urlsafe(16)",
            "token = hmac.new(key, f\"{run_id}/{n}\".encode(), 'sha256').hexdigest()[:22]",
        ),
        _rule(
            "D105",
            "long-mantissa-float",
            "floating_point",
            "low",
            "Round or use Decimal for values that are compared or shown; long float mantissas "
            "change with the order of operations.",
            "total = sum(prices)",
            "total = sum(map(Decimal, prices)).quantize(Decimal('0.01'))",
        ),
        _rule(
            "D201",
            "value-differs-between-recordings",
            "random",
            "medium",
            "The same call with the same inputs gave another value: find what the action "
            "reads besides its inputs (clock, randomness, external state) and pass it in.",
            "result = lookup(query)  # also reads a cache that changes",
            "result = lookup(query, snapshot=inputs['snapshot'])",
        ),
        _rule(
            "D202",
            "unordered-collection",
            "ordering",
            "medium",
            "Sort collections before they are serialized, compared or sent to a model; set "
            "and dict iteration order is not a property of the data.",
            "tags = list(set(raw_tags))",
            "tags = sorted(set(raw_tags))",
        ),
        _rule(
            "D203",
            "float-precision",
            "floating_point",
            "low",
            "Floats that differ in the last digits: round before comparing or recording, or "
            "compute in Decimal / in a fixed order.",
            "score = sum(weights[k] * v for k, v in features.items())",
            "score = round(math.fsum(weights[k] * features[k] for k in sorted(features)), 6)",
        ),
        _rule(
            "D204",
            "timestamp-differs-between-recordings",
            "timestamp",
            "high",
            "A timestamp changed between recordings of the same call: take the time from the "
            "inputs or the run's clock.",
            'return {"checked_at": datetime.now(UTC).isoformat()}',
            'return {"checked_at": inputs["as_of"]}',
        ),
        _rule(
            "D205",
            "id-differs-between-recordings",
            "random",
            "medium",
            "An id changed between recordings of the same call: derive it from the inputs "
            "(uuid5, a hash) instead of generating it.",
            'return {"id": str(uuid.uuid4())}',
            'return {"id": str(uuid.uuid5(NAMESPACE, inputs["name"]))}',
        ),
        _rule(
            "D301",
            "wall-clock-read",
            "timestamp",
            "high",
            "Read time from the run's clock or take it as an input; the wall clock differs on "
            "replay.",
            "now = datetime.now(UTC)",
            "now = run.clock()  # or a parameter: def step(..., now: datetime)",
        ),
        _rule(
            "D302",
            "global-random",
            "random",
            "high",
            "Use a random.Random seeded from the run (or pass the random values in); the "
            "module-level generator is shared and unseeded.",
            "pick = random.choice(candidates)",
            "rng = random.Random(run_seed)\npick = rng.choice(candidates)",
        ),
        _rule(
            "D303",
            "random-uuid",
            "random",
            "medium",
            "Derive ids from stable names with uuid5 (or pass them in) instead of uuid1/uuid4.",
            "request_id = uuid.uuid4()",
            'request_id = uuid.uuid5(NAMESPACE, f"{run_id}/{step}")',
        ),
        _rule(
            "D304",
            "unseeded-rng",
            "random",
            "medium",
            "Seed every generator from the run (or inject it); OS entropy and unseeded "
            "generators differ on every execution.",
            "rng = random.Random()",
            "rng = random.Random(seed)",
        ),
        _rule(
            "D305",
            "set-iteration",
            "ordering",
            "medium",
            "Iterate over sorted(...) of the set; set order depends on hashing "
            "(PYTHONHASHSEED) and insertion history.",
            "for tag in set(tags):\n    prompt += tag",
            "for tag in sorted(set(tags)):\n    prompt += tag",
        ),
        _rule(
            "D401",
            "write-without-idempotency-key",
            "external_state",
            "high",
            "Send an idempotency key derived from the run and step with every write, so a "
            "retry or a re-execution cannot apply it twice.",
            "create_refund(order_id=oid, amount=amt)",
            "create_refund(order_id=oid, amount=amt,\n"
            '              idempotency_key=f"{run_id}/{step}/refund")',
        ),
        _rule(
            "D402",
            "unrecorded-call",
            "external_state",
            "critical",
            "Every call to the outside must go through an instrumented client or @tool, so it "
            "is recorded and a replay can answer it.",
            "rate = requests.get(FX_URL).json()['rate']",
            "@tool\ndef fx_rate() -> float:\n    return requests.get(FX_URL).json()['rate']",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One determinism finding (see the module docstring)."""

    rule_id: str
    confidence: float
    description: str
    action: str | None = None
    step_id: str | None = None
    seq: int | None = None
    entry_hash: str | None = None
    pointer: str | None = None
    path: str | None = None
    line: int | None = None
    value: str | None = None
    source: Literal["outputs", "recordings", "replay", "source", "calls"] = "outputs"

    @property
    def rule(self) -> Rule:
        return RULES[self.rule_id]

    @property
    def severity(self) -> Severity:
        return self.rule.severity

    def sort_key(self) -> tuple[Any, ...]:
        group = {"outputs": 0, "calls": 0, "recordings": 1, "replay": 1, "source": 2}[self.source]
        return (
            group,
            self.seq if self.seq is not None else -1,
            self.path or "",
            self.line or 0,
            self.rule_id,
            self.pointer or "",
            self.value or "",
        )

    def to_json(self) -> dict[str, Any]:
        rule = self.rule
        out: dict[str, Any] = {
            "rule_id": self.rule_id,
            "rule": rule.name,
            "type": rule.type,
            "severity": rule.severity,
            "confidence": f"{self.confidence:.2f}",
            "source": self.source,
            "description": self.description,
            "recommendation": {
                "text": rule.recommendation,
                "before": rule.before,
                "after": rule.after,
            },
        }
        for name in ("action", "step_id", "seq", "entry_hash", "pointer", "path", "line", "value"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        return out


def score_of(findings: Sequence[Finding]) -> int:
    """The 0-100 determinism score of a set of findings (formula in the module docstring)."""
    by_rule: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_rule[f.rule_id].append(f)
    penalty = Decimal(0)
    for rule_id, found in by_rule.items():
        weight = WEIGHTS[RULES[rule_id].severity]
        conf = Decimal(str(max(f.confidence for f in found)))
        penalty += weight * conf * (1 + Decimal("0.25") * min(len(found) - 1, 4))
    score = (Decimal(100) - penalty).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return max(0, int(score))


def band_of(score: int) -> tuple[str, str]:
    """(band name, colour) of a score."""
    for low, name, colour in BANDS:
        if score >= low:
            return name, colour
    return BANDS[-1][1], BANDS[-1][2]


@dataclass(frozen=True)
class DeterminismReport:
    run_id: str
    findings: tuple[Finding, ...]
    against: str | None = None
    sources: tuple[str, ...] = ()

    @property
    def score(self) -> int:
        return score_of(self.findings)

    @property
    def band(self) -> str:
        return band_of(self.score)[0]

    @property
    def colour(self) -> str:
        return band_of(self.score)[1]

    def counts(self) -> dict[str, int]:
        c = Counter(f.severity for f in self.findings)
        return {s: c[s] for s in ("critical", "high", "medium", "low")}

    def to_json(self) -> dict[str, Any]:
        return {
            "report": "fleetledger.determinism-report/v1",
            "run_id": self.run_id,
            "against": self.against,
            "sources": list(self.sources),
            "score": self.score,
            "band": self.band,
            "colour": self.colour,
            "counts": self.counts(),
            "findings": [f.to_json() for f in self.findings],
        }


# --------------------------------------------------------------------------- patterns

_ISO_TS = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?"
)
_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-([0-9a-fA-F])[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}"
    r"-[0-9a-fA-F]{12}\b"
)
_TOKEN = re.compile(r"[A-Za-z0-9_\-]{20,}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Response metadata of model providers, served from the recording as it was: not findings.
_PROVIDER_META = frozenset(
    {"id", "model", "created", "created_at", "system_fingerprint", "tool_call_id", "service_tier"}
)
_WINDOW_S = 24 * 3600
_EPOCH_S = (10**9, 10**10)
_EPOCH_MS = (10**12, 10**13)


def _parse_ts(text: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _event_time(action: Action) -> datetime | None:
    return _parse_ts(action.ts) if action.ts is not None else None


def _ts_confidence(delta_s: float) -> float:
    if delta_s <= 300:
        return 0.9
    if delta_s <= 3600:
        return 0.7
    return 0.5


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_like_timestamp(value: Any) -> bool:
    return isinstance(value, str) and _ISO_TS.fullmatch(value.strip()) is not None


def looks_like_id(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    return _UUID.fullmatch(value) is not None or _is_token(value)


def _is_token(text: str) -> bool:
    """A generated id: 20+ id characters with a segment of 16+ mixing letters and digits,
    of high entropy (not a SHA-256 hex digest: those are derived from content)."""
    if _TOKEN.fullmatch(text) is None or _HEX64.fullmatch(text) or text.startswith("sha256"):
        return False
    segments = [s for s in re.split(r"[-_]", text) if len(s) >= 16]
    mixed = [s for s in segments if any(c.isdigit() for c in s) and any(c.isalpha() for c in s)]
    return any(_entropy(s) >= 3.5 for s in mixed)


def _leaves(value: Any, at: str, skip_meta: bool) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k in sorted(value):
            if skip_meta and k in _PROVIDER_META:
                continue
            yield from _leaves(value[k], f"{at}/{escape_token(k)}", skip_meta)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{at}/{i}", skip_meta)
    else:
        yield at, value


def _strings_in(value: Any) -> set[str]:
    out: set[str] = set()
    for _, leaf in _leaves(value, "", False):
        if isinstance(leaf, str):
            out.add(leaf)
            out.update(m.group(0).lower() for m in _UUID.finditer(leaf))
    return out


def _where(a: Action) -> dict[str, Any]:
    return {"action": a.label, "step_id": a.step_id, "seq": a.seq, "entry_hash": a.entry_hash}


def _output_findings(a: Action, run_id: str) -> Iterator[Finding]:
    if a.kind not in ("model_io", "tool_call") or a.outputs is None:
        return
    event_time = _event_time(a)
    echoed = _strings_in(a.inputs) | {run_id.lower()}
    for at, leaf in _leaves(a.outputs, "/payload/outputs", a.kind == "model_io"):
        if isinstance(leaf, str):
            yield from _string_findings(a, at, leaf, event_time, echoed)
        elif isinstance(leaf, float):
            digits = len(repr(abs(leaf)).replace(".", "").lstrip("0").split("e")[0])
            if digits >= 15:
                yield Finding(
                    "D105",
                    0.6,
                    f"Output holds the float {leaf!r} with {digits} significant digits; its "
                    "last digits depend on the order of operations.",
                    pointer=at,
                    value=repr(leaf),
                    **_where(a),
                )
        elif is_number(leaf) and event_time is not None and not isinstance(leaf, bool):
            n = int(leaf)
            for lo_hi, scale in ((_EPOCH_S, 1), (_EPOCH_MS, 1000)):
                if lo_hi[0] <= n < lo_hi[1]:
                    delta = abs(n / scale - event_time.timestamp())
                    if delta <= _WINDOW_S:
                        yield Finding(
                            "D101",
                            _ts_confidence(delta) - 0.1,
                            f"Output contains the current time as a Unix timestamp ({n}), "
                            "which will differ on replay.",
                            pointer=at,
                            value=str(n),
                            **_where(a),
                        )


def _string_findings(
    a: Action, at: str, text: str, event_time: datetime | None, echoed: set[str]
) -> Iterator[Finding]:
    if text in echoed:
        return
    if event_time is not None:
        for m in _ISO_TS.finditer(text):
            ts = _parse_ts(m.group(0))
            if ts is None:
                continue
            delta = abs((ts - event_time).total_seconds())
            if delta <= _WINDOW_S:
                yield Finding(
                    "D101",
                    _ts_confidence(delta),
                    f'Output contains the current timestamp "{m.group(0)}", which will '
                    "differ on replay.",
                    pointer=at,
                    value=m.group(0),
                    **_where(a),
                )
    for m in _UUID.finditer(text):
        value = m.group(0)
        if value.lower() in echoed:
            continue
        version = m.group(1)
        if version == "4":
            yield Finding(
                "D102",
                0.8,
                f'Output contains a random UUID (version 4) "{value}" that is not in the '
                "inputs; it will differ on replay.",
                pointer=at,
                value=value,
                **_where(a),
            )
        elif version in ("1", "6", "7"):
            yield Finding(
                "D103",
                0.9,
                f'Output contains a time-based UUID (version {version}) "{value}" that is not '
                "in the inputs; it will differ on replay.",
                pointer=at,
                value=value,
                **_where(a),
            )
    if _UUID.search(text) is None and len(text) <= 2000:
        for m in _TOKEN.finditer(text):
            token = m.group(0)
            if token.lower() not in echoed and _is_token(token):
                yield Finding(
                    "D104",
                    0.4,
                    f'Output contains a high-entropy id "{short(token, 40)}" that is not in '
                    "the inputs; a generated id differs on re-execution.",
                    pointer=at,
                    value=token,
                    **_where(a),
                )
                break


# --------------------------------------------------------------------------- differences


def _classify(change: Change) -> str:
    if change.kind == "reordered":
        return "D202"
    if change.kind == "precision":
        return "D203"
    if looks_like_timestamp(change.before) and looks_like_timestamp(change.after):
        return "D204"
    if looks_like_id(change.before) and looks_like_id(change.after):
        return "D205"
    return "D201"


def _difference_findings(
    a: Action,
    changes: Sequence[Change],
    other: str,
    source: Literal["recordings", "replay"],
) -> Iterator[Finding]:
    for c in changes:
        rule_id = _classify(c)
        what = {
            "D202": "the same items in another order (an unordered collection)",
            "D203": f"floats differing in precision ({short(c.before, 30)} vs "
            f"{short(c.after, 30)})",
            "D204": f"a different timestamp ({short(c.before, 40)} vs {short(c.after, 40)})",
            "D205": f"a different id ({short(c.before, 40)} vs {short(c.after, 40)})",
        }.get(rule_id, f"{short(c.before, 40)} vs {short(c.after, 40)}")
        yield Finding(
            rule_id,
            0.9 if rule_id != "D201" else 0.8,
            f"{a.label} at {c.pointer or '/'} differs from {other}: {what}.",
            pointer=c.pointer,
            source=source,
            **_where(a),
        )


def _recorded_pairs(
    first: Sequence[Action], second: Sequence[Action]
) -> Iterator[tuple[Action, Action]]:
    """Actions of ``second`` with the same key as one of ``first``, paired in order."""
    queues: dict[str, list[Action]] = defaultdict(list)
    for a in first:
        queues[a.key].append(a)
    for b in second:
        queue = queues.get(b.key)
        if queue:
            yield queue.pop(0), b


def _within_run(actions: Sequence[Action]) -> Iterator[Finding]:
    groups: dict[str, list[Action]] = defaultdict(list)
    for a in actions:
        if a.kind in ("model_io", "tool_call"):
            groups[a.key].append(a)
    for group in groups.values():
        for later in group[1:]:
            changes = diff(group[0].result(), later.result(), limit=20)
            yield from _difference_findings(
                later,
                [replace(c, pointer="/payload" + c.pointer) for c in changes],
                f"the earlier recording of the same call (seq {group[0].seq})",
                "recordings",
            )


# --------------------------------------------------------------------------- external state

#: A tool whose name starts with one of these verbs writes ...
_WRITE_VERBS = frozenset(
    (
        "create", "insert", "update", "upsert", "delete", "remove", "write", "save", "send",
        "post", "put", "patch", "publish", "charge", "pay", "refund", "transfer", "book",
        "submit", "email", "notify", "deploy", "merge", "commit", "push", "cancel", "issue",
        "place", "set", "add", "drop",
    )
)  # fmt: skip
#: ... and so does one with one of these words anywhere in its name.
_STRONG_WRITE_WORDS = frozenset(
    (
        "create", "insert", "update", "upsert", "delete", "remove", "write", "send", "publish",
        "charge", "pay", "payment", "refund", "transfer", "submit", "deploy", "cancel",
    )
)  # fmt: skip
_WRITE_KINDS = frozenset({"write", "side_effect", "side-effect", "effect", "external_write"})
_IDEMPOTENCY = re.compile(
    r"idempotency[-_]?key|idem[-_]?key|dedup(?:e|lication)?[-_]?(?:key|id)|request[-_]?id"
    r"|client[-_]?(?:request[-_]?id|token)",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def _writes(name: str) -> bool:
    words = [w.lower() for w in _WORD.findall(name)]
    return bool(words) and (
        words[0] in _WRITE_VERBS or any(w in _STRONG_WRITE_WORDS for w in words)
    )


def _has_idempotency_key(inputs: Any) -> bool:
    if isinstance(inputs, dict):
        for k, v in inputs.items():
            if _IDEMPOTENCY.fullmatch(str(k)) and v not in (None, ""):
                return True
            if isinstance(v, dict) and _has_idempotency_key(v):
                return True
    return False


def _write_findings(actions: Sequence[Action], step_kinds: Mapping[str, str]) -> Iterator[Finding]:
    for a in actions:
        if a.kind != "tool_call":
            continue
        declared = a.step_id is not None and step_kinds.get(a.step_id, "") in _WRITE_KINDS
        if not (declared or _writes(a.name)) or _has_idempotency_key(a.inputs):
            continue
        why = (
            f"in step {a.step_id} declared {step_kinds.get(a.step_id or '', '')!r}"
            if declared
            else "a write by its name"
        )
        yield Finding(
            "D401",
            0.95 if declared else 0.8,
            f"Tool call `{a.name}` ({why}) carries no idempotency key in its inputs; "
            "re-executing it applies the write again.",
            pointer="/payload/inputs",
            source="calls",
            **_where(a),
        )


def _replay_findings(report: ReplayReport) -> Iterator[Finding]:
    """Findings on the original's actions from what its replay did differently."""
    for d in report.divergences:
        if d.kind in ("output_mismatch", "input_mismatch") and d.original is not None:
            seq = d.replay.seq if d.replay is not None else None
            where = f"seq {seq} of replay {report.replay_run_id}" if seq is not None else "replay"
            yield from _difference_findings(d.original, d.changes, f"the {where}", "replay")
        if d.replay is not None and d.kind == "extra":
            r = d.replay
            answered = r.seq is not None and r.error_type != "ReplayMissError"
            what = "made it live" if answered else "could not answer it"
            yield Finding(
                "D402",
                1.0,
                f"{r.label} at {r.where} has no recording: the replay {what} ({d.message}).",
                action=r.label,
                step_id=r.step_id,
                pointer="/payload/inputs",
                source="replay",
            )


# --------------------------------------------------------------------------- analysis


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _source_finding(hit: SourceHit) -> Finding:
    return Finding(
        hit.rule_id,
        0.9 if hit.rule_id in ("D301", "D302", "D303") else 0.7,
        f"{hit.path}:{hit.line}: {hit.call} in agent code: {_cut(hit.code, 70)}",
        path=hit.path,
        line=hit.line,
        value=hit.call,
        source="source",
    )


def analyze(
    bundle: Mapping[str, Any],
    *,
    against: Mapping[str, Any] | None = None,
    replay: ReplayReport | None = None,
    sources: Mapping[str, str] | None = None,
) -> DeterminismReport:
    """The determinism report of a run (a bundle), optionally compared with a second
    recording of the same calls (``against``), with a replay of it, and with its source."""
    run_id = bundle["run"]["run_id"]
    actions = actions_of(bundle["events"])
    step_kinds = {s["id"]: s.get("kind", "") for s in bundle.get("workflow", {}).get("steps", [])}
    findings: list[Finding] = []
    for a in actions:
        findings.extend(_output_findings(a, run_id))
    findings.extend(_within_run(actions))
    findings.extend(_write_findings(actions, step_kinds))
    other_id: str | None = None
    if against is not None:
        other_id = against["run"]["run_id"]
        other = actions_of(against["events"])
        for theirs, mine in _recorded_pairs(other, actions):
            changes = diff(theirs.result(), mine.result(), limit=20)
            findings.extend(
                _difference_findings(
                    mine,
                    [replace(c, pointer="/payload" + c.pointer) for c in changes],
                    f"the same call in run {other_id} (seq {theirs.seq})",
                    "recordings",
                )
            )
    if replay is not None:
        findings.extend(_replay_findings(replay))
    if sources:
        findings.extend(_source_finding(h) for h in scan_sources(sources))
    unique = {(f.sort_key(), f.description): f for f in findings}
    ordered = sorted(unique.values(), key=Finding.sort_key)
    return DeterminismReport(
        run_id=run_id,
        findings=tuple(ordered),
        against=other_id,
        sources=tuple(sorted(sources or ())),
    )
