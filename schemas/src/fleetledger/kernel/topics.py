"""The declared topic layout: every topic's role, key and configs, in one place.

Plain data with no Kafka import, shared by the SDK (which may create the events topic),
the worker (which creates every topic), and the deployment drift test.  Names are
``<prefix>.<role>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Role = Literal["events", "ledger", "totals", "intercepts", "bundles", "deadletter"]

DAY_MS = 24 * 60 * 60 * 1000

#: ``kind`` of the JSON manifest published on the bundles topic instead of a bundle too
#: large for a record (the bundle itself is in the archive folder the manifest names).
MANIFEST_KIND = "bundle-manifest"


@dataclass(frozen=True)
class TopicTemplate:
    """A topic of the layout, before a prefix and partition count are applied."""

    role: Role
    key: str
    description: str
    configs: Mapping[str, str]

    @property
    def compacted(self) -> bool:
        return "compact" in self.configs.get("cleanup.policy", "")


def _configs(**kv: str) -> Mapping[str, str]:
    return MappingProxyType({k.replace("_", "."): v for k, v in kv.items()})


#: Every topic, in pipeline order.  Names are ``<prefix>.<role>``.
TOPIC_LAYOUT: tuple[TopicTemplate, ...] = (
    TopicTemplate(
        "events",
        "run_id",
        "input: single-object Avro EventBatch messages from the SDK (kept: the source of truth)",
        _configs(cleanup_policy="delete", retention_ms="-1", retention_bytes="-1"),
    ),
    TopicTemplate(
        "ledger",
        "run_id:seq (seq zero-padded to 12 digits)",
        "hash-chained ledger entries (JSON), per run in seq order",
        _configs(cleanup_policy="delete", retention_ms="-1", retention_bytes="-1"),
    ),
    TopicTemplate(
        "totals",
        "run_id",
        "latest totals of each run (JSON), idempotent upserts",
        _configs(cleanup_policy="compact"),
    ),
    TopicTemplate(
        "intercepts",
        "run_id:kind:seq",
        "intercepts raised by the rules (JSON)",
        _configs(cleanup_policy="compact"),
    ),
    TopicTemplate(
        "bundles",
        "run_id",
        "run bundle of each finished run (JSON), or a manifest of an archived bundle",
        _configs(cleanup_policy="compact"),
    ),
    TopicTemplate(
        "deadletter",
        "source topic:partition:offset",
        "input messages that could not be processed: original bytes + error headers",
        _configs(cleanup_policy="delete", retention_ms=str(30 * DAY_MS)),
    ),
)

ROLES: tuple[Role, ...] = tuple(t.role for t in TOPIC_LAYOUT)


def topic_name(prefix: str, role: str) -> str:
    return f"{prefix}.{role}"


def layout(role: Role) -> TopicTemplate:
    """The declared template of one role."""
    return next(t for t in TOPIC_LAYOUT if t.role == role)
