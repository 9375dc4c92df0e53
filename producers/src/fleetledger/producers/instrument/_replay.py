"""Answering an instrumented client's call from a recording, without the network.

The recorded ``outputs`` of a model call are the provider's response without its
``usage`` (which the event keeps as token counts), whether the call was streamed or not.
From them this module rebuilds what the provider would have sent - the JSON response, or
the server-sent events of a stream (one text delta per content block) - and hands that
to the client's own response handling, so the agent gets the very types (``ChatCompletion``,
``Stream[ChatCompletionChunk]``, ``Message``, raw responses...) a live call returns.

The client's private ``_process_response`` and ``_make_status_error_from_response`` (as in the
``openai`` and ``anthropic`` packages, which share their generator) are used here and
only here; the replay tests run them against the real packages.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from fleetledger.kernel.errors import ReplayError
from fleetledger.producers.replay import RecordedCall

__all__ = ["aserve", "response_body", "serve", "stream_body"]


def _usage_openai(kind: str, r: RecordedCall) -> dict[str, Any]:
    if kind == "responses":
        return {
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "total_tokens": r.input_tokens + r.output_tokens,
            "input_tokens_details": {"cached_tokens": r.cache_read_tokens},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    return {
        "prompt_tokens": r.input_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.input_tokens + r.output_tokens,
        "prompt_tokens_details": {"cached_tokens": r.cache_read_tokens},
    }


def _usage_anthropic(r: RecordedCall) -> dict[str, Any]:
    write = r.cache_write_tokens or 0
    return {
        # the event counts cache reads and writes in the input tokens, Anthropic does not
        "input_tokens": max(0, r.input_tokens - r.cache_read_tokens - write),
        "output_tokens": r.output_tokens,
        "cache_read_input_tokens": r.cache_read_tokens,
        "cache_creation_input_tokens": write,
    }


def _outputs(r: RecordedCall) -> dict[str, Any]:
    if not isinstance(r.outputs, dict):
        raise ReplayError(
            f"the recorded call (seq {r.seq}) has {type(r.outputs).__name__} outputs, expected "
            "the provider's response object; a call recorded without its outputs cannot be "
            "answered"
        )
    return dict(r.outputs)


def _anthropic_content(blocks: Any) -> list[dict[str, Any]]:
    out = []
    for block in blocks if isinstance(blocks, list) else []:
        b = dict(block)
        partial = b.pop("partial_json", None)
        if b.get("type") == "tool_use" and partial:  # recorded from a stream
            try:
                b["input"] = json.loads(partial)
            except ValueError:
                b["input"] = {}
        out.append(b)
    return out


def response_body(vendor: str, kind: str, r: RecordedCall) -> dict[str, Any]:
    """The JSON response of a recorded call (``vendor`` ``openai`` or ``anthropic``)."""
    out = _outputs(r)
    if vendor == "anthropic":
        out.setdefault("type", "message")
        out.setdefault("role", "assistant")
        out["content"] = _anthropic_content(out.get("content"))
        out["usage"] = _usage_anthropic(r)
        return out
    if kind == "embeddings":
        raise ReplayError(
            f"the recorded embeddings call (seq {r.seq}) kept only the number of vectors, "
            "expected the vectors themselves; embeddings cannot be answered from a recording"
        )
    if kind == "responses":
        out.setdefault("object", "response")
        out.setdefault("status", "completed")
        out.setdefault("output", [])
    else:
        out.setdefault("object", "chat.completion" if kind == "chat" else "text_completion")
        out.setdefault("created", 0)
        for choice in out.get("choices", []):
            choice.setdefault("finish_reason", "stop")
            if kind == "chat":
                choice.setdefault("message", {"role": "assistant", "content": ""})
    out["usage"] = _usage_openai(kind, r)
    return out


def _sse(events: list[tuple[str | None, dict[str, Any] | str]]) -> bytes:
    lines = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        lines.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(lines).encode()


def stream_body(vendor: str, kind: str, r: RecordedCall, body: dict[str, Any]) -> bytes:
    """The server-sent events of a recorded call answered as a stream."""
    full = response_body(vendor, kind, r)
    if vendor == "anthropic":
        return _anthropic_stream(full)
    if kind == "responses":
        return _sse(_responses_events(full))
    usage = full.pop("usage")
    chunk: dict[str, Any] = {
        "id": full.get("id"),
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": full.get("created", 0),
        "model": full.get("model"),
        "choices": [],
    }
    for choice in full.get("choices", []):
        if kind == "chat":
            message = choice.get("message") or {}
            delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
            if message.get("tool_calls"):
                delta["tool_calls"] = [
                    {**tc, "index": n} for n, tc in enumerate(message["tool_calls"])
                ]
            item = {"index": choice.get("index", 0), "delta": delta}
        else:
            item = {"index": choice.get("index", 0), "text": choice.get("text", "")}
        item["finish_reason"] = choice.get("finish_reason")
        chunk["choices"].append(item)
    events: list[tuple[str | None, dict[str, Any] | str]] = [(None, chunk)]
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append((None, {**chunk, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return _sse(events)


def _responses_events(full: dict[str, Any]) -> list[tuple[str | None, dict[str, Any] | str]]:
    """The Responses API's event sequence for a finished response: every output item
    added, its text parts added, streamed in one delta and done, then completed."""
    raw: list[tuple[str, dict[str, Any]]] = []
    started = {**full, "status": "in_progress", "output": [], "usage": None}
    raw.append(("response.created", {"response": started}))
    raw.append(("response.in_progress", {"response": started}))
    for i, item in enumerate(full.get("output", [])):
        if not isinstance(item, dict):
            continue
        parts = item.get("content") if isinstance(item.get("content"), list) else None
        opened = {**item, "status": "in_progress", **({"content": []} if parts is not None else {})}
        raw.append(("response.output_item.added", {"output_index": i, "item": opened}))
        for j, part in enumerate(parts or []):
            if not isinstance(part, dict):
                continue
            at = {"item_id": item.get("id", f"item_{i}"), "output_index": i, "content_index": j}
            text = part.get("text", "")
            empty = {**part, "text": ""} if "text" in part else part
            raw.append(("response.content_part.added", {**at, "part": empty}))
            if part.get("type") == "output_text":
                raw.append(("response.output_text.delta", {**at, "delta": text, "logprobs": []}))
                raw.append(("response.output_text.done", {**at, "text": text, "logprobs": []}))
            raw.append(("response.content_part.done", {**at, "part": part}))
        raw.append(("response.output_item.done", {"output_index": i, "item": item}))
    raw.append(("response.completed", {"response": full}))
    return [
        (name, {"type": name, "sequence_number": n, **data}) for n, (name, data) in enumerate(raw)
    ]


def _anthropic_stream(full: dict[str, Any]) -> bytes:
    usage = full.pop("usage")
    blocks = full.pop("content", [])
    start = {
        **full,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    events: list[tuple[str | None, dict[str, Any] | str]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for i, block in enumerate(blocks):
        btype = block.get("type")
        if btype == "tool_use":
            first = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block.get("input", {}))}
        elif btype == "thinking":
            first = {**block, "thinking": ""}
            delta = {"type": "thinking_delta", "thinking": block.get("thinking", "")}
        else:
            first = {**block, "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": first},
            )
        )
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": full.get("stop_reason"),
                    "stop_sequence": full.get("stop_sequence"),
                },
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return _sse(events)


def _http(client: Any) -> Any:
    """The HTTP library module of a client (``httpx`` or its successor): the package of
    the first class of its HTTP client's type that is not the client package's own."""
    own = type(client).__module__.split(".", 1)[0]
    for cls in type(client._client).__mro__:
        top = cls.__module__.split(".", 1)[0]
        if top not in (own, "builtins"):
            return importlib.import_module(top)
    raise ReplayError(f"cannot find the HTTP library of a {type(client).__name__} client")


def _request(client: Any, http: Any, options: Any) -> Any:
    """The request the call would have sent (method, URL, headers; no body): what the
    client's response handling reads from a response's request."""
    headers = {
        str(k): v
        for k, v in (getattr(options, "headers", None) or {}).items()
        if isinstance(v, str)
    }
    url = str(getattr(options, "url", ""))
    if not url.startswith(("http://", "https://")):
        url = str(client.base_url).rstrip("/") + "/" + url.lstrip("/")
    return http.Request(str(getattr(options, "method", "post")).upper(), url, headers=headers)


def _response(
    client: Any, options: Any, vendor: str, kind: str, r: RecordedCall, stream: bool
) -> Any:
    """An HTTP response object of the client's HTTP library carrying the recorded answer."""
    http = _http(client)
    request = _request(client, http, options)
    body = getattr(options, "json_data", None)
    if stream:
        content = stream_body(vendor, kind, r, body if isinstance(body, dict) else {})
        media = "text/event-stream"
    else:
        content = json.dumps(response_body(vendor, kind, r)).encode()
        media = "application/json"
    return http.Response(200, content=content, headers={"content-type": media}, request=request)


