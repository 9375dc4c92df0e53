"""Fault injection against ``fleetledger worker``: traffic, bad inputs, an oracle, a report.

The oracle is computed from what the test publishes (the events it built, the bad bytes it
sent and where they landed), never from the product's outputs; the outputs are then read
back and compared with it:

* **lost**: a ledger entry, totals record, bundle or intercept the oracle expects is missing;
* **duplicated**: a (run, seq) published with two different entries, an entry the run
  cannot have, a bundle with more events than the run has;
* **miscounted**: totals or a bundle whose events, cost or status differ from the oracle, or
  a bundle that does not verify;
* **dead-lettered**: dead letters by source position; each bad input must be there exactly
  once (with its original bytes) and no valid input at all;
* **unplanned exits**: worker processes that ended without the test stopping them;
* **longest stall**: the longest time a partition had published input that its committed
  offset did not advance over.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from fleetledger.kernel.config import Settings
from fleetledger.processors.evidence import verify_bundle_bytes
from fleetledger.schemas import Codec, TraceEvent

from . import eventdicts as ev

CODEC = Codec()
#: The largest message the SDK sends with the default settings: the recorder refuses
#: (per call, without raising into the agent) an encoded message over
#: ``FLEETLEDGER_MAX_MESSAGE_BYTES``; a single event is never split.
SDK_LARGEST_MESSAGE = cast(int, Settings.model_fields["max_message_bytes"].default)

FULL = os.environ.get("FLEETLEDGER_FAULTS", "").lower() == "full"


# --------------------------------------------------------------------------- traffic


@dataclass
class RunOracle:
    run_id: str
    events: int  # committed events: seqs 0..events-1
    cost: Decimal
    status: str  # completed, failed, running, open
    bundled: bool
    intercepts: set[str] = field(default_factory=set)  # ids that must be raised


@dataclass
class Traffic:
    """What the test publishes: valid messages (in order), bad ones, and the oracle."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    bad: list[tuple[str, bytes]] = field(default_factory=list)  # (kind, bytes)
    oracle: dict[str, RunOracle] = field(default_factory=dict)
    events: int = 0

    def all_rows(self, rng: random.Random) -> list[tuple[str, bytes, bool]]:
        """Valid messages in order with the bad ones spread among them: (key, value, bad)."""
        rows = [(k, v, False) for k, v in self.messages]
        for kind, value in self.bad:
            rows.insert(rng.randrange(len(rows) + 1), (f"bad-{kind}", value, True))
        return rows


def encode(objs: list[dict[str, Any]]) -> bytes:
    return CODEC.encode_batch([TraceEvent.model_validate(o) for o in objs])


def _random_event(rng: random.Random, run_id: str, seq: int) -> tuple[dict[str, Any], Decimal]:
    kind = rng.choice(["model_io", "model_io", "tool_call", "step_started", "step_completed"])
    step = rng.choice(["plan", "write", "check"])
    if kind == "model_io":
        cost = Decimal(rng.randrange(1, 10**6)) / Decimal(10**7)
        return ev.model_io(run_id, seq, str(cost), step=step), cost
    if kind == "tool_call":
        payload = {
            "gen_ai_tool_name": "search",
            "inputs": json.dumps({"q": f"query {seq}"}),
            "outputs": None,
            "duration_ms": rng.randrange(1, 5000),
            "outcome": rng.choice(["success", "error"]),
        }
        return ev.event(run_id, seq, "tool_call", payload, step), Decimal(0)
    if kind == "step_started":
        return ev.event(run_id, seq, "step_started", {"attempt": 1}, step), Decimal(0)
    payload = {"outcome": "success", "duration_ms": rng.randrange(1, 9000)}
    return ev.event(run_id, seq, "step_completed", payload, step), Decimal(0)


