"""The kernel every layer stands on: errors, settings, the topic layout and the SQLite log.

No import of any other fleetledger package.
"""
