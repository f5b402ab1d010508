"""Span exporters: the local store, OTLP, and the counting wrapper behind ``stats()``."""

from __future__ import annotations

import base64
import os
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanContext, Status

from ..config import Options, otlp_traces_url
from ..forks import after_fork_in_child
from ..guard import internal_errors
from ..repair import nanos, nanos_ok, otlp_ok, repaired, safe_str, text, utf8_ok
from ..stats import STATS
from .rows import SpanRow, span_id_hex, trace_id_hex

if TYPE_CHECKING:
    from ..store.database import Store


def span_to_row(span: ReadableSpan) -> SpanRow:
    """A span as the row the store (and ``show --json``) uses."""
    ctx = span.context
    assert ctx is not None
    resource, service = _resource_of(span.resource)
    return {
        "trace_id": trace_id_hex(ctx.trace_id),
        "span_id": span_id_hex(ctx.span_id),
        "parent_span_id": span_id_hex(span.parent.span_id) if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or span.start_time or 0,
        "status": span.status.status_code.name,
        "status_message": span.status.description,
        "service_name": service,
        "attributes": dict(span.attributes or {}),
        "events": [
            {"name": e.name, "timestamp_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "links": [
            {
                "trace_id": trace_id_hex(link.context.trace_id),
                "span_id": span_id_hex(link.context.span_id),
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
        "resource": dict(resource),
    }


_last_resource: tuple[Resource | None, dict[str, Any], str | None] = (None, {}, None)


def _resource_of(resource: Resource | None) -> tuple[dict[str, Any], str | None]:
    """The attributes and service name of ``resource``; a process's spans share one resource,
    so the last one is remembered rather than copied out of the SDK for every span."""
    global _last_resource
    last, attributes, service = _last_resource
    if resource is not last:
        attributes = dict(resource.attributes) if resource else {}
        name = attributes.get(SERVICE_NAME)
        service = None if name is None else str(name)
        _last_resource = (resource, attributes, service)
    return attributes, service


class PartialExporter(SpanExporter):
    """An exporter that knows how many spans of a batch it lost; the others were delivered."""

    def export_lost(self, spans: Sequence[ReadableSpan]) -> int:
        """Export ``spans``; the number that did not reach the sink."""
        raise NotImplementedError

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lost = self.export_lost(spans)
        return SpanExportResult.SUCCESS if not lost else SpanExportResult.FAILURE


class StoreSpanExporter(PartialExporter):
    """Writes finished spans into the local SQLite store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def export_lost(self, spans: Sequence[ReadableSpan]) -> int:
        """Write ``spans`` in one committed transaction; the number that could not be stored."""
        rows = [span_to_row(s) for s in spans]
        pid = os.getpid()  # the resource predates a fork; the exporting process is the writer
        for row in rows:
            row["resource"][PROCESS_PID] = pid
        return self._store.write_spans(rows)

    def shutdown(self) -> None:
        self._store.close()


class CountingExporter(SpanExporter):
    """Counts exported and failed spans of the wrapped exporter; never raises.

    A :class:`PartialExporter` says how many spans of a batch it lost, so only those are
    counted dropped; any other exporter's failure counts its whole batch.
    """

    def __init__(self, sink: str, inner: SpanExporter) -> None:
        self.sink = sink
        self._inner = inner
        self._after_fork()
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # A forked child starts with nothing in flight: the parent's exports are the parent's.
        self._lock = threading.Lock()
        self._in_flight = 0
        self._abandoned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._abandoned:  # after shutdown gave up: its pending count covers these
                return SpanExportResult.FAILURE
            self._in_flight += len(spans)
        lost = len(spans)  # unless the exporter says otherwise
        with internal_errors(f"export to {self.sink}"):
            if isinstance(self._inner, PartialExporter):
                lost = self._inner.export_lost(spans)
            else:
                ok = self._inner.export(spans) is SpanExportResult.SUCCESS
                lost = 0 if ok else len(spans)
        with self._lock:
            self._in_flight -= len(spans)
            if self._abandoned:  # counted dropped when shutdown gave up on this export
                return SpanExportResult.FAILURE
            STATS.add(self.sink, "exported", len(spans) - lost)
            STATS.add(self.sink, "dropped", lost)
        return SpanExportResult.SUCCESS if not lost else SpanExportResult.FAILURE

    def abandon(self) -> int:
        """Stop counting (shutdown's deadline passed); how many spans an export still holds."""
        with self._lock:
            self._abandoned = True
            return self._in_flight

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._inner.shutdown()


def without_credentials(url: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``url`` without its ``user:password@`` part, which becomes a Basic authorization header.

    The OTLP exporters and gRPC print their endpoint in retry and error messages; a password
    in it would reach stderr. An authorization header already configured wins.
    """
    out = dict(headers)
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, out
    if not any(name.lower() == "authorization" for name in out):
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        out["authorization"] = f"Basic {token}"
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urllib.parse.urlunsplit(bare), out


def otlp_exporter(options: Options, timeout: float | None = None) -> SpanExporter:
    """The OTLP exporter for the configured protocol, with a short per-request timeout."""
    assert options.endpoint is not None
    endpoint, headers = without_credentials(options.endpoint, options.headers)
    if timeout is None:
        # Short, so a black-holed collector holds the export thread only briefly.
        timeout = max(1.0, min(10.0, options.shutdown_timeout * 2))
    if options.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = endpoint.startswith("http://")
        return OTLPSpanExporter(
            endpoint=endpoint, insecure=insecure, headers=headers or None, timeout=int(timeout)
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter(
        endpoint=otlp_traces_url(endpoint), headers=headers or None, timeout=timeout
    )


# gRPC's default receive limit is 4 MiB per message; keep headroom for the envelope.
MAX_REQUEST_BYTES = 4 * 1024 * 1024 - 256 * 1024
_TRUNCATED_VALUE = 1024
_TRUNCATED_ITEMS = 256
_MAX_EVENTS = 32


def estimated_size(span: ReadableSpan) -> int:
    """A cheap upper estimate of a span's OTLP protobuf size in bytes."""

    def attrs(values: Any) -> int:
        return sum(len(k) + len(str(v)) + 8 for k, v in (values or {}).items())

    size = 96 + len(span.name) + len(span.status.description or "") + attrs(span.attributes)
    for event in span.events:
        size += 24 + len(event.name) + attrs(event.attributes)
    for link in span.links:
        size += 48 + attrs(link.attributes)
    return size


def _shrink(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` with long values cut and surplus events dropped, marked truncated."""

    def cut_value(value: Any) -> Any:
        if isinstance(value, str):
            return value[:_TRUNCATED_VALUE]
        if isinstance(value, tuple | list):  # a long sequence is as heavy as a long string
            return tuple(cut_value(v) for v in value[:_TRUNCATED_ITEMS])
        return value

    def cut(values: Any) -> dict[str, Any]:
        return {k: cut_value(v) for k, v in (values or {}).items()}

    status = span.status  # the SDK bounds no description: one set from a huge message
    if status.description is not None and len(status.description) > _TRUNCATED_VALUE:
        status = Status(status.status_code, status.description[:_TRUNCATED_VALUE])
    return ReadableSpan(
        name=span.name[:_TRUNCATED_VALUE],
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={**cut(span.attributes), "glmtrace.truncated": True},
        events=[Event(e.name, cut(e.attributes), e.timestamp) for e in span.events[:_MAX_EVENTS]],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _otlp_ok(span: ReadableSpan) -> bool:
    def attrs(values: Any) -> bool:
        return all(utf8_ok(k) and otlp_ok(v) for k, v in (values or {}).items())

    return (
        _name_ok(span.name)
        and utf8_ok(span.status.description or "")
        and attrs(span.resource.attributes)  # GLMTRACE_SERVICE_NAME may hold undecodable bytes
        and attrs(span.attributes)
        and all(_name_ok(e.name) and attrs(e.attributes) for e in span.events)
        and all(attrs(link.attributes) for link in span.links)
        and nanos_ok(span.start_time)
        and nanos_ok(span.end_time)
        and all(nanos_ok(e.timestamp) for e in span.events)
        and all(_ids_ok(link.context) for link in span.links)
    )


def _ids_ok(context: SpanContext) -> bool:
    return 0 <= context.trace_id < 2**128 and 0 <= context.span_id < 2**64


def _name_ok(name: object) -> bool:
    return isinstance(name, str) and utf8_ok(name)


def _name(name: object) -> str:
    return "" if name is None else safe_str(name)  # span(None) is still a span


def _repaired(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` that OTLP can encode: no lone surrogates, no integers past 64 bits,
    timestamps whole nanoseconds, links only to ids that fit.

    The protobuf encoder fails the whole request on a bad span name or timestamp (an event's
    ``time.time()``) and drops (with a traceback) any attribute it cannot encode; the span is
    repaired instead.
    """

    def attrs(values: Any) -> dict[str, Any]:
        return {text(k): repaired(v, int64=True) for k, v in (values or {}).items()}

    status = span.status
    if status.description is not None:
        status = Status(status.status_code, text(status.description))
    return ReadableSpan(
        name=_name(span.name),
        context=span.context,
        parent=span.parent,
        resource=Resource(attrs(span.resource.attributes), span.resource.schema_url),
        attributes=attrs(span.attributes),
        events=[Event(_name(e.name), attrs(e.attributes), nanos(e.timestamp)) for e in span.events],
        links=[
            Link(link.context, attrs(link.attributes))
            for link in span.links
            if _ids_ok(link.context)
        ],
        kind=span.kind,
        status=status,
        start_time=nanos(span.start_time),
        end_time=nanos(span.end_time),
        instrumentation_scope=span.instrumentation_scope,
    )


class SizeBoundedExporter(PartialExporter):
    """Splits batches so no export request exceeds ``max_bytes``; shrinks oversized spans.

    One span bigger than the limit would make the receiver reject its whole batch; it is
    truncated (and counted) instead of silently lost with its neighbours. A span that cannot
    be encoded (lone surrogates, huge integers) is repaired for the same reason.
    """

    def __init__(self, sink: str, inner: SpanExporter, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.sink = sink
        self._inner = inner
        self._max_bytes = max_bytes

    def chunks(self, spans: Sequence[ReadableSpan]) -> list[list[ReadableSpan]]:
        out: list[list[ReadableSpan]] = []
        chunk: list[ReadableSpan] = []
        size = 0
        for span in spans:
            if not _otlp_ok(span):
                span = _repaired(span)
            n = estimated_size(span)
            if n > self._max_bytes:
                span = _shrink(span)
                n = estimated_size(span)
                STATS.add(self.sink, "truncated")
            if chunk and size + n > self._max_bytes:
                out.append(chunk)
                chunk, size = [], 0
            chunk.append(span)
            size += n
        if chunk:
            out.append(chunk)
        return out

    def export_lost(self, spans: Sequence[ReadableSpan]) -> int:
        """Send each chunk on its own: a refused or failed request costs only its own spans."""
        lost = 0
        for chunk in self.chunks(spans):
            ok = False
            with internal_errors(f"export to {self.sink}"):
                ok = self._inner.export(chunk) is SpanExportResult.SUCCESS
            lost += 0 if ok else len(chunk)
        return lost

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self._inner.shutdown()