def _batches(rng: random.Random, objs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out, i = [], 0
    while i < len(objs):
        n = rng.randint(1, 4)
        out.append(objs[i : i + n])
        i += n
    return out


def build_traffic(seed: int, runs: int, prefix: str = "r") -> Traffic:
    """Ordinary runs (finished, failed, still open), interleaved as a partition would carry
    them, some with their messages out of order; plus odd-but-valid runs."""
    rng = random.Random(seed)
    t = Traffic()
    per_run: list[list[bytes]] = []
    for i in range(runs):
        run_id = f"{prefix}-{seed}-{i}"
        objs = [ev.started(run_id, budget="1000")]
        cost = Decimal(0)
        for _ in range(rng.randint(1, 12)):
            obj, c = _random_event(rng, run_id, len(objs))
            objs.append(obj)
            cost += c
        end = rng.random()
        status = "running"
        if end < 0.75:
            objs.append(ev.completed(run_id, len(objs)))
            status = "completed"
        elif end < 0.85:
            objs.append(ev.failed(run_id, len(objs)))
            status = "failed"
        oracle = RunOracle(run_id, len(objs), cost, status, status != "running")
        if status == "failed":
            oracle.intercepts.add(f"{run_id}:run_failed:{len(objs) - 1}")
        t.oracle[run_id] = oracle
        t.events += len(objs)
        msgs = [encode(b) for b in _batches(rng, objs)]
        if rng.random() < 0.1:
            msgs.reverse()  # odd but valid: held until the gap fills
        per_run.append(msgs)
    # interleave, keeping each run's own order
    cursors = [0] * len(per_run)
    live = [i for i in range(len(per_run)) if per_run[i]]
    while live:
        i = rng.choice(live)
        t.messages.append((f"{prefix}-{seed}-{i}", per_run[i][cursors[i]]))
        cursors[i] += 1
        if cursors[i] == len(per_run[i]):
            live.remove(i)
    return t


def add_odd_runs(t: Traffic, tag: str) -> None:
    """Valid but unusual: seq 0 not run_started, run_started twice, an event after the end,
    an equivocation, and the huge payloads (escaping makes their outputs outgrow a record)."""

    def run(run_id: str, objs: list[dict[str, Any]], **kw: Any) -> None:
        cost = sum(
            (Decimal(o["payload"]["cost"]["amount"]) for o in objs if o["type"] == "model_io"),
            Decimal(0),
        )
        t.oracle[run_id] = RunOracle(run_id, len(objs), cost, **kw)
        t.events += len(objs)

    r = f"odd-seq0-{tag}"
    t.messages.append((r, encode([ev.completed(r, 0)])))
    run(r, [ev.completed(r, 0)], status="completed", bundled=True)
    t.oracle[r].intercepts.add(f"{r}:malformed_run:0")

    r = f"odd-twice-{tag}"
    objs = [ev.started(r), ev.model_io(r, 1, "0.25"), {**ev.started(r), "seq": 2}]
    objs.append(ev.completed(r, 3))
    t.messages.append((r, encode(objs)))
    run(r, objs, status="completed", bundled=True)
    t.oracle[r].intercepts.add(f"{r}:malformed_run:2")

    r = f"odd-after-{tag}"
    objs = [ev.started(r), ev.model_io(r, 1, "0.5"), ev.completed(r, 2)]
    t.messages += [(r, encode(objs)), (r, encode([ev.model_io(r, 3, "9")]))]
    run(r, objs, status="completed", bundled=True)
    t.oracle[r].intercepts.add(f"{r}:event_after_terminal:3")

    r = f"odd-equivocation-{tag}"
    objs = [ev.started(r), ev.model_io(r, 1, "0.125")]
    other = {**ev.model_io(r, 1, "7"), "event_id": "00000000-0000-4000-8000-ffffffffffff"}
    t.messages += [(r, encode(objs)), (r, encode([other])), (r, encode([ev.completed(r, 2)]))]
    objs.append(ev.completed(r, 2))
    run(r, objs, status="completed", bundled=True)
    t.oracle[r].intercepts.add(f"{r}:equivocation:1")

    for name, text in huge_inputs():
        r = f"huge-{name}-{tag}"
        call = {
            "gen_ai_tool_name": "upload",
            "inputs": text,
            "outputs": None,
            "duration_ms": 5,
            "outcome": "success",
        }
        objs = [ev.started(r), ev.event(r, 1, "tool_call", call, "plan"), ev.completed(r, 2)]
        t.messages += [(r, encode(objs[:1])), (r, encode(objs[1:2])), (r, encode(objs[2:]))]
        run(r, objs, status="completed", bundled=True)


def huge_inputs() -> list[tuple[str, str]]:
    """The payloads whose outputs outgrow a Kafka record, and the SDK's largest message."""
    probe = ev.event(
        "huge-sdkmax-x",
        1,
        "tool_call",
        {
            "gen_ai_tool_name": "upload",
            "inputs": "",
            "outputs": None,
            "duration_ms": 5,
            "outcome": "success",
        },
        "plan",
    )
    # the SDK's envelope carries a little more than the probe (producer, trace context)
    overhead = len(encode([probe])) + 512
    return [
        ("ctl", "\x01" * 200_000),  # 200 KB message, each byte escaped to six in JSON
        ("strings", json.dumps([""] * 200_000)),  # 800 KB: '""' becomes '\"\"'
        ("sdkmax", "\x01" * (SDK_LARGEST_MESSAGE - overhead)),
    ]


def bad_inputs(tag: str) -> list[tuple[str, bytes]]:
    """Messages a consumer must dead-letter, of many kinds (each one distinct bytes)."""
    good = encode([ev.started(f"bad-{tag}"), ev.model_io(f"bad-{tag}", 1, "0.1")])
    batch = CODEC.schema("batch")
    event_schema = CODEC.schema("event")

    def raw_batch(mutate: Callable[[dict[str, Any]], None], run_id: str = f"bad-{tag}") -> bytes:
        rec = Codec._record(TraceEvent.model_validate(ev.model_io(f"bad-{tag}", 1, "0.1")), batch)
        mutate(rec)
        return Codec._write(batch, {"run_id": run_id, "events": [rec]})

    def set_path(*path: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def mutate(rec: dict[str, Any]) -> None:
            target = rec
            for p in path[:-1]:
                target = target[p] if not isinstance(target[p], tuple) else target[p][1]
            target[path[-1]] = value

        return mutate

    def payload(rec: dict[str, Any]) -> dict[str, Any]:
        p = rec["payload"]
        return cast(dict[str, Any], p[1] if isinstance(p, tuple) else p)

    def negative_tokens(rec: dict[str, Any]) -> None:
        payload(rec)["gen_ai_usage_input_tokens"] = -5

    def lower_currency(rec: dict[str, Any]) -> None:
        payload(rec)["cost"]["currency"] = "usd"

    mixed = Codec._record(TraceEvent.model_validate(ev.started(f"other-{tag}")), batch)
    mixed_batch = Codec._write(
        batch,
        {
            "run_id": f"bad-{tag}",
            "events": [
                Codec._record(TraceEvent.model_validate(ev.started(f"bad-{tag}")), batch),
                mixed,
            ],
        },
    )
    fp_unknown = good[:2] + bytes(8) + good[10:]
    return [
        ("garbage", f"\x00garbage {tag}, not a fleetledger message".encode()),
        ("empty", b""),
        ("short", b"\xc3\x01" + tag.encode()[:3]),
        ("bad-magic", b"\xc3\x02" + good[2:] + tag.encode()),
        ("unknown-fingerprint", fp_unknown + tag.encode()),
        ("truncated", good[: len(good) // 2] + tag.encode()[:0]),
        ("trailing-bytes", good + b"\x00" + tag.encode()),
        ("seq-out-of-range", raw_batch(set_path("seq", value=2**60))),
        ("negative-tokens", raw_batch(negative_tokens)),
        ("lowercase-currency", raw_batch(lower_currency)),
        ("empty-run-id", raw_batch(set_path("run_id", value=""), run_id="")),
        ("mixed-runs", mixed_batch),
        ("empty-batch", Codec._write(batch, {"run_id": f"bad-{tag}", "events": []})),
        ("event-schema-garbage-body", event_schema.fingerprint.join([b"\xc3\x01", b"\xff" * 9])),
    ]


# --------------------------------------------------------------------------- outputs


@dataclass
class Outputs:
    """The product's outputs, normalized across runtimes."""

    ledger: dict[tuple[str, int], set[bytes]]  # every distinct entry value per (run, seq)
    totals: Mapping[str, Mapping[str, Any]]
    intercepts: Mapping[str, Mapping[str, Any]]
    bundles: dict[str, bytes]
    deadletters: dict[str, list[bytes]]  # by source position key: every value published


@dataclass
class Report:
    runtime: str
    events_published: int = 0
    messages_published: int = 0
    bad_published: int = 0
    packs_published: int = 0  # EventPack records among what was published
    bad_in_packs: int = 0  # bad inputs published as an item of a pack
    lost: int = 0
    duplicated: int = 0
    miscounted: int = 0
    deadlettered: int = 0
    bad_not_deadlettered: int = 0
    valid_deadlettered: int = 0
    unplanned_exits: int = 0
    kills: int = 0
    restarts: int = 0
    longest_stall_s: float = 0.0
    stall_where: str = ""
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.runtime}: {self.events_published} events in {self.messages_published} "
            f"messages + {self.bad_published} bad ({self.packs_published} packs, "
            f"{self.bad_in_packs} bad in packs); "
            f"kills {self.kills}; lost {self.lost}, "
            f"duplicated {self.duplicated}, miscounted {self.miscounted}, dead-lettered "
            f"{self.deadlettered} (bad missing {self.bad_not_deadlettered}, valid "
            f"{self.valid_deadlettered}), unplanned exits {self.unplanned_exits}, longest "
            f"stall {self.longest_stall_s:.1f}s ({self.stall_where or '-'})"
        )

    def count_published(self, rec: Record, expected: Mapping[str, bytes]) -> None:
        """Count a published record whose bad inputs must be dead-lettered at ``expected``."""
        self.bad_published += len(expected)
        self.messages_published += len(rec.items) - len(expected)
        self.packs_published += rec.packed
        self.bad_in_packs += len(expected) if rec.packed else 0

    def ok(self, max_stall_s: float = 10.0) -> bool:
        return (
            self.lost == self.duplicated == self.miscounted == 0
            and self.bad_not_deadlettered == self.valid_deadlettered == 0
            and self.unplanned_exits == 0
            and self.longest_stall_s <= max_stall_s
        )

    def save(self, folder: Path) -> None:
        """Append the report to ``$FLEETLEDGER_FAULTS_REPORT`` (or ``folder``) as JSON."""
        target = Path(os.environ.get("FLEETLEDGER_FAULTS_REPORT", folder / "faults.jsonl"))
        with target.open("a") as f:
            f.write(json.dumps({k: v for k, v in vars(self).items()}) + "\n")


def check(
    report: Report,
    oracle: Mapping[str, RunOracle],
    outputs: Outputs,
    expected_deadletters: Mapping[str, bytes],
    valid_values: set[bytes],
) -> Report:
    """Compare the outputs with the oracle; fill and return ``report``."""
    p = report.problems
    by_run: dict[str, dict[int, set[bytes]]] = defaultdict(dict)
    for (run_id, seq), values in outputs.ledger.items():
        by_run[run_id][seq] = values
    for run_id, o in oracle.items():
        entries = by_run.get(run_id, {})
        missing = [s for s in range(o.events) if s not in entries]
        if missing:
            report.lost += len(missing)
            p.append(f"{run_id}: ledger entries {missing[:5]} missing")
        extra = [s for s in entries if s >= o.events]
        doubled = [s for s, v in entries.items() if len(v) > 1]
        if extra or doubled:
            report.duplicated += len(extra) + len(doubled)
            p.append(f"{run_id}: entries beyond the run {extra[:5]}, doubled {doubled[:5]}")
        totals = outputs.totals.get(run_id)
        if totals is None:
            report.lost += 1
            p.append(f"{run_id}: no totals")
        else:
            found = (totals["events"], Decimal(totals["cost"]), totals["status"])
            want = (o.events, o.cost, o.status)
            if found != want:
                report.miscounted += 1
                p.append(f"{run_id}: totals (events, cost, status) {found}, expected {want}")
        bundle = outputs.bundles.get(run_id)
        if o.bundled and bundle is None:
            report.lost += 1
            p.append(f"{run_id}: no bundle")
        elif bundle is not None:
            if not o.bundled:
                report.duplicated += 1
                p.append(f"{run_id}: a bundle of a run that has not ended")
            try:
                verify_bundle_bytes(bundle)
                b = json.loads(bundle)
                found = (len(b["events"]), Decimal(b["totals"]["cost"]), b["run"]["status"])
                if found != (o.events, o.cost, o.status):
                    report.miscounted += 1
                    p.append(f"{run_id}: bundle {found}, expected {(o.events, o.cost, o.status)}")
            except Exception as exc:  # a bundle that does not verify is a miscount
                report.miscounted += 1
                p.append(f"{run_id}: bundle does not verify: {exc}")
        for iid in o.intercepts:
            if iid not in outputs.intercepts:
                report.lost += 1
                p.append(f"intercept {iid} missing")
    unknown = set(by_run) - set(oracle)
    if unknown:
        report.duplicated += len(unknown)
        p.append(f"ledger entries of runs never published: {sorted(unknown)[:5]}")
    report.deadlettered = len(outputs.deadletters)
    for key, value in expected_deadletters.items():
        found_values = outputs.deadletters.get(key)
        if not found_values or set(found_values) != {value}:
            report.bad_not_deadlettered += 1
            p.append(f"bad input at {key}: dead letters {found_values!r:.80}")
    for key, dl_values in outputs.deadletters.items():
        if key not in expected_deadletters:
            report.valid_deadlettered += 1
            kind = "a valid message" if set(dl_values) & valid_values else "an unknown message"
            p.append(f"dead letter at {key} of {kind}")
    return report


# --------------------------------------------------------------------------- processes


class Workers:
    """Worker processes started, killed and restarted by the test; every other exit is
    an unplanned one (counted, logged, and the worker restarted so the test goes on)."""

    def __init__(self, argv: list[str], env: Mapping[str, str], logs: Path) -> None:
        self.argv = argv
        self.env = dict(env)
        self.logs = logs
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.kills = 0
        self.last_kill = 0.0  # time.monotonic() of the last SIGKILL
        self.restarts = 0
        self.unplanned: list[str] = []
        self._n = 0

    def start(self) -> int:
        self._n += 1
        slot = self._n
        log = (self.logs / f"worker-{slot}.log").open("ab")
        proc = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()
        self.procs[slot] = proc
        self.note(f"started worker {slot}")
        return slot

    def note(self, what: str) -> None:
        """A line in the test's timeline (``timeline.log`` beside the worker logs)."""
        with (self.logs / "timeline.log").open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {what}\n")

    def kill(self, slot: int) -> None:
        proc = self.procs.pop(slot)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            self.kills += 1
            self.last_kill = time.monotonic()
            self.note(f"killed worker {slot}")
        else:
            self._unplanned(slot, proc)
        proc.wait(10)

    def kill_random(self, rng: random.Random) -> None:
        self.kill(rng.choice(sorted(self.procs)))

    def _unplanned(self, slot: int, proc: subprocess.Popen[bytes]) -> None:
        tail = (self.logs / f"worker-{slot}.log").read_bytes()[-3000:].decode("utf-8", "replace")
        self.unplanned.append(f"worker {slot} exited with {proc.returncode}:\n{tail}")

    def reap(self) -> None:
        """Count and replace workers that exited on their own."""
        for slot, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.procs.pop(slot)
                self._unplanned(slot, proc)
                self.restarts += 1
                self.start()

    def stop_all(self, timeout_s: float = 30.0) -> None:
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for slot, proc in list(self.procs.items()):
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            if proc.returncode not in (0, -signal.SIGTERM):
                self._unplanned(slot, proc)
            self.procs.pop(slot)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()


def fleetledger_cli() -> str:
    return str(Path(sys.executable).with_name("fleetledger"))


class StallMonitor:
    """Samples (committed, end) per partition and keeps the longest time a partition
    was behind without its committed offset moving."""

    def __init__(self, sample: Callable[[], Mapping[int, tuple[int, int]]], every_s: float = 0.25):
        self._sample = sample
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.longest = 0.0
        self.where = ""
        self.errors = 0
        self._paused = threading.Event()

    def pause(self) -> None:
        """Stop measuring (a planned stop of every worker); :meth:`resume` starts afresh."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def _loop(self) -> None:
        last: dict[int, tuple[int, float]] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            if self._paused.is_set():
                last.clear()
                self._stop.wait(self._every)
                continue
            try:
                sample = self._sample()
            except Exception:
                self.errors += 1
                sample = {}
            for part, (committed, end) in sample.items():
                prev = last.get(part)
                if prev is None or committed != prev[0] or committed >= end:
                    last[part] = (committed, now)
                    continue
                stalled = now - prev[1]
                if stalled > self.longest:
                    self.longest = stalled
                    self.where = (
                        f"partition {part} at offset {committed} of {end}, "
                        f"{time.strftime('%H:%M:%S')}"
                    )
            self._stop.wait(self._every)

    def __enter__(self) -> StallMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def wait_until(
    what: str, check: Callable[[], bool], timeout_s: float, tick: Callable[[], None]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tick()
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")


def values_of(rows: Iterable[tuple[str, bytes, bool]]) -> set[bytes]:
    return {v for _k, v, bad in rows if not bad}


@dataclass
class Record:
    """One log record to publish: a message, or an EventPack of ``items`` (value, bad)."""

    key: str
    partition: int
    value: bytes
    items: list[tuple[bytes, bool]]
    packed: bool

    def deadletter_keys(self, topic: str, offset: int) -> dict[str, bytes]:
        """Where each bad input of this record must be dead-lettered from, and its bytes."""
        at = f"{topic}:{self.partition}:{offset}"
        return {
            (f"{at}:{i}" if self.packed else at): value
            for i, (value, bad) in enumerate(self.items)
            if bad
        }


def as_records(
    rows: list[tuple[str, bytes, bool]],
    partition_of: Callable[[str], int],
    rng: random.Random | None = None,
    max_pack: int = 8,
) -> list[Record]:
    """``rows`` as log records: one per row, or (with ``rng``) the rows of one partition
    packed into EventPacks of 1 to ``max_pack`` consecutive messages, as the SDK packs
    them (a group of one goes out as it is).  Bad inputs are packed like any message, so
    each must be dead-lettered alone, from its place in its pack."""
    by_partition: dict[int, list[tuple[str, bytes, bool]]] = defaultdict(list)
    for row in rows:
        by_partition[partition_of(row[0])].append(row)
    out = []
    codec = Codec()
    for partition, group in by_partition.items():
        i = 0
        while i < len(group):
            n = rng.randint(1, max_pack) if rng is not None else 1
            part = group[i : i + n]
            i += n
            items = [(v, bad) for _k, v, bad in part]
            if len(part) == 1:
                out.append(Record(part[0][0], partition, part[0][1], items, packed=False))
            else:
                value = codec.encode_pack([v for v, _bad in items], check=False)
                out.append(Record(part[0][0], partition, value, items, packed=True))
    return out


# --------------------------------------------------------------------------- kafka


def worker_env(settings: Any) -> dict[str, str]:
    """The environment of a ``fleetledger worker`` subprocess for ``settings``."""
    s = settings
    return {
        **os.environ,
        "FLEETLEDGER_BROKER": s.broker,
        "FLEETLEDGER_TOPIC_PREFIX": s.topic_prefix,
        "FLEETLEDGER_GROUP_ID": s.group_id,
        "FLEETLEDGER_PARTITIONS": str(s.partitions),
        "FLEETLEDGER_ENABLE_IDEMPOTENCE": "false",
        "FLEETLEDGER_SESSION_TIMEOUT_S": str(s.session_timeout_s),
        "FLEETLEDGER_ARCHIVE_DIR": str(s.archive_dir),
        "FLEETLEDGER_MAX_MESSAGE_BYTES": str(s.max_message_bytes),
        "FLEETLEDGER_GAP_TIMEOUT_S": str(s.gap_timeout_s),
    }


class KafkaPublisher:
    """Publishes rows to the events topic the way the SDK does (key = run id, murmur2
    partition) and remembers where each landed: the end offset per partition, and the
    source position of every bad input (where its dead letter must come from)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        pack_rng: random.Random | None = None,
        report: Report | None = None,
    ) -> None:
        from aiokafka import AIOKafkaProducer

        self.pack_rng = pack_rng  # when set, publish() packs the rows of one partition
        self.report = report  # when set, every acknowledged record is counted there
        self.topic = topic
        self.partitions = partitions
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=False,
            max_request_size=2_000_000,
            linger_ms=2,
        )
        self.ends: dict[int, int] = defaultdict(int)
        self.expected_deadletters: dict[str, bytes] = {}

    async def __aenter__(self) -> KafkaPublisher:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def publish(self, rows: list[tuple[str, bytes, bool]], *, pack: bool = True) -> None:
        """Publish ``rows`` (key, value, bad) in order per run; packed when the publisher
        has a ``pack_rng`` and ``pack`` is true."""
        from fleetledger.processors.runtimes.kafka_io import partition_for

        records = as_records(
            rows,
            lambda key: partition_for(key, self.partitions),
            self.pack_rng if pack else None,
        )
        sent = []
        for rec in records:
            fut = await self.producer.send(
                self.topic, rec.value, key=rec.key.encode(), partition=rec.partition
            )
            sent.append((fut, rec))
        for fut, rec in sent:
            md = await fut
            self.ends[md.partition] = max(self.ends[md.partition], md.offset + 1)
            expected = rec.deadletter_keys(self.topic, md.offset)
            self.expected_deadletters.update(expected)
            if self.report is not None:
                self.report.count_published(rec, expected)


