"""One call to record every model call an OpenAI or Anthropic client makes::

    from openai import OpenAI
    from fleetledger.producers.instrument import instrument

    client = instrument(OpenAI())          # or AsyncOpenAI, Anthropic, AsyncAnthropic

    async with Recorder.from_url(...) as rec, rec.run(agent_id="support-bot") as run:
        client.chat.completions.create(model="gpt-4o", messages=[...])

Every call through the client - chat completions and responses (OpenAI), messages
(Anthropic); sync and async; streamed or not, through ``create``, ``parse``, ``stream``
or ``with_raw_response`` - is recorded as a ``model_io`` in the current run and step:
requested and served model, tokens from the response's usage (cache reads and writes
too, read with genai-prices' extractor for that API), duration, the request as
``inputs`` and the response as ``outputs`` (through the recorder's redaction policy),
their hashes, and the cost (see :mod:`fleetledger.producers.pricing`).  A failing call is
recorded with outcome ``error`` and the exception's type, then the exception propagates
unchanged.  Outside any run calls pass through unrecorded, and recording never raises
into the agent.  A streamed call is recorded when its stream ends or is closed; OpenAI
chat streams report tokens only with ``stream_options={"include_usage": True}`` (without
it the call is recorded with unknown tokens and an ``unpriced`` cost).

The client packages are optional dependencies (``pip install 'fleetledger-sdk[openai]'``
or ``[anthropic]``) and are not imported here: the client's class name decides.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fleetledger.kernel.errors import ConfigError
from fleetledger.producers.instrument._core import instrument_client, uninstrument_client

__all__ = ["instrument", "uninstrument"]

C = TypeVar("C")


def _adapter(client: Any, provider: str | None) -> Any:
    module = type(client).__module__.split(".", 1)[0]
    if module == "openai":
        from fleetledger.producers.instrument._openai import OpenAIAdapter

        azure = type(client).__name__.startswith(("AzureOpenAI", "AsyncAzureOpenAI"))
        return OpenAIAdapter(provider or ("azure.ai.openai" if azure else "openai"))
    if module == "anthropic":
        from fleetledger.producers.instrument._anthropic import AnthropicAdapter

        return AnthropicAdapter(provider or "anthropic")
    raise ConfigError(
        f"instrument: found a {type(client).__module__}.{type(client).__name__}, expected an "
        "openai or anthropic client (OpenAI, AsyncOpenAI, AzureOpenAI, Anthropic, ...)"
    )


def instrument(client: C, *, provider: str | None = None) -> C:
    """Record every model call ``client`` makes from now on; returns the same client.

    ``provider`` overrides the recorded ``gen_ai.provider.name`` (default ``openai``,
    ``azure.ai.openai`` for the Azure clients, or ``anthropic``).  Instrumenting twice
    is harmless; copies made with ``client.with_options(...)`` are instrumented too.
    """
    return instrument_client(client, _adapter(client, provider))  # type: ignore[no-any-return]


def uninstrument(client: C) -> C:
    """Stop recording the calls of ``client``."""
    return uninstrument_client(client)  # type: ignore[no-any-return]
