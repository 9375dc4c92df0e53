"""Replaying a recorded run: verify the recording, run the agent against it, report.

::

    recording = load_recording("bundles/run-7.bundle.json", trusted=[pub])
    async with Recorder.from_url("sqlite:///fleetledger.db") as rec:
        result = await replay(recording, support_bot, recorder=rec)
    print(result.report.match_rate, result.report.divergences)

:func:`load_recording` reads a bundle file, a signed envelope (``.dsse.json``) or a run
id in the store, and verifies it (chain, digest, Merkle root, derived members and, when
it is signed or ``require_signature`` is set, the signature by a pinned key) before
anything else; a recording that fails is refused with
:class:`~fleetledger.kernel.errors.RecordingRefusedError`.

:func:`replay` starts a new run - same agent, tenant, project, workflow, budget and
labels as the original, plus ``fleetledger.replay_of`` (the original's run id),
``fleetledger.replay_of_head`` (its chain head) and ``fleetledger.replay_of_digest``
(its bundle digest) - in replay mode (:mod:`fleetledger.producers.replay`), calls the
agent function with it (``agent(run)``, sync or async), compares what the replay did
with the recording (:func:`fleetledger.processors.replay.compare`) and records the
report in the replay run as the artifact ``fleetledger.replay.report`` (content hash of
the report's canonical JSON; state ``verified`` when nothing diverged), so the replay's
own bundle is evidence of what it was tested against.  The replay run completes, or
fails with the exception that stopped the agent (a replay miss, for one).

:func:`replay_folder` and :func:`assert_replays` make a regression suite of recorded
runs: every bundle of a folder replayed against one agent function, and an
``AssertionError`` listing every divergence.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetledger.kernel.errors import (
    FleetLedgerError,
    RecordingRefusedError,
    ReplayedFailureError,
    ReplayError,
    RunStateError,
    VerificationError,
)
from fleetledger.kernel.plugins import load_callable
from fleetledger.processors.actions import Action, actions_of, event_items
from fleetledger.processors.canonical import canonical_bytes
from fleetledger.processors.evidence import (
    Verified,
    open_envelope,
    parse_json,
    verify_bundle_bytes,
    verify_file,
)
from fleetledger.processors.replay import Matcher, Recording, ReplayReport, Request, compare
from fleetledger.processors.replayview import LABEL_DIGEST, LABEL_HEAD, LABEL_OF
from fleetledger.producers.recorder import Recorder, Run
from fleetledger.producers.replay import (
    CallRequest,
    GateRequest,
    RecordedCall,
    RecordedDecision,
)
from fleetledger.schemas import (
    ArtifactState,
    Money,
    TraceEvent,
    ValidationEvidence,
    WorkflowSnapshot,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from fleetledger.processors.pipeline import OutputReader

__all__ = [
    "LABEL_DIGEST",
    "LABEL_HEAD",
    "LABEL_OF",
    "REPORT_ARTIFACT",
    "LoadedRecording",
    "ReplayResult",
    "assert_replays",
    "load_agent",
    "load_recording",
    "recording_from_bytes",
    "replay",
    "replay_folder",
]

#: The artifact a replay run records its report as.
REPORT_ARTIFACT = "fleetledger.replay.report"
_ACTION_TYPES = frozenset({"model_io", "tool_call", "human_gate_resolved", "artifact_written"})
Agent = Callable[[Run], Any]
BlobLoader = Callable[[str], bytes | None]


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadedRecording:
    """A verified recording: the bundle and what verification established."""

    bundle: dict[str, Any]
    verified: Verified
    source: str

    @property
    def run_id(self) -> str:
        return str(self.bundle["run"]["run_id"])


def _sibling(path: Path) -> BlobLoader:
    def load(name: str) -> bytes | None:
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            return None
        p = path.parent / name
        return p.read_bytes() if p.is_file() else None

    return load


def _refuse(source: str, exc: FleetLedgerError) -> RecordingRefusedError:
    return RecordingRefusedError(f"recording {source} refused: {exc}")


def load_recording(
    source: str | Path,
    *,
    reader: OutputReader | None = None,
    trusted: Sequence[Ed25519PublicKey] = (),
    require_signature: bool = False,
) -> LoadedRecording:
    """A recording from a file (bundle or signed envelope) or a run id in ``reader``'s
    store, verified.  With ``require_signature`` (or pinned keys and a signed sibling
    ``<stem>.dsse.json``), the signature by one of ``trusted`` is required too."""
    path = Path(source)
    where = str(source)
    try:
        if path.is_file():
            data = path.read_bytes()
            facts = verify_file(data, trusted, _sibling(path))
            obj = parse_json(data, "file")
            if isinstance(obj, dict) and "payloadType" in obj:
                _ptype, payload, _kid = open_envelope(data, trusted)
                obj = parse_json(payload, "payload")
            elif trusted or require_signature:
                envelope = path.with_name(path.name.replace(".bundle.json", ".dsse.json"))
                if envelope != path and envelope.is_file():
                    signed = verify_file(envelope.read_bytes(), trusted, _sibling(envelope))
                    if signed.digest != facts.digest:
                        raise VerificationError(
                            "signature",
                            f"found {envelope.name} signing digest {signed.digest}, expected "
                            f"the bundle's {facts.digest}",
                        )
                    facts = signed
            if not isinstance(obj, dict) or "events" not in obj:
                raise VerificationError("format", f"found a {facts.kind}, expected a bundle")
        else:
            if reader is None:
                raise ReplayError(
                    f"recording {where}: found no such file and no store to look the run up "
                    "in; expected a bundle file or a run id"
                )
            found = reader.bundle(where)
            if found is None:
                raise ReplayError(
                    f"recording {where}: found no such file and no finished run of that id in "
                    f"{reader!r}; expected a bundle file or the id of a finished run"
                )
            facts = verify_bundle_bytes(found.data, f"bundle of run {where}")
            obj = parse_json(found.data, "bundle")
        if require_signature and facts.signed_by is None:
            raise VerificationError(
                "signature",
                "found an unsigned recording, expected one signed by a pinned key "
                "(a .dsse.json envelope, or its sibling next to the bundle)",
            )
    except ReplayError:
        raise
    except FleetLedgerError as exc:
        raise _refuse(where, exc) from exc
    except OSError as exc:
        raise ReplayError(f"recording {where}: cannot read it: {exc}") from exc
    return LoadedRecording(obj, facts, where)


def recording_from_bytes(data: bytes, source: str) -> LoadedRecording:
    """A recording from a bundle's bytes (as a store holds them), verified."""
    try:
        facts = verify_bundle_bytes(data, f"bundle of {source}")
        obj = parse_json(data, "bundle")
    except FleetLedgerError as exc:
        raise _refuse(source, exc) from exc
    return LoadedRecording(obj, facts, source)


