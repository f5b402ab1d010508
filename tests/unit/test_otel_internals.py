"""The SDK privates glmtrace reads (otel_internals.py) still mean what glmtrace assumes.

Each test builds the real SDK object and checks the accessor against what the object's public
behaviour implies; an SDK release that renames or reshapes a private fails here, by name.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

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


def test_span_and_baggage_keys_are_where_the_api_puts_them() -> None:
    from opentelemetry import baggage, trace

    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    ctx = baggage.set_baggage("k", "v", trace.set_span_in_context(span))
    assert ctx.get(otel_internals.SPAN_KEY) is span
    assert dict(ctx.get(otel_internals.BAGGAGE_KEY) or {}) == {"k": "v"}


def test_context_var_holds_the_current_context() -> None:
    from opentelemetry import context

    var = otel_internals.context_var()
    assert var is not None  # the default runtime context
    token = context.attach(context.set_value("probe", 1))
    try:
        assert var.get() is context.get_current()
        assert var.get().get("probe") == 1
    finally:
        context.detach(token)


def test_span_processors_are_the_ones_added_in_order() -> None:
    provider = TracerProvider()
    first, second = _Blocked(), _Blocked()
    processors = [BatchSpanProcessor(first), BatchSpanProcessor(second)]
    for processor in processors:
        provider.add_span_processor(processor)
    try:
        multi = provider.get_tracer("t").span_processor  # type: ignore[attr-defined]
        assert list(otel_internals.span_processors(multi)) == processors
    finally:
        first.release.set()
        second.release.set()
        provider.shutdown()


def test_the_thin_path_reads_the_processors_by_this_name() -> None:
    """thin.py reads the attribute literally on the hot path: a new name here must go there."""
    from glmtrace._internal import thin

    source = Path(thin.__file__).read_text()
    assert source.count(f"em.processor.{otel_internals.PROCESSORS} is not em._seen") == 2


def test_span_limits_are_the_providers() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    limits = SpanLimits(max_events=7)
    tracer = TracerProvider(span_limits=limits).get_tracer("t")
    assert otel_internals.span_limits(tracer) is limits  # type: ignore[arg-type]


def test_attribute_dict_is_the_bounded_attributes_content() -> None:
    tracer = TracerProvider().get_tracer("t")
    span = tracer.start_span("s", attributes={"k": 1})
    span.end()
    attributes, _, _ = otel_internals.span_fields(span)  # type: ignore[arg-type]
    inner = otel_internals.attribute_dict(attributes)
    assert type(inner) is dict and inner == {"k": 1}
