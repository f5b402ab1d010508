"""The span row: a finished span as the plain dict the store, the CLI and the remote clients
pass around, and the one place ids become hex text."""

from __future__ import annotations

from typing import Any, TypedDict

from opentelemetry import trace
from opentelemetry.trace import SpanContext


class SpanEvent(TypedDict):
    name: str
    timestamp_ns: int | None
    attributes: dict[str, Any]


class SpanLink(TypedDict):
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


class SpanRow(TypedDict):
    """One span; the store's ``spans`` table has one column per key (JSON for the dicts)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # SpanKind's name: "INTERNAL", "SERVER", ...
    start_ns: int
    end_ns: int
    status: str  # StatusCode's name: "UNSET", "OK", "ERROR"
    status_message: str | None
    service_name: str | None
    attributes: dict[str, Any]
    events: list[SpanEvent]
    links: list[SpanLink]
    resource: dict[str, Any]


def trace_id_hex(trace_id: int) -> str:
    """A trace id as 32 lowercase hex characters (W3C, Jaeger, ECS ``trace.id``)."""
    return format(trace_id, "032x")


def span_id_hex(span_id: int) -> str:
    """A span id as 16 lowercase hex characters."""
    return format(span_id, "016x")


def context_ids(ctx: SpanContext) -> tuple[str, str] | None:
    """``(trace id, span id)`` of ``ctx`` as hex, or None for the invalid (no span) context."""
    if not ctx.is_valid:
        return None
    return trace_id_hex(ctx.trace_id), span_id_hex(ctx.span_id)


def current_trace_id() -> str | None:
    """The current span's trace id as hex, or None outside a span."""
    ids = context_ids(trace.get_current_span().get_span_context())
    return ids[0] if ids else None


def current_span_id() -> str | None:
    """The current span's id as hex, or None outside a span."""
    ids = context_ids(trace.get_current_span().get_span_context())
    return ids[1] if ids else None
