"""The one place ``FLEETLEDGER_BROKER`` becomes a backend: transport, runtime, sink, reader.

:func:`backend` reads the broker URL of a :class:`~fleetledger.kernel.config.Settings` once
and returns an :class:`EmbeddedBackend` (``sqlite:///...``, the default) or a
:class:`KafkaBackend` (``kafka://...``).  Both answer the same questions: the SDK transport
that records into it, the worker that processes it, and the reader of its outputs.  Nothing
else in the processors or the CLI looks at the URL's scheme.

This module is also where settings meet the pure core (:func:`core_config`): the core
itself knows no settings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fleetledger.kernel.config import Settings
from fleetledger.kernel.errors import ConfigError, StoreError
from fleetledger.processors.core import CoreConfig

if TYPE_CHECKING:
    from fleetledger.processors.archive import ArchiveSink
    from fleetledger.processors.pipeline import OutputReader
    from fleetledger.processors.readstore import ReadStore
    from fleetledger.processors.runtimes.embedded import EmbeddedRuntime, WorkerReport
    from fleetledger.producers.transports import Transport


def core_config(settings: Settings) -> CoreConfig:
    """The intercept rules configured by ``FLEETLEDGER_*`` settings."""
    return CoreConfig(
        budget_ratio=settings.budget_warn_ratio,
        intervention_rate=settings.intervention_rate,
        intervention_min_gates=settings.intervention_min_gates,
        max_recoveries=settings.max_recoveries,
        gap_timeout_s=settings.gap_timeout_s,
    )


class Backend(ABC):
    """A broker and the stores behind it, as one setting names them."""

    kind: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def transport(self, *, create_topic: bool = True) -> Transport:
        """The SDK transport that records into this backend."""
        from fleetledger.producers.transports import make_transport

        return make_transport(self.settings, create_topic=create_topic)

    @abstractmethod
    def reader(self) -> OutputReader:
        """The processors' outputs, read back."""

    def read_model(self, *, create: bool = False) -> ReadStore:
        """The read model (``FLEETLEDGER_READ_DB``): the reader port of the read commands
        and the console.  ``create`` (writers only) creates or migrates it."""
        from fleetledger.processors.readstore import open_read_model

        return open_read_model(self.settings, create=create)

    @abstractmethod
    def run_worker(
        self,
        *,
        archive: ArchiveSink | None = None,
        once: bool = False,
        poll_s: float = 0.5,
        report: Callable[[WorkerReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """Process the backend's events until stopped (SIGTERM/SIGINT, or ``should_stop``
        where the runtime supports it), or until caught up with ``once``; ``report`` is
        called every ``FLEETLEDGER_REPORT_INTERVAL_S``."""

    @abstractmethod
    def describe(self) -> str:
        """Where it is, for messages (no secrets)."""


class EmbeddedBackend(Backend):
    """The embedded store: the SQLite log, the embedded runtime and its output tables."""

    kind = "sqlite"

    def __init__(self, settings: Settings, path: Path) -> None:
        super().__init__(settings)
        self.path = path

    def describe(self) -> str:
        return f"the embedded store {str(self.path)!r}"

    def _existing(self) -> Path:
        if not self.path.exists():
            raise StoreError(
                f"embedded store {str(self.path)!r} does not exist; run `fleetledger demo` or "
                "`fleetledger simulate` first, or pass --broker"
            )
        return self.path

    def _external_read_model(self) -> bool:
        """Whether the read model is elsewhere than in the store's own file."""
        url = self.settings.read_db_url()
        return url.path is None or url.path.resolve() != self.path.resolve()

    def runtime(
        self, archive: ArchiveSink | None = None, read_model: ReadStore | None = None
    ) -> EmbeddedRuntime:
        """The embedded runtime over this store (created when missing), projecting into
        ``read_model`` (default: the store's own file)."""
        from fleetledger.processors.runtimes.embedded import EmbeddedRuntime
        from fleetledger.schemas.codec import Codec

        return EmbeddedRuntime(
            self.path, Codec(), core_config(self.settings), archive=archive, read_model=read_model
        )

    def reader(self) -> OutputReader:
        from fleetledger.processors.runtimes.embedded import EmbeddedReader

        return EmbeddedReader(self._existing())

    def run_worker(
        self,
        *,
        archive: ArchiveSink | None = None,
        once: bool = False,
        poll_s: float = 0.5,
        report: Callable[[WorkerReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        from datetime import UTC, datetime

        from fleetledger.processors.readstore import apply_retention

        external = self.read_model(create=True) if self._external_read_model() else None
        try:
            with self.runtime(archive, external) as runtime:
                days = self.settings.retention_days
                root = self.settings.compliance_archive or (archive.root if archive else None)

                def housekeeping() -> None:
                    """Hourly: retention (when configured), then fresh planner statistics."""
                    if days is not None:
                        apply_retention(runtime.read_model, root, days, datetime.now(UTC))
                    runtime.read_model.optimize()

                runtime.run(
                    once=once,
                    poll_s=poll_s,
                    report=report,
                    report_s=self.settings.report_interval_s,
                    housekeeping=None if once else housekeeping,
                    should_stop=should_stop,
                )
        finally:
            if external is not None:
                external.close()


class KafkaBackend(Backend):
    """A Kafka cluster: the Faust worker and the output topics."""

    kind = "kafka"

    def describe(self) -> str:
        return f"Kafka at {self.settings.broker_url().bootstrap}"

    def reader(self) -> OutputReader:
        from fleetledger.processors.runtimes.kafka_io import KafkaOutputReader

        return KafkaOutputReader(self.settings)

    def run_worker(
        self,
        *,
        archive: ArchiveSink | None = None,
        once: bool = False,
        poll_s: float = 0.5,
        report: Callable[[WorkerReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        if once:
            raise ConfigError(
                "--once drains the embedded store; found a kafka:// broker, where the worker "
                "runs until stopped (SIGTERM)"
            )
        from fleetledger.processors.runtimes.faust_app import run_worker

        run_worker(self.settings, archive=archive)


def backend(settings: Settings) -> Backend:
    """The backend ``settings.broker`` names."""
    url = settings.broker_url()
    if url.kind == "sqlite":
        assert url.path is not None
        return EmbeddedBackend(settings, url.path)
    return KafkaBackend(settings)


__all__ = ["Backend", "EmbeddedBackend", "KafkaBackend", "backend", "core_config"]