def serve(
    client: Any,
    vendor: str,
    kind: str,
    recorded: RecordedCall,
    cast_to: Any,
    options: Any,
    stream: bool,
    stream_cls: Any,
) -> Any:
    """What ``client.request(cast_to, options, ...)`` would return for the recorded answer."""
    response = _response(client, options, vendor, kind, recorded, stream)
    return client._process_response(
        cast_to=cast_to, options=options, response=response, stream=stream, stream_cls=stream_cls
    )


async def aserve(
    client: Any,
    vendor: str,
    kind: str,
    recorded: RecordedCall,
    cast_to: Any,
    options: Any,
    stream: bool,
    stream_cls: Any,
) -> Any:
    """:func:`serve` for the async clients."""
    response = _response(client, options, vendor, kind, recorded, stream)
    return await client._process_response(
        cast_to=cast_to, options=options, response=response, stream=stream, stream_cls=stream_cls
    )


#: HTTP status of the provider errors a recorded failed call is replayed as.
_STATUS = {
    "BadRequestError": 400,
    "AuthenticationError": 401,
    "PermissionDeniedError": 403,
    "NotFoundError": 404,
    "ConflictError": 409,
    "UnprocessableEntityError": 422,
    "RateLimitError": 429,
    "InternalServerError": 500,
    "ServiceUnavailableError": 503,
    "OverloadedError": 529,
}


def recorded_error(client: Any, options: Any, recorded: RecordedCall) -> BaseException:
    """The exception a recorded failed call raised, as the client's own exception type
    (a status error for HTTP failures, ``APITimeoutError``/``APIConnectionError``)."""
    package = importlib.import_module(type(client).__module__.split(".", 1)[0])
    http = _http(client)
    request = _request(client, http, options)
    name = recorded.error_type or "InternalServerError"
    if name in ("APITimeoutError", "APIConnectionError") and hasattr(package, name):
        exc: BaseException = getattr(package, name)(request=request)
        return exc
    body = {"error": {"type": name, "message": f"replayed failure of seq {recorded.seq}"}}
    response = http.Response(
        _STATUS.get(name, 500),
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        request=request,
    )
    exc = client._make_status_error_from_response(response)
    return exc
