"""Where settings meet the pure core: the mapping from ``FLEETLEDGER_*`` to rules."""

from __future__ import annotations

from fleetledger.kernel.config import Settings
from fleetledger.processors.core import CoreConfig


def core_config(settings: Settings) -> CoreConfig:
    """The intercept rules configured by ``FLEETLEDGER_*`` settings."""
    return CoreConfig(
        budget_ratio=settings.budget_warn_ratio,
        intervention_rate=settings.intervention_rate,
        intervention_min_gates=settings.intervention_min_gates,
        max_recoveries=settings.max_recoveries,
        gap_timeout_s=settings.gap_timeout_s,
    )
