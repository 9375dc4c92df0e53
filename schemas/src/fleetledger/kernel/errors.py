"""The one root exception of fleetledger and its families.

Every error raised on purpose by fleetledger derives from :class:`FleetLedgerError`;
third-party errors are wrapped ``from exc``.  Messages say what was found and what
was expected, so the CLI can print ``str(exc)`` as its single line.
"""

from __future__ import annotations


class FleetLedgerError(Exception):
    """Root of every error fleetledger raises on purpose."""


def one_line(exc: BaseException) -> str:
    """``Type: message`` of a third-party error on one line, without repeating the type."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


class ConfigError(FleetLedgerError):
    """A setting, URL or path is malformed or points at nothing usable."""


class SchemaError(FleetLedgerError):
    """An event could not be encoded, decoded or validated against the contract."""


class UnknownFingerprintError(SchemaError):
    """The single-object header names a writer schema this reader does not know."""


class DecodeError(SchemaError):
    """Bytes are not a well-formed single-object encoded message (bad magic, truncated...)."""


class EventValidationError(SchemaError):
    """A field failed validation; the message names the field, the value and what was expected.

    ``field`` is the path of the (first) failing field, e.g. ``payload.cost.amount``, when
    the failure is about one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class ProducerError(FleetLedgerError):
    """The SDK could not record or deliver an event."""


class DeliveryError(ProducerError):
    """A transport failed to deliver a batch; nothing about it was acknowledged."""


class RunStateError(ProducerError):
    """An SDK call does not fit the run's state (e.g. an event after the run ended)."""


class ProcessorError(FleetLedgerError):
    """A processor could not apply or materialize events."""


class StoreError(FleetLedgerError):
    """The embedded store or a broker could not be reached or read."""


class VerificationError(FleetLedgerError):
    """Evidence (a bundle, a signed envelope, an inclusion proof) failed a check.

    ``check`` names the failing check (``signature``, ``digest``, ``chain``...), ``where``
    the place (``seq 7 event_hash``) when there is one.
    """

    def __init__(self, check: str, message: str, *, where: str | None = None) -> None:
        self.check = check
        self.where = where
        super().__init__(f"{check}{f' ({where})' if where else ''}: {message}")
