"""Replay against a recording: which recorded answer serves a call, and what diverged.

Pure: a :class:`Recording` is built from a verified bundle, a :class:`Matcher` answers
the calls of a replay from it, and :func:`compare` sets the replay's actions beside the
recording's and writes the :class:`ReplayReport`.  The SDK side (answering an
instrumented client from a recorded result) and the run being recorded live in the
runtimes (:mod:`fleetledger.processors.runtimes.replay`).

Matching (SPEC.md, "Replay")
    A call is answered by the first recorded action *with the same matching key* (see
    :mod:`fleetledger.processors.actions`) that no earlier call of the replay took:
    recordings of the same call are taken in the order they were recorded.  Nothing is
    served first-in-first-out by position alone, so a reordered call still gets its own
    answer - and the reorder is reported.  A call with no recording raises
    :class:`~fleetledger.kernel.errors.ReplayMissError` naming its key, the nearest
    recorded call and a JSON-Pointer diff of their inputs, unless live calls were
    allowed (the call then runs for real and shows as an ``extra`` action).

Divergences (one per diverging action, in replay order)
    ``reordered``        served, but in another place than recorded;
    ``action_mismatch``  a different call than recorded at that place (step and position);
    ``input_mismatch``   the same action with different inputs (a diff by JSON Pointer);
    ``output_mismatch``  an action that was re-executed, not served, with the same inputs
                         and a different result: non-determinism;
    ``missing``          recorded, never made by the replay;
    ``extra``            made by the replay, never recorded (a live call, for one).
    A replay stopped by a miss lists the recorded actions after it as ``not_reached``
    (not divergences, but not matches either).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from fleetledger.kernel.errors import ReplayMissError
from fleetledger.processors.actions import Action, actions_of, hash_key, match_key
from fleetledger.processors.jsondiff import Change, diff
from fleetledger.schemas import money_str

__all__ = [
    "DIVERGENCE_KINDS",
    "ComparisonRow",
    "Divergence",
    "Matcher",
    "Miss",
    "Recording",
    "ReplayReport",
    "Request",
    "compare",
]

DivergenceKind = Literal[
    "reordered",
    "action_mismatch",
    "input_mismatch",
    "output_mismatch",
    "missing",
    "extra",
]
#: Every divergence kind, in the order the SPEC lists them.
DIVERGENCE_KINDS: tuple[DivergenceKind, ...] = (
    "action_mismatch",
    "input_mismatch",
    "output_mismatch",
    "reordered",
    "missing",
    "extra",
)
Status = Literal[
    "match",
    "reordered",
    "action_mismatch",
    "input_mismatch",
    "output_mismatch",
    "missing",
    "extra",
    "not_reached",
]
_DIFF_LIMIT = 20
_SERVED_KINDS = frozenset({"model_io", "tool_call", "gate"})


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Recording:
    """The actions of a recorded run, indexed by matching key."""

    run_id: str
    head: str
    digest: str
    actions: tuple[Action, ...]
    currency: str | None
    cost: Decimal
    duration_ms: int | None
    status: str  # completed | failed
    error_type: str | None  # of run_failed, when it failed
    bundle: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_bundle(cls, bundle: Mapping[str, Any]) -> Recording:
        """A recording of a (verified) bundle."""
        totals = bundle.get("totals", {})
        failed = [
            item["event"]["payload"]
            for item in bundle["events"]
            if item["event"].get("type") == "run_failed"
        ]
        return cls(
            run_id=bundle["run"]["run_id"],
            head=bundle["chain"]["head"],
            digest=bundle["integrity"]["digest"],
            actions=tuple(actions_of(bundle["events"])),
            currency=totals.get("currency"),
            cost=Decimal(totals.get("cost", "0")),
            duration_ms=bundle["run"].get("duration_ms"),
            status=str(bundle["run"].get("status", "")),
            error_type=failed[0].get("error_type") if failed else None,
            bundle=bundle,
        )

    def by_key(self) -> dict[str, list[Action]]:
        out: dict[str, list[Action]] = defaultdict(list)
        for a in self.actions:
            out[a.key].append(a)
        return out


@dataclass(frozen=True)
class Request:
    """A call the replay is about to make (inputs as they would be recorded)."""

    kind: str
    name: str
    provider: str | None
    inputs: Any
    inputs_sha256: str | None = None
    step_id: str | None = None

    def keys(self) -> tuple[str, str | None]:
        """(value key, hash key): a recording may know the inputs by hash only."""
        vkey = match_key(self.kind, self.provider, self.name, self.inputs)
        hkey = (
            hash_key(self.kind, self.provider, self.name, self.inputs_sha256)
            if self.inputs_sha256 is not None
            else None
        )
        return vkey, hkey

    def label(self) -> str:
        if self.kind == "model_io":
            return f"model_io {self.provider}/{self.name}"
        if self.kind == "tool_call":
            return f"tool_call `{self.name}`"
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Miss:
    """A call the recording could not answer."""

    request: Request
    key: str
    position: int
    nearest: Action | None
    changes: tuple[Change, ...]
    live: bool  # made live instead (allowed), or the replay stopped here

    def message(self) -> str:
        r = self.request
        step = f"step {r.step_id}" if r.step_id is not None else "outside any step"
        text = f"no recording of {r.label()} at {step} position {self.position} (key {self.key})"
        if self.nearest is None:
            return text + f"; the recording holds no {r.kind} at all"
        n = self.nearest
        text += f"; nearest recorded call: {n.label} at {n.where}, seq {n.seq}"
        if self.changes:
            shown = "; ".join(c.describe() for c in self.changes[:5])
            more = f" (+{len(self.changes) - 5} more)" if len(self.changes) > 5 else ""
            text += f", inputs differ at {shown}{more}"
        else:
            text += " (already taken by an earlier call of the replay)"
        return text


@dataclass
class _Served:
    key: str
    recorded: int  # action index in the recording


class Matcher:
    """Answers a replay's calls from a :class:`Recording` (thread-safe).

    ``allow_live``: a call without a recording is not an error; :meth:`answer` returns
    None and the caller makes it live.
    """

    def __init__(self, recording: Recording, *, allow_live: bool = False) -> None:
        self.recording = recording
        self.allow_live = allow_live
        self._queues = {k: list(v) for k, v in recording.by_key().items()}
        self._taken: set[int] = set()
        self._positions: Counter[str | None] = Counter()
        self._lock = threading.Lock()
        self.served: list[_Served] = []
        self.misses: list[Miss] = []

    def note(self, step_id: str | None) -> None:
        """The replay recorded an action in ``step_id``: the next call there is one
        position further (positions count every action, as in :func:`actions_of`)."""
        with self._lock:
            self._positions[step_id] += 1

    def _take(self, key: str | None) -> Action | None:
        if key is None:
            return None
        queue = self._queues.get(key)
        while queue:
            action = queue.pop(0)
            if action.index not in self._taken:
                return action
        return None

    def answer(self, request: Request) -> Action | None:
        """The recorded action answering ``request`` (same key, first not yet taken).

        A miss raises :class:`ReplayMissError` unless live calls are allowed (then
        None: make the call live).
        """
        vkey, hkey = request.keys()
        with self._lock:
            position = self._positions[request.step_id]
            action = self._take(vkey) or self._take(hkey)
            if action is not None:
                self._taken.add(action.index)
                self.served.append(_Served(action.key, action.index))
                return action
            nearest, changes = self._nearest(request, position)
            miss = Miss(request, vkey, position, nearest, tuple(changes), self.allow_live)
            self.misses.append(miss)
        if self.allow_live:
            return None
        raise ReplayMissError(
            miss.message()
            + "; expected the replay to make the recorded calls (or allow live calls)",
            key=vkey,
            nearest=nearest.to_json() if nearest is not None else None,
            diff=[c.to_json() for c in changes],
        )

    def gate(self, request: Request) -> Action:
        """The recorded decision of a gate (gates are always served, never live)."""
        vkey, _ = request.keys()
        with self._lock:
            position = self._positions[request.step_id]
            action = self._take(vkey)
            if action is not None:
                self._taken.add(action.index)
                self.served.append(_Served(action.key, action.index))
                return action
            nearest, changes = self._nearest(request, position)
            miss = Miss(request, vkey, position, nearest, tuple(changes), False)
            self.misses.append(miss)
        raise ReplayMissError(
            miss.message() + "; expected the gates of the recording",
            key=vkey,
            nearest=nearest.to_json() if nearest is not None else None,
            diff=[c.to_json() for c in changes],
        )

    def _nearest(self, request: Request, position: int) -> tuple[Action | None, list[Change]]:
        """The untaken recorded action most like ``request``: same kind, then same name,
        same step, same position, fewest differing inputs."""
        best: tuple[tuple[int, int, int, int, int], Action, list[Change]] | None = None
        fallback: tuple[tuple[int, int, int, int, int], Action, list[Change]] | None = None
        for a in self.recording.actions:
            if a.kind != request.kind:
                continue
            changes = _prefixed(
                diff(a.request()["inputs"], _request_inputs(request), limit=_DIFF_LIMIT),
                "/payload/inputs",
            )
            score = (
                0 if a.name == request.name else 1,
                0 if a.step_id == request.step_id else 1,
                abs(a.position - position),
                len(changes),
                a.index,
            )
            if a.index in self._taken:
                if fallback is None or score < fallback[0]:
                    fallback = (score, a, changes)
                continue
            if best is None or score < best[0]:
                best = (score, a, changes)
        chosen = best or fallback
        if chosen is None:
            return None, []
        return chosen[1], chosen[2]


def _request_inputs(request: Request) -> Any:
    if request.inputs is None and request.inputs_sha256 is not None:
        return {"sha256": request.inputs_sha256.removeprefix("sha256:")}
    return request.inputs


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Divergence:
    """One place where the replay departed from the recording."""

    kind: DivergenceKind
    message: str
    step_id: str | None
    position: int
    original: Action | None
    replay: Action | None
    changes: tuple[Change, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "message": self.message,
            "step_id": self.step_id,
            "position": self.position,
        }
        if self.original is not None:
            out["original"] = self.original.to_json()
        if self.replay is not None:
            out["replay"] = self.replay.to_json()
        if self.changes:
            out["diff"] = [c.to_json() for c in self.changes]
        return out


@dataclass(frozen=True)
class ComparisonRow:
    """One line of the comparison table: action, original, replay, status."""

    action: str
    step_id: str | None
    position: int
    original: str
    replay: str
    status: Status
    served: bool
    original_seq: int | None
    replay_seq: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "step_id": self.step_id,
            "position": self.position,
            "original": self.original,
            "replay": self.replay,
            "status": self.status,
            "served": self.served,
            "original_seq": self.original_seq,
            "replay_seq": self.replay_seq,
        }


@dataclass(frozen=True)
class ReplayReport:
    """What a replay established (SPEC.md, "Replay report")."""

    original_run_id: str
    original_head: str
    original_digest: str
    replay_run_id: str | None
    currency: str | None
    original_cost: Decimal
    replay_cost: Decimal
    actions: int
    matched: int
    served: int
    live: int
    stopped: str | None  # the miss (or error) that stopped the replay, if any
    divergences: tuple[Divergence, ...]
    rows: tuple[ComparisonRow, ...]
    original_status: str = "completed"
    original_error: str | None = None
    replay_status: str | None = None  # None: not known (the replay run is still open)
    replay_error: str | None = None

    @property
    def savings(self) -> Decimal:
        return self.original_cost - self.replay_cost

    @property
    def match_rate(self) -> Decimal:
        """Matched rows / all rows, in percent with one decimal (100 when there are none)."""
        if not self.rows:
            return Decimal(100)
        return (Decimal(100) * self.matched / len(self.rows)).quantize(Decimal("0.1"))

    @property
    def same_outcome(self) -> bool:
        """The replay ended as the original did (completed, or failed with the same
        error type); True while the replay's outcome is not known."""
        if self.replay_status is None:
            return True
        return (self.replay_status, self.replay_error) == (
            self.original_status,
            self.original_error,
        )

    @property
    def ok(self) -> bool:
        """Nothing diverged, nothing stopped the replay, and it ended as the original."""
        return not self.divergences and self.stopped is None and self.same_outcome

    def counts(self) -> dict[str, int]:
        c = Counter(d.kind for d in self.divergences)
        return {k: c[k] for k in DIVERGENCE_KINDS if c[k]}

    def to_json(self) -> dict[str, Any]:
        return {
            "report": "fleetledger.replay-report/v1",
            "original": {
                "run_id": self.original_run_id,
                "chain_head": self.original_head,
                "digest": self.original_digest,
            },
            "replay_run_id": self.replay_run_id,
            "currency": self.currency,
            "original_cost": money_str(self.original_cost),
            "replay_cost": money_str(self.replay_cost),
            "savings": money_str(self.savings),
            "actions": self.actions,
            "matched": self.matched,
            "served": self.served,
            "live": self.live,
            "match_rate": str(self.match_rate),
            "divergence_count": len(self.divergences),
            "divergences_by_kind": self.counts(),
            "stopped": self.stopped,
            "outcome": {
                "original": self.original_status,
                "original_error": self.original_error,
                "replay": self.replay_status,
                "replay_error": self.replay_error,
                "same": self.same_outcome,
            },
            "ok": self.ok,
            "divergences": [d.to_json() for d in self.divergences],
            "comparison": [r.to_json() for r in self.rows],
        }


