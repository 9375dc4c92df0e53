"""The runs console: ``fleetledger console`` serves a registry of runs with filters and
summary figures, the critical-intercepts lane, each run's actions with their JSON and
evidence, live updates over server-sent events, filtered exports and a JSON API with its
OpenAPI description -- read-only, over the read model.

An adapter on top, like the CLI: pages and API handlers parse, call the read model and the
processors' pure functions (``rundetail``, ``livefeed``, ``runexport``), and render.
"""

from fleetledger.console.app import ConsoleApp, ConsoleConfig
from fleetledger.console.server import ConsoleServer, console, serve

__all__ = ["ConsoleApp", "ConsoleConfig", "ConsoleServer", "console", "serve"]
