"""Span rows (the local store's shape) to and from what remote backends speak.

- :func:`rows_from_otlp_json`: Jaeger's api/v3 answer (OTLP JSON) to store rows.
- :func:`readable_span`: a store row back to an SDK ``ReadableSpan`` for the OTLP exporters.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ..repair import repaired, text
from .rows import SpanRow

_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _hex_id(value: str | None) -> str | None:
    """Ids as lowercase hex: Jaeger writes hex, plain protobuf JSON would write base64."""
    if not value:
        return None
    if len(value) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return base64.b64decode(value).hex()


def _enum(value: Any, names: Mapping[int, str], prefix: str, default: str) -> str:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return names.get(int(value), default)
    if isinstance(value, str) and value:  # "SPAN_KIND_SERVER", "STATUS_CODE_ERROR"
        return value.removeprefix(prefix)
    return default


def any_value(value: Mapping[str, Any] | None) -> Any:
    """An OTLP JSON ``AnyValue`` as a plain Python value."""
    if not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "arrayValue":
        return [any_value(v) for v in inner.get("values", [])]
    if kind == "kvlistValue":
        return attributes(inner.get("values"))
    if kind == "bytesValue":
        return base64.b64decode(inner).hex()
    return inner  # stringValue, boolValue


def attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    """OTLP JSON ``[{key, value}]`` as a dict."""
    return {item["key"]: any_value(item.get("value")) for item in items or []}


def rows_from_otlp_json(payload: Mapping[str, Any]) -> list[SpanRow]:
    """Every span in an OTLP JSON ``resourceSpans`` payload, as store rows, by start time."""
    rows: list[SpanRow] = []
    body = payload.get("result") or payload
    for resource_spans in body.get("resourceSpans", []):
        resource = attributes((resource_spans.get("resource") or {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                rows.append(_row(span, resource))
    rows.sort(key=lambda r: (r["start_ns"], r["span_id"]))
    return rows


def _row(span: Mapping[str, Any], resource: dict[str, Any]) -> SpanRow:
    status = span.get("status") or {}
    start = int(span.get("startTimeUnixNano", 0))
    return {
        "trace_id": _hex_id(span.get("traceId")) or "",
        "span_id": _hex_id(span.get("spanId")) or "",
        "parent_span_id": _hex_id(span.get("parentSpanId")),
        "name": span.get("name", ""),
        "kind": _enum(span.get("kind"), _KINDS, "SPAN_KIND_", "INTERNAL"),
        "start_ns": start,
        "end_ns": int(span.get("endTimeUnixNano", start)),
        "status": _enum(status.get("code"), _STATUS, "STATUS_CODE_", "UNSET"),
        "status_message": status.get("message") or None,
        "service_name": resource.get(SERVICE_NAME),
        "attributes": attributes(span.get("attributes")),
        "events": [
            {
                "name": e.get("name", ""),
                "timestamp_ns": int(e.get("timeUnixNano", 0)),
                "attributes": attributes(e.get("attributes")),
            }
            for e in span.get("events", [])
        ],
        "links": [
            {
                "trace_id": _hex_id(link.get("traceId")) or "",
                "span_id": _hex_id(link.get("spanId")) or "",
                "attributes": attributes(link.get("attributes")),
            }
            for link in span.get("links", [])
        ],
        "resource": resource,
    }


def _attrs(values: Mapping[str, Any]) -> dict[str, Any]:
    # JSON turned tuples into lists; OpenTelemetry wants homogeneous sequences as tuples.
    # The store keeps integers past 64 bits, which OTLP cannot carry: they go as text.
    return {
        text(k): repaired(tuple(v) if isinstance(v, list) else v, int64=True)
        for k, v in values.items()
    }


def _context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=TraceFlags(1)
    )


_SCOPE = InstrumentationScope("glmtrace")


def readable_span(row: SpanRow) -> ReadableSpan:
    """A store row as a finished SDK span that the OTLP exporters can encode."""
    code = StatusCode[row.get("status") or "UNSET"]
    # Only an error status may carry a description (the SDK warns otherwise).
    status = Status(code, row.get("status_message") if code is StatusCode.ERROR else None)
    parent = row.get("parent_span_id")
    return ReadableSpan(
        name=text(row["name"] or ""),
        context=_context(row["trace_id"], row["span_id"]),
        parent=_context(row["trace_id"], parent) if parent else None,
        resource=Resource(_attrs(row.get("resource") or {})),
        attributes=_attrs(row.get("attributes") or {}),
        events=[
            Event(e["name"], _attrs(e.get("attributes") or {}), e.get("timestamp_ns"))
            for e in row.get("events") or []
        ],
        links=[
            Link(
                _context(li["trace_id"], li["span_id"]),
                _attrs(li.get("attributes") or {}),
            )
            for li in row.get("links") or []
        ],
        kind=SpanKind[row.get("kind") or "INTERNAL"],
        status=status,
        start_time=int(row["start_ns"]),
        end_time=int(row["end_ns"]),
        instrumentation_scope=_SCOPE,
    )