# --------------------------------------------------------------------------- responder


class _Responder:
    """The SDK's :class:`~fleetledger.producers.replay.Responder` over a :class:`Matcher`."""

    def __init__(self, matcher: Matcher, blobs: BlobLoader | None) -> None:
        self.matcher = matcher
        self.blobs = blobs
        self.currency = matcher.recording.currency or "USD"
        self.events: list[dict[str, Any]] = []

    def _outputs(self, action: Action) -> Any:
        if action.outputs is not None or action.outputs_sha256 is None:
            return action.outputs
        withheld = "outputs" in (action.payload.get("redactions") or ())
        data = (
            self.blobs(action.outputs_sha256) if self.blobs is not None and not withheld else None
        )
        if data is None:
            why = (
                "were withheld by redaction (only their hash was recorded)"
                if withheld
                else "are in a blob store that is not at hand (FLEETLEDGER_BLOB_DIR)"
            )
            raise ReplayError(
                f"the recorded outputs of {action.label} (seq {action.seq}) {why}; expected "
                "the content to answer the call with"
            )
        from fleetledger.processors.jsondiff import content_value

        return content_value(data.decode("utf-8"))

    def answer(self, request: CallRequest) -> RecordedCall | None:
        action = self.matcher.answer(
            Request(
                request.kind,
                request.name,
                request.provider,
                request.inputs,
                request.inputs_sha256,
                request.step_id,
            )
        )
        if action is None:
            return None
        p = action.payload
        return RecordedCall(
            seq=action.seq if action.seq is not None else -1,
            outputs=self._outputs(action),
            outcome=action.outcome or "success",
            error_type=action.error_type,
            response_model=p.get("gen_ai_response_model"),
            input_tokens=int(p.get("gen_ai_usage_input_tokens", 0)),
            output_tokens=int(p.get("gen_ai_usage_output_tokens", 0)),
            cache_read_tokens=int(p.get("gen_ai_usage_cache_read_input_tokens", 0)),
            cache_write_tokens=p.get("gen_ai_usage_cache_creation_input_tokens"),
            duration_ms=action.duration_ms,
            call_id=p.get("gen_ai_tool_call_id"),
            currency=action.currency or self.currency,
        )

    def decide(self, request: GateRequest) -> RecordedDecision:
        inputs = {
            k: v
            for k, v in {
                "policy": request.policy,
                "artifact_key": request.artifact_key,
                "artifact_version": request.artifact_version,
            }.items()
            if v is not None
        }
        action = self.matcher.gate(
            Request("gate", request.gate_id, None, inputs, step_id=request.step_id)
        )
        return RecordedDecision(
            seq=action.seq if action.seq is not None else -1,
            decision=str(action.outputs.get("decision")),
            reviewer=str(action.outputs.get("reviewer")),
            reason=action.outputs.get("reason"),
            wait_ms=action.duration_ms,
        )

    def recorded(self, event: TraceEvent) -> None:
        obj = event.to_json_obj()
        self.events.append(obj)
        if obj["type"] in _ACTION_TYPES:
            if obj["type"] == "artifact_written" and obj["payload"]["key"] == REPORT_ARTIFACT:
                return
            self.matcher.note(obj.get("step_id"))


