"""The native OTLP export path: each finished span leaves Python's heap at once.

The optional extension ``glmtrace_native`` (built from native/ when cargo is present) holds a
bounded queue outside Python's heap and a thread that batches, encodes OTLP protobuf and sends
it (POST to ``/v1/traces``, or gRPC's TraceService/Export) without the GIL; queued spans are then
invisible to the garbage collector and the export never competes with user code for the GIL.
This module turns a ``ReadableSpan`` into the compact tuple that extension takes. It is used for
``traces="otlp"`` over plain-text ``http/protobuf`` or ``grpc`` when the extension imports,
unless ``GLMTRACE_NATIVE=0``; everything else (TLS, compression, no extension) keeps
OpenTelemetry's Python exporter. The local store's native writer (store/native_writer.py) takes
the same tuples through a subclass of :class:`NativeSpanProcessor`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .config import Options, otlp_traces_url
from .export.exporters import without_credentials
from .forks import after_fork_in_child
from .guard import report
from .otel_internals import attribute_dict, span_fields
from .stats import STATS

_native: ModuleType | None
try:
    import glmtrace_native as _native
except ImportError:  # not built: the Python exporter does the work
    _native = None

_SINK = "otlp"
SYNC_EVERY = 1024  # spans between two reads of the native counters into stats()


def available() -> bool:
    """True when the extension is built and importable."""
    return _native is not None


def extension() -> ModuleType | None:
    """The extension module, None when it is not built."""
    return _native


def wanted(options: Options) -> bool:
    """Whether ``options`` get the native path: extension present, ``GLMTRACE_NATIVE`` not 0,
    and an endpoint the native client speaks (OTLP/HTTP protobuf or gRPC, plain text,
    uncompressed)."""
    if _native is None or forced_off():
        return False
    compression = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", os.environ.get("OTEL_EXPORTER_OTLP_COMPRESSION")
    )
    endpoint = options.endpoint or ""
    return (
        options.protocol in ("http/protobuf", "grpc")  # OTel's TLS settings apply to https only
        and endpoint.startswith("http://")
        and compression in (None, "", "none")
    )


def describe(options: Options) -> str:
    """Which path spans take to ``traces="otlp"`` with ``options``, and why (for ``doctor``)."""
    if _native is None:
        return "Python OTLP exporter (glmtrace_native is not built)"
    if forced_off():
        return "Python OTLP exporter (GLMTRACE_NATIVE=0)"
    if not wanted(options):
        return (
            "Python OTLP exporter (the native pipeline speaks OTLP/HTTP protobuf and OTLP/gRPC"
            " to http:// endpoints, uncompressed)"
        )
    return "native pipeline (glmtrace_native): spans leave Python's heap when they end"


def forced_off() -> bool:
    """True when ``GLMTRACE_NATIVE`` is 0 (or false, no, off): the Python path, always."""
    return os.environ.get("GLMTRACE_NATIVE", "").strip().lower() in ("0", "false", "no", "off")


_attrs = attribute_dict


class SpanTuples:
    """Turns spans into the extension's tuples; registers each resource and scope once."""

    def __init__(
        self,
        add_resource: Callable[[Any, str | None], int],
        add_scope: Callable[[str, str | None, str | None, Any], int],
    ) -> None:
        self._add_resource, self._add_scope = add_resource, add_scope
        # By identity first (hashing a Resource serialises it); equal ones share an entry,
        # as the reference encoder groups them.
        self._resource_ids: dict[int, tuple[Resource, int]] = {}
        self._resources: dict[Resource, int] = {}
        self._scope_ids: dict[int, tuple[InstrumentationScope | None, int]] = {}
        self._scopes: dict[InstrumentationScope | None, int] = {}

    def indices(self, resource: Resource, scope: InstrumentationScope | None) -> tuple[int, int]:
        """The registered indices of ``resource`` and ``scope``: a tuple's first two fields."""
        return self._resource(resource), self._scope(scope)

    def _resource(self, resource: Resource) -> int:
        known = self._resource_ids.get(id(resource))
        if known is not None and known[0] is resource:
            return known[1]
        index = self._resources.get(resource)
        if index is None:
            index = self._add_resource(_attrs(resource.attributes), resource.schema_url or None)
            self._resources[resource] = index
        self._resource_ids[id(resource)] = (resource, index)
        return index

    def _scope(self, scope: InstrumentationScope | None) -> int:
        known = self._scope_ids.get(id(scope))
        if known is not None and known[0] is scope:
            return known[1]
        index = self._scopes.get(scope)
        if index is None:
            if scope is None:
                index = self._add_scope("", None, None, None)
            else:
                attributes = _attrs(scope.attributes)
                index = self._add_scope(scope.name, scope.version, scope.schema_url, attributes)
            self._scopes[scope] = index
        self._scope_ids[id(scope)] = (scope, index)
        return index

    def __call__(self, span: ReadableSpan) -> tuple[Any, ...]:
        """The tuple ``glmtrace_native`` reads (its field order is documented in convert.rs)."""
        ctx = span.get_span_context()
        assert ctx is not None
        parent = span.parent
        status = span.status
        # The SDK's own fields: its properties copy them (a mapping proxy, tuples) per call,
        # a cost paid on the calling thread for every span. The equivalence test guards this.
        attributes, events, links = span_fields(span)
        return (
            self._resource(span.resource),
            self._scope(span.instrumentation_scope or None),
            ctx.trace_id,
            ctx.span_id,
            parent.span_id if parent else None,
            bool(parent and parent.is_remote),
            ctx.trace_state.to_header() if ctx.trace_state else "",
            span.name,
            span.kind.value,
            span.start_time,
            span.end_time,
            _attrs(attributes),
            span.dropped_attributes,
            [(e.name, e.timestamp, _attrs(e.attributes), e.dropped_attributes) for e in events]
            if events
            else (),
            span.dropped_events,
            [
                (
                    link.context.trace_id,
                    link.context.span_id,
                    link.context.is_remote,
                    _attrs(link.attributes),
                    link.dropped_attributes,
                )
                for link in links
            ]
            if links
            else (),
            span.dropped_links,
            status.status_code.value,
            status.description,
        )


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """``spans`` as the ExportTraceServiceRequest bytes the native path sends (for tests)."""
    assert _native is not None, "glmtrace_native is not built"
    resources: list[tuple[Any, str | None]] = []
    scopes: list[tuple[str, str | None, str | None, Any]] = []

    def add_resource(attributes: Any, schema_url: str | None) -> int:
        resources.append((attributes, schema_url))
        return len(resources) - 1

    def add_scope(name: str, version: str | None, schema_url: str | None, attrs: Any) -> int:
        scopes.append((name, version, schema_url, attrs))
        return len(scopes) - 1

    to_tuple = SpanTuples(add_resource, add_scope)
    tuples = [to_tuple(span) for span in spans]
    return bytes(_native.encode(tuples, resources, scopes))


