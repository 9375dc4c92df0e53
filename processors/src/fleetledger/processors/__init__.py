"""Everything that consumes the log: the pure core, the pipeline, evidence, and runtimes.

The pure core (``core``, ``pipeline``, ``bundle``, ``canonical``, ``merkle``, ``readmodel``,
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
from fleetledger.processors.readmodel import OutputRecord, ReadModel, project

__all__ = [
    "Bundle",
    "CoreConfig",
    "DeadLetter",
    "Entry",
    "EntryStore",
    "Intercept",
    "OutputReader",
    "OutputRecord",
    "OutputSink",
    "Outputs",
    "Pipeline",
    "ReadModel",
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
    "event_hash",
    "genesis",
    "link",
    "memory_pipeline",
    "project",
]
