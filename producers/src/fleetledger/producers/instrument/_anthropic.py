"""The Anthropic adapter: messages (``create``, ``create(stream=True)``, ``stream``)."""

from __future__ import annotations

from typing import Any

from fleetledger.producers.instrument._core import Observed, library_tokens, to_json

__all__ = ["AnthropicAdapter"]


class AnthropicAdapter:
    def __init__(self, provider: str = "anthropic") -> None:
        self.provider = provider

    def kind(self, options: Any) -> str | None:
        if str(getattr(options, "method", "")).lower() != "post":
            return None
        url = str(getattr(options, "url", "")).rstrip("/")
        return "messages" if url.endswith("/messages") else None

    def observe(self, kind: str, data: dict[str, Any]) -> Observed:
        outputs = {k: v for k, v in data.items() if k != "usage"}
        return Observed(data.get("model"), data.get("usage"), outputs)

    def tokens(self, kind: str, observed: Observed) -> dict[str, int] | None:
        if not isinstance(observed.usage, dict):
            return None
        data = {"model": observed.model or "unknown", "usage": observed.usage}
        return library_tokens("anthropic", data, "default")

    def accumulator(self, kind: str) -> Any:
        return _MessageStream()


class _MessageStream:
    """Raw message stream events -> the message and its usage.

    ``message_start`` carries the model and the input usage, ``message_delta`` the
    cumulative output tokens (and, for some models, updated input counts).
    """

    def __init__(self) -> None:
        self.message: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}

    def add(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self.message = to_json(event.message)
            self.usage.update(self.message.pop("usage", None) or {})
        elif kind == "content_block_start":
            self.blocks[event.index] = to_json(event.content_block)
        elif kind == "content_block_delta":
            block = self.blocks.setdefault(event.index, {"type": "text", "text": ""})
            delta = event.delta
            dtype = getattr(delta, "type", None)
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta.text
            elif dtype == "input_json_delta":
                block["partial_json"] = block.get("partial_json", "") + delta.partial_json
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.thinking
        elif kind == "message_delta":
            delta = to_json(event.delta)
            self.message.update({k: v for k, v in delta.items() if v is not None})
            usage = to_json(getattr(event, "usage", None)) or {}
            self.usage.update({k: v for k, v in usage.items() if v is not None})

    def result(self) -> Observed:
        outputs = dict(self.message)
        outputs["content"] = [self.blocks[i] for i in sorted(self.blocks)]
        return Observed(self.message.get("model"), self.usage or None, outputs)