class GroupOffsets:
    """Committed offsets of a consumer group, read from a thread of its own (for the
    stall monitor) or awaited in the test's loop."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.bootstrap, self.group, self.topic, self.partitions = (
            bootstrap,
            group,
            topic,
            partitions,
        )
        self._loop: Any = None
        self._admin: Any = None

    async def fetch(self, admin: Any = None) -> dict[int, int]:
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        own = admin is None
        if own:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
        try:
            found = await admin.list_consumer_group_offsets(
                self.group,
                partitions=[TopicPartition(self.topic, p) for p in range(self.partitions)],
            )
        finally:
            if own:
                await admin.close()
        return {tp.partition: max(0, meta.offset) for tp, meta in found.items()}

    def sample(self, ends: Mapping[int, int]) -> dict[int, tuple[int, int]]:
        """(committed, end) per partition; runs in the calling thread's own loop."""
        import asyncio

        from aiokafka.admin import AIOKafkaAdminClient

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            self._loop.run_until_complete(self._admin.start())
        committed = self._loop.run_until_complete(self.fetch(self._admin))
        return {p: (committed.get(p, 0), ends.get(p, 0)) for p in range(self.partitions)}

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._admin.close())
            self._loop.close()
            self._loop = None


async def kafka_outputs(bootstrap: str, topics: Any) -> Outputs:
    from fleetledger.processors.runtimes.kafka_io import (
        is_manifest,
        load_archived_bundle,
        read_all,
        read_compacted,
        resolve_output,
    )

    ledger: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    for rec in await read_all(bootstrap, topics.ledger.name, timeout_s=120):
        assert rec.key is not None and rec.value is not None
        run_id, seq = rec.key.decode().rsplit(":", 1)
        ledger[(run_id, int(seq))].add(resolve_output(rec.value))
    compacted = {
        role: await read_compacted(bootstrap, getattr(topics, role).name, timeout_s=120)
        for role in ("totals", "intercepts", "bundles")
    }
    deadletters: dict[str, list[bytes]] = defaultdict(list)
    for rec in await read_all(bootstrap, topics.deadletter.name, timeout_s=120):
        assert rec.key is not None
        deadletters[rec.key.decode()].append(resolve_output(rec.value or b""))
    return Outputs(
        ledger=dict(ledger),
        totals={k: json.loads(resolve_output(v)) for k, v in compacted["totals"].items()},
        intercepts={k: json.loads(resolve_output(v)) for k, v in compacted["intercepts"].items()},
        bundles={
            k: load_archived_bundle(v) if is_manifest(v) else v
            for k, v in compacted["bundles"].items()
        },
        deadletters=dict(deadletters),
    )


async def reset_group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> None:
    """Commit offset 0 on every partition for ``group`` (its workers stopped): a replay.

    The commit is made as a member of the group (join, get every partition, commit, leave),
    retried until members that left without saying so have expired.
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.errors import KafkaError

    class AsFaust(RoundRobinPartitionAssignor):  # type: ignore[misc]  # Faust's protocol name
        name = "faust"

    tps = {TopicPartition(topic, p) for p in range(partitions)}
    deadline = time.monotonic() + 90
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            partition_assignment_strategy=(AsFaust,),
        )
        await consumer.start()
        try:
            consumer.subscribe([topic])
            while consumer.assignment() != tps:
                await consumer.getmany(timeout_ms=200)
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not join group {group} with every partition")
            await consumer.commit({tp: 0 for tp in tps})
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
        finally:
            await consumer.stop()


async def group_members(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, member count) of a consumer group, as the broker describes it."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [(_error, _group, state, _ptype, _protocol, members)] = response.groups
        return str(state), len(members)
    finally:
        await admin.close()
