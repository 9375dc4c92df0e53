"""The fleetledger SDK: what agents call to record their runs.

``Recorder`` (async) and ``SyncRecorder`` (blocking) record runs through a transport
(embedded SQLite log, Kafka, or memory); ``simulate`` drives a deterministic fleet.
"""

from fleetledger.producers.pricing import (
    ModelPrice,
    PriceOverrides,
    Pricer,
    TokenUsage,
    load_price_overrides,
)
from fleetledger.producers.recorder import (
    Clock,
    IdFactory,
    Recorder,
    Run,
    Step,
    content_hash,
    utc_now,
)
from fleetledger.producers.simulator import (
    SHAPES,
    SIM_EPOCH,
    SimulationSummary,
    VirtualClock,
    simulate,
)
from fleetledger.producers.sync import SyncRecorder, SyncRun, SyncStep
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
    "SHAPES",
    "SIM_EPOCH",
    "Clock",
    "IdFactory",
    "KafkaTransport",
    "MemoryTransport",
    "ModelPrice",
    "PriceOverrides",
    "Pricer",
    "Recorder",
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
    "ensure_topic",
    "events_topic",
    "load_price_overrides",
    "make_transport",
    "simulate",
    "utc_now",
]
