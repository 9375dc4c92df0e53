"""A small OpenAI/Anthropic-shaped HTTP server on 127.0.0.1 for the real client packages.

It answers ``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/embeddings`` (OpenAI)
and ``/v1/messages`` (Anthropic) with API-shaped JSON, or with server-sent events when
the request asks to stream (usage blocks included as the real APIs send them).  A model
named ``error-<status>`` answers that HTTP status with the API's error body.  Every
request body is kept in :attr:`LLMStub.requests`.  The server runs in a daemon thread of
the test process and is stopped by :meth:`LLMStub.close`.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Usage every call reports (OpenAI counts cached tokens inside the prompt tokens).
OPENAI_USAGE = {"prompt": 1200, "cached": 400, "completion": 85}
#: Anthropic reports input, cache reads and cache writes apart.
ANTHROPIC_USAGE = {"input": 900, "cache_read": 300, "cache_write": 100, "output": 85}
TEXT = ["The ", "answer ", "is ", "42."]
CREATED = 1_767_225_600


def served_model(model: str) -> str:
    """The dated name the stub answers with, as the real APIs do."""
    return {
        "gpt-4o": "gpt-4o-2024-08-06",
        "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
        "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    }.get(model, model)


def _chat(model: str, stream: bool) -> Any:
    usage = {
        "prompt_tokens": OPENAI_USAGE["prompt"],
        "completion_tokens": OPENAI_USAGE["completion"],
        "total_tokens": OPENAI_USAGE["prompt"] + OPENAI_USAGE["completion"],
        "prompt_tokens_details": {"cached_tokens": OPENAI_USAGE["cached"]},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    base = {"id": "chatcmpl-1", "created": CREATED, "model": served_model(model)}
    if not stream:
        return {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TEXT)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
    chunks = []
    for i, piece in enumerate(TEXT):
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        chunks.append(
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        )
    chunks.append(
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    return chunks, {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}


def _response(model: str) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "model": served_model(model),
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "".join(TEXT), "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": OPENAI_USAGE["prompt"],
            "input_tokens_details": {"cached_tokens": OPENAI_USAGE["cached"]},
            "output_tokens": OPENAI_USAGE["completion"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": OPENAI_USAGE["prompt"] + OPENAI_USAGE["completion"],
        },
    }


def _response_events(model: str) -> list[tuple[str, dict[str, Any]]]:
    done = _response(model)
    created = {**done, "status": "in_progress", "output": [], "usage": None}
    item = {**done["output"][0], "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": created}),
        ("response.in_progress", {"response": created}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        ("response.content_part.added", {**at, "part": part}),
    ]
    for piece in TEXT:
        events.append(("response.output_text.delta", {**at, "delta": piece, "logprobs": []}))
    events += [
        ("response.output_text.done", {**at, "text": "".join(TEXT), "logprobs": []}),
        ("response.content_part.done", {**at, "part": done["output"][0]["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": done["output"][0]}),
        ("response.completed", {"response": done}),
    ]
    return [
        (name, {"type": name, "sequence_number": i, **data})
        for i, (name, data) in enumerate(events)
    ]


def _message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": served_model(model),
        "content": [{"type": "text", "text": "".join(TEXT)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": ANTHROPIC_USAGE["input"],
            "cache_read_input_tokens": ANTHROPIC_USAGE["cache_read"],
            "cache_creation_input_tokens": ANTHROPIC_USAGE["cache_write"],
            "output_tokens": ANTHROPIC_USAGE["output"],
        },
    }


def _message_events(model: str) -> list[tuple[str, dict[str, Any]]]:
    message = _message(model)
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": start}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    for piece in TEXT:
        events.append(
            ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        )
    events += [
        ("content_block_stop", {"index": 0}),
        (
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": ANTHROPIC_USAGE["output"]},
            },
        ),
        ("message_stop", {}),
    ]
    return [(name, {"type": name, **data}) for name, data in events]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and body leave in one write (flushed after each request)
    server: _Server

    def setup(self) -> None:
        super().setup()
        # no Nagle: a keep-alive client would otherwise wait on delayed ACKs (~40 ms a call)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *_: Any) -> None:  # quiet
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?", 1)[0].rstrip("/")
        with self.server.lock:
            self.server.requests.append((path, body))
        model = str(body.get("model", ""))
        anthropic = path.endswith("/messages")
        if model.startswith("error-"):
            status = int(model.split("-", 1)[1])
            error = {"type": "rate_limit_error" if status == 429 else "api_error", "message": "no"}
            self._json(status, {"type": "error", "error": error} if anthropic else {"error": error})
            return
        stream = bool(body.get("stream"))
        if path.endswith("/chat/completions"):
            if not stream:
                self._json(200, _chat(model, False))
                return
            chunks, usage_chunk = _chat(model, True)
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            self._sse([(None, c) for c in chunks] + ([(None, usage_chunk)] if include else []))
        elif path.endswith("/responses"):
            if stream:
                self._sse(_response_events(model), done=False)
            else:
                self._json(200, _response(model))
        elif path.endswith("/embeddings"):
            n = len(body["input"]) if isinstance(body.get("input"), list) else 1
            self._json(
                200,
                {
                    "object": "list",
                    "model": served_model(model),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [0.0, 1.0]}
                        for i in range(n)
                    ],
                    "usage": {"prompt_tokens": 12, "total_tokens": 12},
                },
            )
        elif anthropic:
            if stream:
                self._sse(_message_events(model), done=False)
            else:
                self._json(200, _message(model))
        else:
            self._json(404, {"error": {"type": "not_found", "message": path}})

    def _json(self, status: int, data: Any) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if status >= 400:
            self.send_header("x-should-retry", "false")
        self.end_headers()
        self.wfile.write(raw)

    def _sse(self, events: Sequence[tuple[str | None, Any]], *, done: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        if done:
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, Any]]] = []


class LLMStub:
    """Start with ``LLMStub()``; ``base_url`` is ``http://127.0.0.1:<port>/v1``."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="llm-stub", daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    @property
    def anthropic_url(self) -> str:
        """Anthropic clients add ``/v1`` themselves."""
        return self.base_url.removesuffix("/v1")

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        with self._server.lock:
            return list(self._server.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
