"""OTLP/HTTP trace ingestion: agents already instrumented with OpenTelemetry feed the ledger.

``fleetledger otlp`` runs :class:`~fleetledger.producers.otlp.receiver.OtlpReceiver`, which
accepts ``POST /v1/traces`` (protobuf or JSON), maps GenAI spans to runs
(:mod:`~fleetledger.producers.otlp.mapping`) and records them through a normal
:class:`~fleetledger.producers.Recorder`.  Needs ``fleetledger-sdk[otlp]``.
"""
