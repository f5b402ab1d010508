"""Stage and model RED metrics as OpenTelemetry histograms: the numbers ``glmtrace stats`` has."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from glmtrace._internal import red_metrics
from glmtrace._internal.config import resolve
from glmtrace._internal.export.exporters import span_to_row
from glmtrace._internal.ui import metrics


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_histograms_hold_what_stats_computes() -> None:
    """Counts, error counts and total time per stage and model equal the store computation."""
    options, _ = resolve({"endpoint": "http://127.0.0.1:4317"})
    reader = InMemoryMetricReader()
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    close = red_metrics.start(provider, options, Resource.create({}), reader)
    tracer = provider.get_tracer("test")
    t0 = 1_000_000_000
    for i in range(10):
        stage = "infer" if i % 2 else "preprocess"
        span = tracer.start_span(
            f"stage {stage}",
            attributes={
                "glmtrace.stage": stage,
                **({"gen_ai.request.model": "glm"} if i % 2 else {}),
            },
            start_time=t0 + i * 10**8,
        )
        if i == 3:
            span.add_event("exception", {"exception.type": "ValueError"})
            span.set_status(Status(StatusCode.ERROR, "bad"))
        span.end(end_time=t0 + i * 10**8 + (i + 1) * 10**6)
    tracer.start_span("plain").end()  # neither a stage nor a model call: not counted

    rows = [span_to_row(s) for s in spans.get_finished_spans()]
    win = metrics.Window(t0, t0 + 10**9, "test")
    expected = metrics.compute(
        [
            (
                r["start_ns"],
                r["end_ns"],
                r["status"],
                r["attributes"].get("glmtrace.stage"),
                r["attributes"].get("gen_ai.request.model"),
            )
            for r in rows
        ],
        win,
    )
    stage_points = _points(reader, red_metrics.STAGE_DURATION)
    for group in expected["stages"]:
        mine = [p for p in stage_points if p.attributes["glmtrace.stage"] == group["key"]]
        assert sum(p.count for p in mine) == group["count"]
        failed = [p for p in mine if "error.type" in p.attributes]
        assert sum(p.count for p in failed) == group["errors"]
    (ok, bad) = sorted(
        (p for p in stage_points if p.attributes["glmtrace.stage"] == "infer"),
        key=lambda p: "error.type" in p.attributes,
    )
    assert bad.attributes["error.type"] == "ValueError"
    assert ok.sum + bad.sum == pytest.approx(
        sum(
            (r["end_ns"] - r["start_ns"]) / 1e9
            for r in rows
            if r["attributes"].get("glmtrace.stage") == "infer"
        )
    )
    assert list(ok.explicit_bounds) == list(red_metrics.BUCKETS_S)
    (model,) = [
        p for p in _points(reader, red_metrics.MODEL_DURATION) if "error.type" not in p.attributes
    ]
    assert model.attributes["gen_ai.request.model"] == "glm"
    assert model.count + 1 == expected["models"][0]["count"]  # one call failed
    close(1.0)


def test_metrics_endpoint_turns_them_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_EXPORTER_OTLP_METRICS_ENDPOINT attaches the recorder; a traces endpoint alone does
    not (Jaeger takes no metrics); nobody listening is harmless."""
    import glmtrace
    from glmtrace._internal.runtime import DEFAULT

    def attached() -> bool:
        assert DEFAULT._provider is not None
        active = DEFAULT._provider._active_span_processor._span_processors
        return any(isinstance(p, red_metrics.RedMetricsProcessor) for p in active)

    glmtrace.init(service_name="red", endpoint="http://127.0.0.1:9", shutdown_timeout=1)
    try:
        assert not attached()
    finally:
        glmtrace.shutdown(1.0)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:9")
    glmtrace.init(service_name="red", traces="none", shutdown_timeout=1)
    try:
        assert attached()

        @glmtrace.stage("work")
        def work() -> int:
            return 1

        assert work() == 1
    finally:
        glmtrace.shutdown(1.0)


@pytest.mark.parametrize(
    ("endpoint", "kind"),
    [
        ("http://127.0.0.1:4317", "grpc"),
        ("http://127.0.0.1:4318", "http"),
        ("http://collector:4318/v1/metrics", "http"),
    ],
)
def test_exporter_protocol_follows_the_url(endpoint: str, kind: str) -> None:
    """Port 4318 or a /v1/metrics path means OTLP/HTTP, anything else gRPC."""
    options, _ = resolve({})
    exporter = red_metrics._exporter(endpoint, options)
    assert (".http." in type(exporter).__module__) == (kind == "http")
    exporter.shutdown()
