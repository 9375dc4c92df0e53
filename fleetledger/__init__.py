"""fleetledger: an event-sourced, hash-chained ledger of AI-agent runs."""

__version__ = "0.1.0"
