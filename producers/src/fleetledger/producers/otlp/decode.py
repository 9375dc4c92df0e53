"""OTLP/HTTP trace requests (protobuf or JSON) -> plain :class:`Span` values.

Protobuf is parsed with ``opentelemetry-proto`` (the OpenTelemetry project's generated
classes; their only dependency is ``protobuf``).  OTLP/JSON is the protobuf JSON mapping
except that trace and span ids are hex strings instead of base64: the ids are rewritten
and the same classes parse it, so both encodings go through one code path.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from fleetledger.kernel.errors import DecodeError

__all__ = ["Span", "decode_request", "encode_response"]

_ID_KEYS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass
class Span:
    """One span as the mapping needs it (ids as lowercase hex; times in ns since epoch)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0  # 0 unset, 1 ok, 2 error
    status_message: str = ""
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _hex_ids_to_base64(obj: Any) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in _ID_KEYS and isinstance(v, str) and v:
                try:
                    out[k] = base64.b64encode(bytes.fromhex(v)).decode()
                except ValueError:
                    raise DecodeError(
                        f"OTLP/JSON {k}: found {v[:40]!r}, expected hex (the OTLP/JSON id form)"
                    ) from None
            else:
                out[k] = _hex_ids_to_base64(v)
        return out
    if isinstance(obj, list):
        return [_hex_ids_to_base64(x) for x in obj]
    return obj


def _decompress(body: bytes, encoding: str | None) -> bytes:
    enc = (encoding or "").lower().strip()
    try:
        if enc == "gzip" or (not enc and body[:2] == b"\x1f\x8b"):
            return gzip.decompress(body)
        if enc == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError) as exc:
        raise DecodeError(f"OTLP body: found corrupt {enc or 'gzip'} data ({exc})") from exc
    if enc not in ("", "identity"):
        raise DecodeError(f"Content-Encoding: found {enc!r}, expected gzip, deflate or none")
    return body


def decode_request(body: bytes, content_type: str, encoding: str | None = None) -> list[Span]:
    """The spans of one ``ExportTraceServiceRequest``; :class:`DecodeError` if malformed."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError as ProtoDecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    raw = _decompress(body, encoding)
    request = ExportTraceServiceRequest()
    mime = content_type.split(";", 1)[0].strip().lower()
    try:
        if mime == JSON:
            json_format.ParseDict(_hex_ids_to_base64(json.loads(raw)), request)
        elif mime in (PROTOBUF, "application/protobuf"):
            request.ParseFromString(raw)
        else:
            raise DecodeError(
                f"Content-Type: found {content_type!r}, expected {PROTOBUF} or {JSON}"
            )
    except (ProtoDecodeError, json_format.ParseError, ValueError) as exc:
        raise DecodeError(f"OTLP {mime} body: not an ExportTraceServiceRequest ({exc})") from exc
    spans: list[Span] = []
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for s in ss.spans:
                spans.append(
                    Span(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex() or None,
                        name=s.name,
                        kind=int(s.kind),
                        start_ns=int(s.start_time_unix_nano),
                        end_ns=int(s.end_time_unix_nano),
                        attributes=_attributes(s.attributes),
                        status_code=int(s.status.code),
                        status_message=s.status.message,
                        events=[
                            (e.name, int(e.time_unix_nano), _attributes(e.attributes))
                            for e in s.events
                        ],
                        resource=resource,
                        scope=scope,
                    )
                )
    return spans


def encode_response(content_type: str, rejected: int, message: str) -> tuple[bytes, str]:
    """An ``ExportTraceServiceResponse`` (partial success when spans were not mapped)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == JSON:
        data: dict[str, Any] = {}
        if rejected or message:
            data["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
        return json.dumps(data).encode(), JSON
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response.SerializeToString(), PROTOBUF
