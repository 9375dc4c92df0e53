"""The live feed: read-model changes as named stream events (pure).

The read model hands out a position with every row it changes, strictly increasing in
commit order (``ReadModel.changes``).  Each change becomes at most one event whose id is
that position, so a subscriber that reconnects with the last id it saw misses nothing:

* an action row is immutable, so its position is the moment it was committed:
  ``run_started`` events become ``run_created``, ``run_completed`` / ``run_failed``
  events become ``run_completed`` / ``run_failed`` (each exactly once per run), and
  every other event is ``action_created``;
* a run row gets a new position whenever it changes (totals, intercept count, digest):
  ``run_updated`` carries its latest figures;
* an intercept row is ``intercept_created``.

A subscription narrows the feed to one run, or to the runs a registry filter selects
(``run_created`` must match the whole filter; later events of a run only its tenant and
agent, so a run that leaves a status filter still tells its page it finished).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fleetledger.processors.readmodel import ActionRow, Change, InterceptRow, RunFilter, RunRow

EventName = Literal[
    "run_created",
    "action_created",
    "run_updated",
    "run_completed",
    "run_failed",
    "intercept_created",
]
EVENT_NAMES: tuple[str, ...] = (
    "run_created",
    "action_created",
    "run_updated",
    "run_completed",
    "run_failed",
    "intercept_created",
)

_RUN_EVENTS: Mapping[str, EventName] = {
    "run_started": "run_created",
    "run_completed": "run_completed",
    "run_failed": "run_failed",
}


@dataclass(frozen=True)
class Subscription:
    """What one subscriber asked for."""

    run_id: str | None = None
    filter: RunFilter = field(default_factory=RunFilter)
    #: every action too (a run page, a tool tailing the fleet); a registry needs none
    actions: bool = True

    @property
    def identity(self) -> RunFilter:
        """The filter's parts a run never leaves (tenant, agent)."""
        return replace(self.filter, status=(), min_cost=None, since=None, until=None)


@dataclass(frozen=True)
class LiveEvent:
    """One stream event: ``id`` is the read-model position of the change behind it."""

    id: int
    name: EventName
    run_id: str
    #: the run's row when the event is about the run (the latest one the feed knows)
    run: RunRow | None = None
    action: ActionRow | None = None
    intercept: InterceptRow | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "event": self.name, "run_id": self.run_id}
        if self.run is not None:
            out["run"] = self.run.to_json()
        if self.action is not None:
            out["action"] = self.action.to_json()
        if self.intercept is not None:
            out["intercept"] = self.intercept.to_json()
        return out


def _same(ident: RunFilter, who: Mapping[str, Any]) -> bool:
    """Whether an event's or intercept's tenant and agent pass the filter's."""
    return (ident.tenant is None or who.get("tenant") == ident.tenant) and (
        ident.agent is None or who.get("agent_id") == ident.agent
    )


def runs_wanted(changes: Iterable[Change]) -> set[str]:
    """Runs whose row the events of ``changes`` carry (look them up, then :func:`events`)."""
    return {
        c.run_id
        for c in changes
        if c.kind == "action" and isinstance(c.row, ActionRow) and c.row.type in _RUN_EVENTS
    }


def events(
    changes: Iterable[Change], sub: Subscription, runs: Mapping[str, RunRow]
) -> list[LiveEvent]:
    """The events of ``changes`` for ``sub``; ``runs``: the current rows of the runs
    :func:`runs_wanted` named (a run missing there, e.g. archived, is skipped)."""
    out: list[LiveEvent] = []
    ident = sub.identity
    for c in changes:
        if sub.run_id is not None and c.run_id != sub.run_id:
            continue
        row = c.row
        if isinstance(row, ActionRow):
            name = _RUN_EVENTS.get(row.type)
            if name is None:
                if sub.actions and (sub.run_id is not None or _same(ident, row.event)):
                    out.append(LiveEvent(c.position, "action_created", c.run_id, action=row))
                continue
            run = runs.get(c.run_id)
            if run is None:
                continue
            wanted = sub.filter if name == "run_created" else ident
            if sub.run_id is None and not wanted.matches(run):
                continue
            out.append(
                LiveEvent(c.position, name, c.run_id, run=run, action=row if sub.actions else None)
            )
        elif isinstance(row, RunRow):
            if sub.run_id is None and not ident.matches(row):
                continue
            out.append(LiveEvent(c.position, "run_updated", c.run_id, run=row))
        elif isinstance(row, InterceptRow):
            if sub.run_id is None and not _same(
                ident, {"tenant": row.tenant, "agent_id": row.agent_id}
            ):
                continue
            out.append(LiveEvent(c.position, "intercept_created", c.run_id, intercept=row))
    return out


__all__ = ["EVENT_NAMES", "EventName", "LiveEvent", "Subscription", "events", "runs_wanted"]