# --------------------------------------------------------------------------- replaying


@dataclass(frozen=True)
class ReplayResult:
    """A finished replay: the report, the replay run and how it ended."""

    report: ReplayReport
    run_id: str
    status: str  # completed | failed
    error: str | None  # what stopped the agent, if anything
    events: tuple[dict[str, Any], ...] = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.report.ok and self.error is None


def _labels(bundle: dict[str, Any]) -> dict[str, str]:
    labels = dict(bundle["run"].get("labels", {}))
    labels[LABEL_OF] = bundle["run"]["run_id"]
    labels[LABEL_HEAD] = bundle["chain"]["head"]
    labels[LABEL_DIGEST] = bundle["integrity"]["digest"]
    return labels


async def _call(agent: Agent, run: Run) -> None:
    if inspect.iscoroutinefunction(agent):
        await agent(run)
        return
    out = await asyncio.to_thread(agent, run)
    if inspect.isawaitable(out):
        await out


async def replay(
    recording: LoadedRecording,
    agent: Agent,
    *,
    recorder: Recorder,
    allow_live: bool = False,
    run_id: str | None = None,
    blobs: BlobLoader | None = None,
) -> ReplayResult:
    """Run ``agent`` again against ``recording`` (see the module docstring)."""
    bundle = recording.bundle
    rec = Recording.from_bundle(bundle)
    matcher = Matcher(rec, allow_live=allow_live)
    responder = _Responder(matcher, blobs)
    info = bundle["run"]
    budget = info.get("budget")
    run = await recorder.start_run(
        agent_id=info["agent_id"],
        tenant=info["tenant"],
        project=info.get("project"),
        workflow=WorkflowSnapshot.model_validate(bundle["workflow"]),
        budget=Money.model_validate(budget) if budget is not None else None,
        labels=_labels(bundle),
        run_id=run_id,
        replay=responder,
    )
    error: BaseException | None = None
    try:
        await _call(agent, run)
    except Exception as exc:  # the agent's own failure is part of the result
        error = exc
    stopped = isinstance(error, ReplayError) and not isinstance(error, ReplayedFailureError)
    error_type = None
    if error is not None:
        error_type = (
            error.error_type if isinstance(error, ReplayedFailureError) else type(error).__name__
        )
    report = compare(
        rec,
        actions_of(event_items(responder.events)),
        served=Counter(rec.actions[s.recorded].key for s in matcher.served),
        misses=matcher.misses,
        replay_run_id=run.run_id,
        stopped=str(error) if stopped else None,
        replay_status="failed" if error is not None else "completed",
        replay_error=error_type,
    )
    if not run.ended:
        await _finish(run, report, error)
    return ReplayResult(
        report=report,
        run_id=run.run_id,
        status=run.status,
        error=None if error is None else f"{type(error).__name__}: {error}",
        events=tuple(responder.events),
    )


