"""Spans OTLP cannot encode as they are reach the real Jaeger repaired, with their batch."""

from __future__ import annotations

import random
import time

import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, Status, StatusCode

from glmtrace._internal.config import Options
from glmtrace._internal.export.exporters import CountingExporter, SizeBoundedExporter, otlp_exporter
from glmtrace._internal.remote.jaeger import jaeger_trace
from glmtrace._internal.stats import STATS

from .backends import Jaeger

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_bad_spans_do_not_lose_their_batch(jaeger: Jaeger, protocol: str) -> None:
    """100 good spans, one with lone surrogates and one with huge integers: 102 in Jaeger."""
    trace_id = random.getrandbits(128)
    now = time.time_ns()

    def span(i: int, name: str, **fields: object) -> ReadableSpan:
        context = SpanContext(trace_id, i + 1, is_remote=False)
        return ReadableSpan(
            name=name, context=context, start_time=now + i, end_time=now + i + 1, **fields
        )  # type: ignore[arg-type]

    spans = [span(i, f"good {i}") for i in range(100)]
    spans.append(
        span(
            100,
            "open \udcff.txt",
            status=Status(StatusCode.ERROR, "no such file '\udcff.txt'"),
            events=[Event("exception", {"exception.message": "\udcff"}, now)],
        )
    )
    spans.append(span(101, "huge", attributes={"big": 10**5000, "wide": -(2**70)}))
    endpoint = f"http://{jaeger.otlp_grpc}" if protocol == "grpc" else jaeger.otlp_http
    sink = f"otlp-repair-{protocol}"
    inner = otlp_exporter(Options(endpoint=endpoint, protocol=protocol), timeout=10)  # type: ignore[arg-type]
    exporter = CountingExporter(sink, SizeBoundedExporter(sink, inner))
    try:
        exporter.export(spans)
    finally:
        exporter.shutdown()
    assert STATS.snapshot()[sink] == {"exported": 102}
    jaeger.trace(trace_id, min_spans=102)
    rows = {r["name"]: r for r in jaeger_trace(jaeger.query_url, f"{trace_id:032x}")}
    assert len(rows) == 102
    bad = rows["open \ufffd.txt"]
    assert bad["status_message"] == "no such file '\ufffd.txt'"
    assert bad["events"][0]["attributes"]["exception.message"] == "\ufffd"
    assert rows["huge"]["attributes"]["wide"] == str(-(2**70))
    assert rows["huge"]["attributes"]["big"].startswith("1000")
