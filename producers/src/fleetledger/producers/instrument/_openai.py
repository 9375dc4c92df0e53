"""The OpenAI adapter: chat completions, responses, legacy completions, embeddings."""

from __future__ import annotations

from typing import Any

from fleetledger.producers.instrument._core import Observed, library_tokens, to_json

__all__ = ["OpenAIAdapter"]

_ROUTES = (
    ("/chat/completions", "chat"),
    ("/responses", "responses"),
    ("/completions", "completions"),
    ("/embeddings", "embeddings"),
)
# genai-prices' usage extractors per API
_FLAVORS = {"chat": "chat", "completions": "chat", "responses": "responses"}
_FINAL = ("response.completed", "response.incomplete", "response.failed")


class OpenAIAdapter:
    def __init__(self, provider: str = "openai") -> None:
        self.provider = provider

    def kind(self, options: Any) -> str | None:
        if str(getattr(options, "method", "")).lower() != "post":
            return None
        url = str(getattr(options, "url", "")).rstrip("/")
        for suffix, kind in _ROUTES:
            if url.endswith(suffix):
                return kind
        return None

    def observe(self, kind: str, data: dict[str, Any]) -> Observed:
        outputs = {k: v for k, v in data.items() if k != "usage"}
        if kind == "embeddings":  # the vectors are no record of the call: keep their count
            vectors = outputs.pop("data", None)
            outputs["embeddings"] = len(vectors) if isinstance(vectors, list) else 0
        return Observed(data.get("model"), data.get("usage"), outputs)

    def tokens(self, kind: str, observed: Observed) -> dict[str, int] | None:
        usage = observed.usage
        if not isinstance(usage, dict):
            return None
        if kind == "embeddings":
            inp = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
            return {"input": inp, "output": 0, "cache_read": 0, "cache_write": 0}
        data = {"model": observed.model or "unknown", "usage": usage}
        return library_tokens("openai", data, _FLAVORS[kind])

    def accumulator(self, kind: str) -> Any:
        return _ResponsesStream() if kind == "responses" else _ChatStream()


class _ChatStream:
    """Chat (or legacy completion) chunks -> the message they spelled and the usage."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: Any) -> None:
        self.id = getattr(chunk, "id", None) or self.id
        self.model = getattr(chunk, "model", None) or self.model
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = to_json(usage)
        for choice in getattr(chunk, "choices", None) or ():
            slot = self.choices.setdefault(
                choice.index, {"index": choice.index, "content": [], "tools": {}}
            )
            if getattr(choice, "finish_reason", None):
                slot["finish_reason"] = choice.finish_reason
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None) if delta is not None else None
            if text is None:
                text = getattr(choice, "text", None)  # legacy completions
            if text:
                slot["content"].append(text)
            for tc in (getattr(delta, "tool_calls", None) or ()) if delta is not None else ():
                tool = slot["tools"].setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                tool["id"] = tc.id or tool["id"]
                fn = getattr(tc, "function", None)
                if fn is not None:
                    tool["name"] += fn.name or ""
                    tool["arguments"] += fn.arguments or ""

    def result(self) -> Observed:
        choices = []
        for index in sorted(self.choices):
            slot = self.choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(slot["content"])}
            if slot["tools"]:
                message["tool_calls"] = [
                    {
                        "id": t["id"],
                        "type": "function",
                        "function": {"name": t["name"], "arguments": t["arguments"]},
                    }
                    for _, t in sorted(slot["tools"].items())
                ]
            item = {"index": index, "message": message}
            if "finish_reason" in slot:
                item["finish_reason"] = slot["finish_reason"]
            choices.append(item)
        outputs = {"id": self.id, "model": self.model, "choices": choices}
        return Observed(self.model, self.usage, outputs)


class _ResponsesStream:
    """Responses API events -> the final response (usage included)."""

    def __init__(self) -> None:
        self.final: dict[str, Any] | None = None
        self.model: str | None = None
        self.text: list[str] = []

    def add(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        response = getattr(event, "response", None)
        if response is not None:
            self.model = getattr(response, "model", None) or self.model
        if kind in _FINAL and response is not None:
            self.final = to_json(response)
        elif kind == "response.output_text.delta":
            self.text.append(getattr(event, "delta", "") or "")

    def result(self) -> Observed:
        if self.final is not None:
            final = self.final
            outputs = {k: v for k, v in final.items() if k != "usage"}
            return Observed(final.get("model"), final.get("usage"), outputs)
        return Observed(self.model, None, {"output_text": "".join(self.text)})
