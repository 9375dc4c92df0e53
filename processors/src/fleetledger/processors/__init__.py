"""Everything that consumes the log: the pure core, the pipeline, evidence, and runtimes.

The pure core (``core``, ``pipeline``, ``bundle``, ``canonical``, ``merkle``, ``reports``,
``memory``) imports no broker, framework, database or HTTP library; the runtimes
(``fleetledger.processors.runtimes``) are the adapters.
"""

from fleetledger.processors.bundle import assemble, bundle_digest
from fleetledger.processors.canonical import canonical_bytes, event_hash, genesis, link
from fleetledger.processors.core import CoreConfig, Entry, Intercept, RunFold, RunState, apply
from fleetledger.processors.memory import memory_pipeline
from fleetledger.processors.pipeline import (
    Bundle,
    DeadLetter,
    EntryStore,
    OutputReader,
    Outputs,
    OutputSink,
    Pipeline,
    RunTotals,
    SourcePosition,
    StateStore,
    StoredBundle,
)
from fleetledger.processors.reports import cost_report, intercepts_by_recency

__all__ = [
    "Bundle",
    "CoreConfig",
    "DeadLetter",
    "Entry",
    "EntryStore",
    "Intercept",
    "OutputReader",
    "OutputSink",
    "Outputs",
    "Pipeline",
    "RunFold",
    "RunState",
    "RunTotals",
    "SourcePosition",
    "StateStore",
    "StoredBundle",
    "apply",
    "assemble",
    "bundle_digest",
    "canonical_bytes",
    "cost_report",
    "event_hash",
    "genesis",
    "intercepts_by_recency",
    "link",
    "memory_pipeline",
]
