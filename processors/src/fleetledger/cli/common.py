"""What every command shares: the root context, the broker option, settings and backends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fleetledger.kernel.config import Settings, load_settings
from fleetledger.kernel.errors import ConfigError

if TYPE_CHECKING:
    from fleetledger.processors.runtimes.backend import Backend, EmbeddedBackend

BrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        "-b",
        help="kafka://host:port or sqlite:///path.db (relative; sqlite:////abs/path.db is "
        "absolute) [env FLEETLEDGER_BROKER; default sqlite:///fleetledger.db]",
    ),
]


class Ctx:
    """What the root callback parsed; passed to commands through click's context."""

    def __init__(self, verbose: bool, kafka: dict[str, Any] | None = None) -> None:
        self.verbose = verbose
        #: Kafka connection flags (the FLEETLEDGER_KAFKA_* settings), for every command.
        self.kafka = {k: v for k, v in (kafka or {}).items() if v is not None}
        probe = Console()
        # Piped output gets a wide, stable layout instead of rich's 80-column default.
        self.console = probe if probe.is_terminal else Console(width=160)
        self.err = Console(stderr=True)


def settings_of(ctx: typer.Context, **overrides: Any) -> Settings:
    return load_settings(verbose=ctx.obj.verbose or None, **ctx.obj.kafka, **overrides)


def backend_of(ctx: typer.Context, **overrides: Any) -> Backend:
    from fleetledger.processors.runtimes.backend import backend

    return backend(settings_of(ctx, **overrides))


def embedded_of(ctx: typer.Context, **overrides: Any) -> EmbeddedBackend:
    from fleetledger.processors.runtimes.backend import EmbeddedBackend

    found = backend_of(ctx, **overrides)
    if not isinstance(found, EmbeddedBackend):
        raise ConfigError(
            f"this command needs the embedded store; found {found.describe()} "
            "(pass --broker sqlite:///path.db)"
        )
    return found
