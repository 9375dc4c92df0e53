"""The kernel every layer stands on: errors, settings, Kafka client options, the topic layout
and the SQLite log.

No import of any other fleetledger package.
"""

from fleetledger.kernel.config import (
    DEFAULT_BROKER,
    BrokerURL,
    Settings,
    load_settings,
    parse_broker_url,
)
from fleetledger.kernel.errors import (
    ConfigError,
    DecodeError,
    DeliveryError,
    EventValidationError,
    FleetLedgerError,
    ProcessorError,
    ProducerError,
    RunStateError,
    SchemaError,
    StoreError,
    UnknownFingerprintError,
    VerificationError,
)
from fleetledger.kernel.kafka import KafkaConnection, kafka_connection
from fleetledger.kernel.topics import ROLES, TOPIC_LAYOUT, TopicTemplate, topic_name

__all__ = [
    "DEFAULT_BROKER",
    "ROLES",
    "TOPIC_LAYOUT",
    "BrokerURL",
    "ConfigError",
    "DecodeError",
    "DeliveryError",
    "EventValidationError",
    "FleetLedgerError",
    "KafkaConnection",
    "ProcessorError",
    "ProducerError",
    "RunStateError",
    "SchemaError",
    "Settings",
    "StoreError",
    "TopicTemplate",
    "UnknownFingerprintError",
    "VerificationError",
    "kafka_connection",
    "load_settings",
    "parse_broker_url",
    "topic_name",
]