async def _finish(run: Run, report: ReplayReport, error: BaseException | None) -> None:
    body = canonical_bytes(report.to_json())
    await run.artifact(
        key=REPORT_ARTIFACT,
        version=1,
        state=ArtifactState.VERIFIED if report.ok else ArtifactState.GENERATED,
        content=body,
        schema_ref="fleetledger.replay-report/v1",
        validation=ValidationEvidence(
            validator="fleetledger.replay",
            passed=report.ok,
            details=(
                f"match rate {report.match_rate}%, {len(report.divergences)} divergences, "
                f"against {report.original_run_id} at {report.original_head}"
            ),
        ),
    )
    if error is None:
        try:
            await run.complete()
            return
        except RunStateError as exc:  # steps left open
            error = exc
    await run.fail(type(error).__name__, str(error) or type(error).__name__)


def load_agent(spec: str) -> Agent:
    """The agent function ``package.module:function`` names."""
    agent: Agent = load_callable(spec, where="--agent", expected="function")
    return agent


# --------------------------------------------------------------------------- suites


def _bundle_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(p.glob("*.bundle.json")))
        else:
            out.append(p)
    return out


async def replay_folder(
    folder: str | Path | Iterable[str | Path],
    agent: Agent,
    *,
    recorder: Recorder | None = None,
    allow_live: bool = False,
    trusted: Sequence[Ed25519PublicKey] = (),
    blobs: BlobLoader | None = None,
) -> list[tuple[Path, ReplayResult]]:
    """Replay every ``*.bundle.json`` of a folder (or the files given) against ``agent``.

    The replay runs go to ``recorder`` (default: an in-memory recorder, nothing kept).
    """
    roots = [Path(folder)] if isinstance(folder, str | Path) else [Path(f) for f in folder]
    files = _bundle_files(roots)
    if not files:
        raise ReplayError(f"found no *.bundle.json in {[str(r) for r in roots]}, expected bundles")
    own = recorder is None
    if recorder is None:
        from fleetledger.producers.transports import MemoryTransport

        recorder = Recorder(MemoryTransport(), linger_ms=None)
    out = []
    try:
        await recorder.start()
        for path in files:
            loaded = load_recording(path, trusted=trusted)
            result = await replay(
                loaded, agent, recorder=recorder, allow_live=allow_live, blobs=blobs
            )
            out.append((path, result))
    finally:
        if own:
            await recorder.close()
    return out


def assert_replays(
    folder: str | Path | Iterable[str | Path],
    agent: Agent,
    **kwargs: Any,
) -> list[tuple[Path, ReplayResult]]:
    """Replay a folder of bundles (see :func:`replay_folder`) and raise ``AssertionError``
    naming every divergence, miss or agent failure - a regression suite made of
    recorded runs::

        def test_production_runs_still_replay() -> None:
            assert_replays("tests/recordings", support_bot)
    """
    results: list[tuple[Path, ReplayResult]] = _run(replay_folder(folder, agent, **kwargs))
    problems = []
    for path, result in results:
        if result.ok:
            continue
        lines = [f"{path.name}: match rate {result.report.match_rate}%"]
        lines += [f"  {d.kind}: {d.message}" for d in result.report.divergences]
        if result.error is not None and not result.report.divergences:
            lines.append(f"  stopped: {result.error}")
        problems.append("\n".join(lines))
    if problems:
        raise AssertionError(
            f"{len(problems)} of {len(results)} recordings diverged on replay:\n"
            + "\n".join(problems)
        )
    return results


def _run(coro: Awaitable[Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    raise ReplayError(
        "assert_replays: found a running event loop, expected a plain (sync) test; "
        "await replay_folder(...) from async code"
    )
