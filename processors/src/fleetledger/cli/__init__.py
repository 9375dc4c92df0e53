"""The ``fleetledger`` command line: commands parse options, call the library, render."""

from fleetledger.cli.commands import app, main

__all__ = ["app", "main"]