def _lis_members(values: Sequence[int]) -> set[int]:
    """Positions (into ``values``) of one longest strictly increasing subsequence."""
    import bisect

    tails: list[int] = []
    tails_at: list[int] = []
    prev = [-1] * len(values)
    for i, v in enumerate(values):
        j = bisect.bisect_left(tails, v)
        if j == len(tails):
            tails.append(v)
            tails_at.append(i)
        else:
            tails[j] = v
            tails_at[j] = i
        prev[i] = tails_at[j - 1] if j > 0 else -1
    out: set[int] = set()
    i = tails_at[-1] if tails_at else -1
    while i >= 0:
        out.add(i)
        i = prev[i]
    return out


def _miss_action(miss: Miss, index: int) -> Action:
    r = miss.request
    return Action(
        index=index,
        seq=None,
        entry_hash=None,
        ts=None,
        kind=r.kind,  # type: ignore[arg-type]
        name=r.name,
        provider=r.provider,
        step_id=r.step_id,
        position=miss.position,
        attempt=1,
        inputs=r.inputs,
        outputs=None,
        inputs_sha256=r.inputs_sha256,
        key=miss.key,
    )


def compare(
    recording: Recording,
    replay: Sequence[Action],
    *,
    served: Mapping[str, int] | None = None,
    misses: Sequence[Miss] = (),
    replay_run_id: str | None = None,
    stopped: str | None = None,
    replay_status: str | None = None,
    replay_error: str | None = None,
) -> ReplayReport:
    """The report of a replay whose actions are ``replay`` (in seq order).

    ``served``: how many calls of each key were answered from the recording (the first
    ones of that key in the replay); the others were re-executed, and their results are
    compared with the recording's.  ``misses``: calls the recording could not answer; a
    miss that was not made live stopped the replay (``stopped`` says why).
    ``replay_status``/``replay_error``: how the replay ended (``completed``, or ``failed``
    with the error type), compared with the original's.
    """
    original = list(recording.actions)
    served_left: Counter[str] = Counter(served or {})
    stopping = [m for m in misses if not m.live]
    if stopping and stopped is None:
        stopped = stopping[0].message()
    # the stopping miss is an attempted action of the replay; the SDK records it as a call
    # failed with ReplayMissError, else it is added here
    attempted = list(replay)
    recorded_misses = {
        a.key for a in attempted if a.seq is not None and a.error_type == "ReplayMissError"
    }
    for m in stopping[:1]:
        if m.key not in recorded_misses:
            attempted.append(_miss_action(m, len(attempted)))

    # 1. pair by key, in order
    queues: dict[str, list[Action]] = defaultdict(list)
    for a in original:
        queues[a.key].append(a)
    pair_of: dict[int, Action] = {}  # replay action index -> original
    was_served: dict[int, bool] = {}
    for r in attempted:
        if r.seq is None:
            continue
        queue = queues.get(r.key)
        if queue:
            o = queue.pop(0)
            pair_of[r.index] = o
            was_served[r.index] = served_left[r.key] > 0 and r.kind in _SERVED_KINDS
            if was_served[r.index]:
                served_left[r.key] -= 1
    paired_orig = {o.index for o in pair_of.values()}

    # 2. leftovers: same step, kind and name -> input mismatch; same step -> action mismatch
    left_o = [o for o in original if o.index not in paired_orig]
    left_r = [r for r in attempted if r.index not in pair_of]
    mismatch: dict[int, tuple[Action, DivergenceKind]] = {}
    used_o: set[int] = set()
    for r in left_r:
        for o in left_o:
            if o.index in used_o or (o.step_id, o.kind, o.name) != (r.step_id, r.kind, r.name):
                continue
            mismatch[r.index] = (o, "input_mismatch")
            used_o.add(o.index)
            break
    for r in left_r:
        if r.index in mismatch or r.kind == "artifact":
            continue
        for o in left_o:
            if (
                o.index in used_o
                or (o.step_id, o.position) != (r.step_id, r.position)
                or o.kind == "artifact"
            ):
                continue
            mismatch[r.index] = (o, "action_mismatch")
            used_o.add(o.index)
            break

    # 3. reorders among the key-paired actions: outside one longest increasing run
    order = [r for r in attempted if r.index in pair_of]
    keep = _lis_members([pair_of[r.index].index for r in order])
    reordered = {r.index for i, r in enumerate(order) if i not in keep}

    divergences: list[Divergence] = []
    rows: list[ComparisonRow] = []
    matched = 0
    n_served = 0

    def row(o: Action | None, r: Action | None, status: Status, is_served: bool) -> None:
        subject = r if r is not None else o
        assert subject is not None
        part: Literal["inputs", "outputs"] = (
            "inputs" if status in ("input_mismatch", "action_mismatch") else "outputs"
        )
        rows.append(
            ComparisonRow(
                action=subject.label,
                step_id=subject.step_id,
                position=subject.position,
                original=o.summary(part) if o is not None else "-",
                replay=(
                    r.summary(part)
                    if r is not None and r.seq is not None
                    else (r.summary("inputs") + " (not recorded)" if r is not None else "-")
                ),
                status=status,
                served=is_served,
                original_seq=o.seq if o is not None else None,
                replay_seq=r.seq if r is not None else None,
            )
        )

    for r in attempted:
        paired = pair_of.get(r.index)
        if paired is not None:
            o = paired
            is_served = was_served.get(r.index, False)
            n_served += is_served
            if r.index in reordered:
                divergences.append(
                    Divergence(
                        "reordered",
                        f"{r.label} at {r.where} was recorded at {o.where} (seq {o.seq}); "
                        "served its own recorded answer",
                        r.step_id,
                        r.position,
                        o,
                        r,
                    )
                )
                row(o, r, "reordered", is_served)
                continue
            changes = (
                ()
                if is_served
                else tuple(_prefixed(diff(o.result(), r.result(), limit=_DIFF_LIMIT), "/payload"))
            )
            if changes:
                divergences.append(
                    Divergence(
                        "output_mismatch",
                        f"{r.label} at {r.where}: same inputs as recorded (seq {o.seq}), "
                        f"different result: " + "; ".join(c.describe() for c in changes[:3]),
                        r.step_id,
                        r.position,
                        o,
                        r,
                        changes,
                    )
                )
                row(o, r, "output_mismatch", is_served)
            else:
                matched += 1
                row(o, r, "match", is_served)
            continue
        found = mismatch.get(r.index)
        if found is not None:
            o, kind = found
            if kind == "input_mismatch":
                changes = tuple(
                    _prefixed(diff(o.request(), r.request(), limit=_DIFF_LIMIT), "/payload")
                )
                msg = (
                    f"{r.label} at {r.where}: inputs differ from the recording (seq {o.seq}): "
                    + "; ".join(c.describe() for c in changes[:3])
                )
            else:
                changes = ()
                msg = f"expected {o.label} at {o.where} (seq {o.seq}), replay made {_made(r, o)}"
            divergences.append(Divergence(kind, msg, r.step_id, r.position, o, r, changes))
            row(o, r, kind, False)
            continue
        divergences.append(
            Divergence(
                "extra",
                f"{r.label} at {r.where} is not in the recording"
                + (" (made live)" if r.seq is not None and _was_live(r, misses) else ""),
                r.step_id,
                r.position,
                None,
                r,
            )
        )
        row(None, r, "extra", False)

    for o in original:
        if o.index in paired_orig or o.index in used_o:
            continue
        if stopped is not None:
            row(o, None, "not_reached", False)
            continue
        divergences.append(
            Divergence(
                "missing",
                f"recorded {o.label} at {o.where} (seq {o.seq}) was not made by the replay",
                o.step_id,
                o.position,
                o,
                None,
            )
        )
        row(o, None, "missing", False)

    live = sum(1 for m in misses if m.live)
    replay_cost = sum((a.cost for a in replay if a.kind == "model_io"), Decimal(0))
    return ReplayReport(
        original_run_id=recording.run_id,
        original_head=recording.head,
        original_digest=recording.digest,
        replay_run_id=replay_run_id,
        currency=recording.currency,
        original_cost=recording.cost,
        replay_cost=replay_cost,
        actions=len(original),
        matched=matched,
        served=n_served,
        live=live,
        stopped=stopped,
        divergences=tuple(divergences),
        rows=tuple(rows),
        original_status=recording.status,
        original_error=recording.error_type,
        replay_status=replay_status,
        replay_error=replay_error,
    )


def _made(r: Action, o: Action) -> str:
    if r.kind == o.kind and r.kind == "tool_call":
        return f"`{r.name}`"
    return r.label


def _was_live(r: Action, misses: Sequence[Miss]) -> bool:
    return any(m.live and m.key == r.key for m in misses)


def _prefixed(changes: Sequence[Change], prefix: str) -> list[Change]:
    return [Change(prefix + c.pointer, c.kind, c.before, c.after) for c in changes]
