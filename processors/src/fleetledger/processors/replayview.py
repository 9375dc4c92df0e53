"""What the run page's Simulation and Determinism tabs and the compare view show.

Pure functions over bundles:

* :func:`replay_link` - whether a bundle is a replay, and of which recording (its
  ``fleetledger.replay_of*`` labels);
* :func:`report_from_bundles` - the replay report of a finished replay run, recomputed
  from its bundle and its original's (every paired action compared: a served action has
  its recorded result, so only re-executed ones can differ), after checking that the
  original is the very recording the replay was linked to (same chain head);
* :func:`replay_agents` - the ``agent_id=package.module:function`` map the console may
  start replays with (``FLEETLEDGER_REPLAY_AGENTS``);
* :func:`score_bar` - the determinism score as the tab's colour-coded bar.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetledger.kernel.errors import ConfigError, ReplayError
from fleetledger.processors.actions import actions_of
from fleetledger.processors.determinism import band_of
from fleetledger.processors.replay import Recording, ReplayReport, compare

__all__ = [
    "LABEL_DIGEST",
    "LABEL_HEAD",
    "LABEL_OF",
    "REPLAY_PRICE_DATA",
    "ReplayLink",
    "ScoreBar",
    "replay_agents",
    "replay_link",
    "report_from_bundles",
    "score_bar",
]

LABEL_OF = "fleetledger.replay_of"
LABEL_HEAD = "fleetledger.replay_of_head"
LABEL_DIGEST = "fleetledger.replay_of_digest"
#: ``cost.price_data`` of a model call a replay answered from its recording.
REPLAY_PRICE_DATA = "fleetledger-replay"


@dataclass(frozen=True)
class ReplayLink:
    """A replay run's link to the recording it replayed."""

    original_run_id: str
    original_head: str
    original_digest: str | None


def replay_link(bundle: Mapping[str, Any]) -> ReplayLink | None:
    """The recording a bundle's run replayed, or None when it is no replay."""
    labels = bundle.get("run", {}).get("labels", {})
    of, head = labels.get(LABEL_OF), labels.get(LABEL_HEAD)
    if not isinstance(of, str) or not isinstance(head, str):
        return None
    digest = labels.get(LABEL_DIGEST)
    return ReplayLink(of, head, digest if isinstance(digest, str) else None)


def _served(bundle: Mapping[str, Any]) -> Counter[str]:
    """Keys of the model calls the replay answered from the recording (marked by their
    cost), and of its gates (always answered from the recording)."""
    out: Counter[str] = Counter()
    for a in actions_of(bundle["events"]):
        price = a.payload.get("cost", {}).get("price_data") if a.kind == "model_io" else None
        if price == REPLAY_PRICE_DATA or a.kind == "gate":
            out[a.key] += 1
    return out


def report_from_bundles(original: Mapping[str, Any], replayed: Mapping[str, Any]) -> ReplayReport:
    """The report of the replay ``replayed`` of the recording ``original``."""
    link = replay_link(replayed)
    run_id = replayed["run"]["run_id"]
    if link is None:
        raise ReplayError(f"run {run_id!r} is no replay (no {LABEL_OF} label)")
    if (original["run"]["run_id"], original["chain"]["head"]) != (
        link.original_run_id,
        link.original_head,
    ):
        raise ReplayError(
            f"run {run_id!r} replayed {link.original_run_id} at chain head "
            f"{link.original_head[:16]}..., found {original['run']['run_id']} at "
            f"{original['chain']['head'][:16]}..."
        )
    recording = Recording.from_bundle(original)
    replay_actions = actions_of(replayed["events"])
    failed = [
        item["event"]["payload"]
        for item in replayed["events"]
        if item["event"].get("type") == "run_failed"
    ]
    status = str(replayed["run"].get("status", ""))
    return compare(
        recording,
        replay_actions,
        served=_served(replayed),
        replay_run_id=run_id,
        stopped=(
            f"{failed[0]['error_type']}: {failed[0].get('error_message', '')}"
            if failed and failed[0].get("error_type") == "ReplayMissError"
            else None
        ),
        replay_status=status if status in ("completed", "failed") else None,
        replay_error=failed[0].get("error_type") if failed else None,
    )


def replay_agents(spec: str | None) -> dict[str, str]:
    """``"refund-bot=pkg.mod:fn, triage-bot=pkg.mod:fn2"`` as ``{agent_id: target}``."""
    out: dict[str, str] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        agent, sep, target = part.partition("=")
        agent, target = agent.strip(), target.strip()
        module, colon, attr = target.partition(":")
        if not sep or not agent or not colon or not module or not attr:
            raise ConfigError(
                f"replay agents: found {part!r}, expected agent_id=package.module:function"
            )
        out[agent] = target
    return out


@dataclass(frozen=True)
class ScoreBar:
    score: int
    band: str
    colour: str

    @property
    def width(self) -> str:
        """The bar's filled width, as a CSS percentage."""
        return f"{max(0, min(100, self.score))}%"


def score_bar(score: int) -> ScoreBar:
    band, colour = band_of(score)
    return ScoreBar(score, band, colour)