class NativeSpanProcessor(SpanProcessor):
    """Hands each finished span to the native pipeline in one call; counts into ``stats()``."""

    sink = _SINK

    def __init__(self, options: Options, max_queue: int, max_request_bytes: int) -> None:
        assert _native is not None and options.endpoint is not None
        # Short, so a black-holed collector holds the export thread only briefly.
        request_timeout = max(1.0, min(10.0, options.shutdown_timeout * 2))
        # tonic would drop a URL's user:password@ silently; as a header it reaches the collector.
        endpoint, headers = without_credentials(options.endpoint, options.headers)
        grpc = options.protocol == "grpc"  # the gRPC path ignores the URL's path, as OTel's
        self._arguments = (
            endpoint if grpc else otlp_traces_url(endpoint),
            list(headers.items()),
            request_timeout,
            max_queue,
            512,  # spans per batch, as the Python path's batch processor
            0.5,  # seconds a partial batch waits
            max_request_bytes,
            options.protocol,
        )
        # Within the runtime's own deadline, so what is left is counted here, once.
        self._shutdown_timeout = options.shutdown_timeout * 0.8
        self._start()
        # In a forked child: a fresh queue and thread; the parent's thread does not exist there,
        # and its queue (the parent's spans) is never touched again.
        after_fork_in_child(self._start)

    def _start(self) -> None:
        assert _native is not None
        pipeline = _native.Pipeline(*self._arguments)
        self._use(pipeline, SpanTuples(pipeline.resource, pipeline.scope))

    def _use(self, pipeline: Any, to_tuple: SpanTuples) -> None:
        self.pipeline = pipeline  # a new one after a fork: thin spans re-register with it
        self._to_tuple = to_tuple
        self._ended = 0
        STATS.add_source(self)  # stats() reads the counters, also after shutdown
        STATS.add(self.sink, "native")  # which path is active, for stats() and doctor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self.submit(self._to_tuple(span))
        except Exception as exc:
            report("native span export", exc)
            STATS.add(self.sink, "dropped")

    def indices(self, resource: Resource, scope: InstrumentationScope | None) -> tuple[int, int]:
        """Where ``resource`` and ``scope`` are registered with the current pipeline."""
        return self._to_tuple.indices(resource, scope)

    def submit(self, fields: tuple[Any, ...]) -> None:
        """Queue one span tuple (thin spans come here directly, with :meth:`indices`)."""
        self.pipeline.submit(fields)  # never raises: counts its own drops
        self._ended += 1
        if self._ended % SYNC_EVERY == 0:
            self.sync_stats()

    def sync_stats(self) -> None:
        """Adds what the native thread exported, dropped, truncated since the last call."""
        exported, dropped, truncated, panics = self.pipeline.take_counts()
        STATS.add(self.sink, "exported", exported)
        STATS.add(self.sink, "dropped", dropped)
        STATS.add(self.sink, "truncated", truncated)
        STATS.add(self.sink, "native_panics", panics)

    def pending(self) -> int:
        return int(self.pipeline.pending())

    def abandon(self) -> int:
        """After the runtime's deadline: spans still queued (the pipeline's own shutdown counts
        the batch in flight)."""
        return self.pending()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        ok = bool(self.pipeline.flush(timeout_millis / 1000))
        self.sync_stats()
        return ok

    def shutdown(self) -> None:
        self.pipeline.shutdown(self._shutdown_timeout)
        self.sync_stats()
