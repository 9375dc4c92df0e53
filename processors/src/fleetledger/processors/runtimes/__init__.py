"""The adapters: the embedded runtime (SQLite), the Faust runtime (Kafka), and the one
factory that picks between them from ``FLEETLEDGER_BROKER``.

The Kafka modules (``faust_app``, ``kafka_io``) are imported only when a Kafka backend is
used.
"""

from fleetledger.processors.runtimes.backend import (
    Backend,
    EmbeddedBackend,
    KafkaBackend,
    backend,
    core_config,
)

__all__ = ["Backend", "EmbeddedBackend", "KafkaBackend", "backend", "core_config"]
