"""Round trips and rules of the event contract (models + Avro codec)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from fleetledger.schemas import Codec, EventType, TraceEvent


def test_smoke_round_trip() -> None:
    ev = TraceEvent(
        event_id=UUID("00000000-0000-4000-8000-000000000001"),
        run_id="r1",
        seq=0,
        type=EventType.RUN_COMPLETED,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        agent_id="a",
        tenant="t",
        producer_id="p",
        payload={"summary": "ok"},
    )
    codec = Codec()
    assert codec.decode(codec.encode_batch([ev])) == [ev]
    assert Decimal("1.5") == Decimal("1.50")
