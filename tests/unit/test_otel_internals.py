"""The SDK privates glmtrace reads (otel_internals.py) still mean what glmtrace assumes.

Each test builds the real SDK object and checks the accessor against what the object's public
behaviour implies; an SDK release that renames or reshapes a private fails here, by name.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link

from glmtrace._internal import otel_internals


def test_root_sampler_is_the_one_parent_based_was_given() -> None:
    root = TraceIdRatioBased(0.25)
    assert otel_internals.root_sampler(ParentBased(root)) is root


def test_static_decision_is_what_the_sampler_decides() -> None:
    assert otel_internals.static_decision(ALWAYS_OFF) is Decision.DROP
    assert otel_internals.static_decision(ALWAYS_ON) is Decision.RECORD_AND_SAMPLE


class _Blocked(SpanExporter):
    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(10)
        return SpanExportResult.SUCCESS


def test_queued_counts_the_spans_a_batch_processor_holds() -> None:
    exporter = _Blocked()
    processor = BatchSpanProcessor(exporter, max_export_batch_size=1, schedule_delay_millis=1)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        tracer.start_span("first").end()
        assert exporter.entered.wait(10)  # the worker holds "first" in its export
        for _ in range(3):
            tracer.start_span("queued").end()
        assert otel_internals.queued(processor) == 3
    finally:
        exporter.release.set()
        provider.shutdown()


def test_instrumentation_scope_is_the_tracers_name_and_version() -> None:
    tracer = TracerProvider().get_tracer("my.lib", "1.2.3")
    scope = otel_internals.instrumentation_scope(tracer)  # type: ignore[arg-type]
    assert (scope.name, scope.version) == ("my.lib", "1.2.3")


def test_span_fields_are_what_the_public_properties_show() -> None:
    tracer = TracerProvider().get_tracer("t")
    other = tracer.start_span("other")
    span = tracer.start_span("s", attributes={"k": 1}, links=[Link(other.get_span_context())])
    span.add_event("e", {"x": 2})
    span.end()
    attributes, events, links = otel_internals.span_fields(span)  # type: ignore[arg-type]
    assert dict(attributes or {}) == dict(span.attributes or {}) == {"k": 1}
    assert list(events) == list(span.events)
    assert [e.name for e in events] == ["e"]
    assert list(links) == list(span.links)
    assert links[0].context == other.get_span_context()
