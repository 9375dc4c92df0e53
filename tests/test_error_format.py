"""One wording for an invalid value, wherever it is caught: the SDK and the codec agree.

Both describe a pydantic failure with ``schemas.models.validation_error``; an SDK that
formatted errors its own way (it once printed ``found ''`` where the codec printed
``found '' (str), expected a non-empty string``) fails here.
"""

from __future__ import annotations

import re

import pytest

from fleetledger.kernel.errors import EventValidationError
from fleetledger.producers import MemoryTransport, Recorder
from fleetledger.schemas import Codec, EventType, WorkflowSnapshot, WorkflowStep

from .test_schemas import _raw_message, make_event

WORKFLOW = WorkflowSnapshot(
    name="w", revision="1", steps=[WorkflowStep(id="s", name="S", kind="llm")]
)


def _fragment(message: str, field: str) -> str:
    found = re.search(rf"\b{field}: found [^;]*", message)
    assert found is not None, message
    return re.sub(r" \(in fleetledger\.\w+ v\d+\)$", "", found.group(0))  # the codec's suffix


async def test_an_empty_agent_id_reads_the_same_from_the_sdk_and_the_codec() -> None:
    async with Recorder(MemoryTransport()) as rec:
        with pytest.raises(EventValidationError) as sdk:
            await rec.start_run(agent_id="", tenant="t", workflow=WORKFLOW)
    codec = Codec()
    record = make_event(EventType.RUN_COMPLETED).to_record()
    record["agent_id"] = ""
    with pytest.raises(EventValidationError) as wire:
        codec.decode(_raw_message(codec, record))
    expected = "agent_id: found '' (str), expected a non-empty string"
    assert _fragment(str(sdk.value), "agent_id") == expected
    assert _fragment(str(wire.value), "agent_id") == expected
