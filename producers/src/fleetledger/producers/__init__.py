"""The fleetledger SDK: what agents call to record their runs.

``Recorder`` (async) and ``SyncRecorder`` (blocking) record runs through a transport
(embedded SQLite log, Kafka, or memory); ``simulate`` drives a deterministic fleet.
"""

from fleetledger.producers.blobs import BlobStore, FolderBlobStore
from fleetledger.producers.context import current_run, current_step
from fleetledger.producers.instrument import instrument, uninstrument
from fleetledger.producers.pricing import (
    ModelPrice,
    PriceOverrides,
    Pricer,
    TokenUsage,
    load_price_overrides,
)
from fleetledger.producers.recorder import (
    IMPLICIT_STEP,
    Clock,
    GateOutcome,
    IdFactory,
    Recorder,
    Run,
    Step,
    content_hash,
    implicit_workflow,
    utc_now,
)
from fleetledger.producers.redaction import RedactionPolicy
from fleetledger.producers.simulator import (
    SHAPES,
    SIM_EPOCH,
    SimulationSummary,
    VirtualClock,
    simulate,
)
from fleetledger.producers.sync import SyncRecorder, SyncRun, SyncStep
from fleetledger.producers.tools import ModelReply, model, tool, tool_call
from fleetledger.producers.transports import (
    KafkaTransport,
    MemoryTransport,
    SqliteTransport,
    Transport,
    ensure_topic,
    events_topic,
    make_transport,
)

__all__ = [
    "IMPLICIT_STEP",
    "SHAPES",
    "SIM_EPOCH",
    "BlobStore",
    "Clock",
    "FolderBlobStore",
    "GateOutcome",
    "IdFactory",
    "KafkaTransport",
    "MemoryTransport",
    "ModelPrice",
    "ModelReply",
    "PriceOverrides",
    "Pricer",
    "Recorder",
    "RedactionPolicy",
    "Run",
    "SimulationSummary",
    "SqliteTransport",
    "Step",
    "SyncRecorder",
    "SyncRun",
    "SyncStep",
    "TokenUsage",
    "Transport",
    "VirtualClock",
    "content_hash",
    "current_run",
    "current_step",
    "ensure_topic",
    "events_topic",
    "implicit_workflow",
    "instrument",
    "load_price_overrides",
    "make_transport",
    "model",
    "simulate",
    "tool",
    "tool_call",
    "uninstrument",
    "utc_now",
]
