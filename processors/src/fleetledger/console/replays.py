"""What the Simulation and Determinism tabs and the compare view read, over the read model.

A thin layer between the routes and the pure views (:mod:`fleetledger.processors.replay`,
``determinism``, ``rundiff``, ``approvals``, ``replayview``): it loads bundles from the
read model, finds a run's replays, and starts a replay with the agent function the
operator configured for the run's agent (``FLEETLEDGER_REPLAY_AGENTS``, or ``fleetledger
console --replay-agent``).  A replay started here never makes live calls: a call without
a recording stops it (fail closed).

Finding a run's replays: the read model keeps no labels, so the newest
:data:`REPLAY_SCAN` finished runs of the same agent and tenant started after the run are
checked for the ``fleetledger.replay_of`` label naming it (a byte search in their
canonical bundles, then the link is read properly).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetledger.kernel.errors import ConfigError, ReplayError
from fleetledger.processors.approvals import Approval, approvals
from fleetledger.processors.determinism import DeterminismReport, analyze
from fleetledger.processors.readmodel import ReadModel, RunFilter, RunQuery, RunRow
from fleetledger.processors.replay import ReplayReport
from fleetledger.processors.replayview import (
    LABEL_OF,
    ReplayLink,
    replay_link,
    report_from_bundles,
)
from fleetledger.processors.rundiff import RunDiff, diff_runs

__all__ = [
    "REPLAY_SCAN",
    "DeterminismView",
    "Replayer",
    "Replays",
    "SimulationView",
]

#: How many of the agent's newest runs are checked for replays of a run.
REPLAY_SCAN = 200
#: ``(bundle bytes, run id, agent function "package.module:function")`` -> the replay's
#: report (the replay run recorded into the console's store).
Replayer = Callable[[bytes, str, str], Awaitable[ReplayReport]]


@dataclass(frozen=True)
class ReplayOf:
    """A replay run of the run shown, with its report (or why it has none)."""

    run: RunRow
    report: ReplayReport | None
    problem: str | None = None


@dataclass(frozen=True)
class SimulationView:
    run: RunRow
    finished: bool
    agent: str | None  # the agent function a replay would run, when one is configured
    link: ReplayLink | None = None  # when the run shown is itself a replay
    own: ReplayReport | None = None  # its report against the original
    own_problem: str | None = None
    replays: tuple[ReplayOf, ...] = field(default=())


@dataclass(frozen=True)
class DeterminismView:
    run: RunRow
    report: DeterminismReport | None  # None while the run has no bundle
    against: str | None = None  # the replay whose differences are included


class Replays:
    """The tabs' data for one console (see the module docstring)."""

    def __init__(
        self,
        reads: ReadModel,
        *,
        agents: Mapping[str, str] | None = None,
        replayer: Replayer | None = None,
    ) -> None:
        self.reads = reads
        self.agents = dict(agents or {})
        self.replayer = replayer

    def bundle(self, run_id: str) -> dict[str, Any] | None:
        data = self.reads.bundle(run_id)
        return None if data is None else dict(json.loads(data))

    def _replays_of(self, run: RunRow) -> list[tuple[RunRow, dict[str, Any]]]:
        needle = f'"{LABEL_OF}":{json.dumps(run.run_id)}'.encode()
        query = RunQuery(
            RunFilter(
                status=("completed", "failed"),
                agent=run.agent_id,
                tenant=run.tenant,
                since=run.started_at,
            ),
            limit=REPLAY_SCAN,
        )
        found = []
        for other in self.reads.runs(query).runs:
            if other.run_id == run.run_id:
                continue
            data = self.reads.bundle(other.run_id)
            if data is None or needle not in data:
                continue
            bundle = json.loads(data)
            link = replay_link(bundle)
            if link is not None and link.original_run_id == run.run_id:
                found.append((other, bundle))
        return found

    def simulation(self, run: RunRow) -> SimulationView:
        agent = self.agents.get(run.agent_id) if self.replayer is not None else None
        bundle = self.bundle(run.run_id) if run.digest else None
        if bundle is None:
            return SimulationView(run, finished=False, agent=agent)
        link = replay_link(bundle)
        own = problem = None
        if link is not None:
            original = self.bundle(link.original_run_id)
            if original is None:
                problem = f"the original run {link.original_run_id} is not in this read model"
            else:
                try:
                    own = report_from_bundles(original, bundle)
                except ReplayError as exc:
                    problem = str(exc)
        replays = []
        for other, replay_bundle in self._replays_of(run):
            try:
                replays.append(ReplayOf(other, report_from_bundles(bundle, replay_bundle)))
            except ReplayError as exc:
                replays.append(ReplayOf(other, None, str(exc)))
        return SimulationView(run, True, agent, link, own, problem, tuple(replays))

    def determinism(self, run: RunRow) -> DeterminismView:
        bundle = self.bundle(run.run_id) if run.digest else None
        if bundle is None:
            return DeterminismView(run, None)
        latest = self._replays_of(run)[:1]  # the newest replay's differences count too
        report = None
        against = None
        if latest:
            other, replay_bundle = latest[0]
            try:
                report = report_from_bundles(bundle, replay_bundle)
                against = other.run_id
            except ReplayError:
                report = None
        return DeterminismView(run, analyze(bundle, replay=report), against)

    def approvals(self, run: RunRow) -> dict[str, Approval]:
        bundle = self.bundle(run.run_id) if run.digest else None
        return {a.gate_id: a for a in approvals(bundle)} if bundle is not None else {}

    def compare(self, a: str, b: str) -> RunDiff:
        left, right = self.bundle(a), self.bundle(b)
        missing = [x for x, bundle in ((a, left), (b, right)) if bundle is None]
        if missing or left is None or right is None:
            raise ConfigError(
                f"found no bundle of {', '.join(repr(m) for m in missing)}; expected two "
                "finished runs"
            )
        return diff_runs(left, right)

    async def start(self, run: RunRow) -> ReplayReport:
        """Replay a finished run with its agent's configured function (fail closed)."""
        if self.replayer is None:
            raise ReplayError("this console starts no replays (it has no store to record into)")
        target = self.agents.get(run.agent_id)
        if target is None:
            raise ConfigError(
                f"no replay agent for agent {run.agent_id!r}; expected "
                f"FLEETLEDGER_REPLAY_AGENTS={run.agent_id}=package.module:function "
                "(or fleetledger console --replay-agent)"
            )
        data = self.reads.bundle(run.run_id)
        if data is None:
            raise ReplayError(
                f"run {run.run_id!r} has no bundle yet; a replay needs a finished run"
            )
        # the agent's own code may block: the replay runs on a loop of its own, in a thread
        return await asyncio.to_thread(_run_sync, self.replayer, data, run.run_id, target)


def _run_sync(replayer: Replayer, data: bytes, run_id: str, target: str) -> ReplayReport:
    async def go() -> ReplayReport:
        return await replayer(data, run_id, target)

    return asyncio.run(go())


def default_replayer(settings: Any) -> Replayer:
    """Replays recorded into the store ``settings`` name, with the SDK's recorder."""

    async def replayer(data: bytes, run_id: str, target: str) -> ReplayReport:
        from fleetledger.processors.runtimes.replay import (
            load_agent,
            recording_from_bytes,
            replay,
        )
        from fleetledger.producers import Recorder

        recording = recording_from_bytes(data, f"run {run_id}")
        agent = load_agent(target)
        async with Recorder.from_url(settings=settings) as rec:
            result = await replay(recording, agent, recorder=rec)
        return result.report

    return replayer
