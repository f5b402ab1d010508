"""No OTLP request exceeds the receiver's 4 MiB limit; an oversized span is truncated, not lost."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import glmtrace
from glmtrace._internal.export.exporters import SizeBoundedExporter
from glmtrace._internal.stats import STATS

LIMIT = 4 * 1024 * 1024


class Recorder(SpanExporter):
    def __init__(self) -> None:
        self.requests: list[list[ReadableSpan]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.requests.append(list(spans))
        return SpanExportResult.SUCCESS


def finished_spans(count: int, value_size: int) -> list[ReadableSpan]:
    recorder = Recorder()
    glmtrace.init(
        traces="none", logs="none", max_attribute_length=value_size * 2, exporter=recorder
    )
    try:
        for i in range(count):
            with glmtrace.span("big", {"blob": "x" * value_size, "i": i}):
                pass
        glmtrace.force_flush(10)
    finally:
        glmtrace.shutdown()
    return [s for request in recorder.requests for s in request]


def test_batches_split_under_the_grpc_limit() -> None:
    """100 spans of 300 kB each go out in several requests, each under 4 MiB when encoded."""
    spans = finished_spans(100, 300_000)
    recorder = Recorder()
    SizeBoundedExporter("test", recorder).export(spans)
    assert len(recorder.requests) > 1
    assert sum(len(r) for r in recorder.requests) == 100
    for request in recorder.requests:
        assert encode_spans(request).ByteSize() < LIMIT


def test_single_oversized_span_is_truncated_and_counted() -> None:
    """A 6 MB span is sent truncated and marked, and the truncation is counted."""
    (span,) = finished_spans(1, 6_000_000)
    before = STATS.snapshot().get("test", {}).get("truncated", 0)
    recorder = Recorder()
    SizeBoundedExporter("test", recorder).export([span])
    (request,) = recorder.requests
    (sent,) = request
    assert sent.attributes is not None and sent.attributes["glmtrace.truncated"] is True
    assert encode_spans(request).ByteSize() < LIMIT
    assert STATS.snapshot()["test"]["truncated"] == before + 1
