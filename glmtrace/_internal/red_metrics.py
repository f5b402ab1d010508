"""Stage and model RED metrics (rate, errors, duration) as OpenTelemetry histograms over OTLP.

When ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` names an OTLP receiver that takes metrics (a
Collector; Jaeger takes none, which is why the traces endpoint alone does not turn this on),
every finished stage span and inference span is also recorded in a histogram exported
there, so the Collector (through its Prometheus exporter, say) serves what ``glmtrace
stats`` computes from a store: the call rate is the histogram count's rate, the error rate
the share of counts carrying ``error.type``, latency percentiles come from the buckets.

- ``glmtrace.stage.duration`` (s): attribute ``glmtrace.stage``, plus ``error.type`` on failure.
- ``gen_ai.client.operation.duration`` (s, the GenAI semantic-convention metric):
  ``gen_ai.request.model`` and ``gen_ai.operation.name``, plus ``error.type`` on failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from .config import Options, otlp_protocol
from .guard import internal_errors
from .keys import GEN_AI_OPERATION as OPERATION
from .keys import GEN_AI_REQUEST_MODEL as MODEL
from .keys import STAGE

STAGE_DURATION = "glmtrace.stage.duration"
MODEL_DURATION = "gen_ai.client.operation.duration"
ERROR_TYPE = "error.type"
# The GenAI conventions' advice for operation durations: 10 ms to 82 s, doubling.
BUCKETS_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
EXPORT_INTERVAL_MS = 15_000
METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"


class RedMetricsProcessor(SpanProcessor):
    """Records each ending stage / inference span in its histogram (on the ending thread)."""

    def __init__(self, meter: Meter) -> None:
        self._stages = meter.create_histogram(
            STAGE_DURATION, unit="s", description="Duration of glmtrace stages"
        )
        self._models = meter.create_histogram(
            MODEL_DURATION, unit="s", description="Duration of GenAI model calls"
        )

    @internal_errors("red metrics")  # never into the code that ended the span
    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        stage, model = attrs.get(STAGE), attrs.get(MODEL)
        if (stage is None and model is None) or span.end_time is None:
            return
        seconds = (span.end_time - (span.start_time or span.end_time)) / 1e9
        failed: dict[str, Any] = {}
        if span.status.status_code is StatusCode.ERROR:
            failed[ERROR_TYPE] = _error_type(span)
        if stage is not None:
            self._stages.record(seconds, {STAGE: str(stage), **failed})
        if model is not None:
            operation = str(attrs.get(OPERATION, "chat"))
            self._models.record(seconds, {MODEL: str(model), OPERATION: operation, **failed})


def _error_type(span: ReadableSpan) -> str:
    for event in span.events:
        if event.name == "exception" and event.attributes:
            return str(event.attributes.get("exception.type", "error"))
    return "error"


def _exporter(endpoint: str, options: Options) -> Any:
    headers = dict(options.headers) or None
    timeout = max(1.0, min(10.0, options.shutdown_timeout * 2))
    if otlp_protocol(endpoint.removesuffix("/v1/metrics")) == "grpc" and not endpoint.endswith(
        "/v1/metrics"
    ):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        insecure = endpoint.startswith("http://")
        return OTLPMetricExporter(
            endpoint=endpoint, insecure=insecure, headers=headers, timeout=int(timeout)
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )

    base = endpoint.rstrip("/").removesuffix("/v1/metrics")
    return HTTPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers, timeout=timeout)


def start(
    tracer_provider: TracerProvider,
    options: Options,
    resource: Resource,
    reader: MetricReader | None = None,
) -> Callable[[float], None] | None:
    """Record RED metrics of ``tracer_provider``'s spans; returns ``close(timeout_s)``.

    ``reader`` defaults to a periodic OTLP export to ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``
    (with the traces' headers); without it set, nothing is recorded and None is returned.
    """
    if reader is None:
        endpoint = os.environ.get(METRICS_ENDPOINT, "").strip()
        if not endpoint:
            return None
        reader = PeriodicExportingMetricReader(
            _exporter(endpoint, options), export_interval_millis=EXPORT_INTERVAL_MS
        )
    buckets = ExplicitBucketHistogramAggregation(BUCKETS_S)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=resource,
        shutdown_on_exit=False,  # glmtrace's own shutdown closes it, within its deadline
        views=[
            View(instrument_name=name, aggregation=buckets)
            for name in (STAGE_DURATION, MODEL_DURATION)
        ],
    )
    tracer_provider.add_span_processor(RedMetricsProcessor(provider.get_meter("glmtrace")))

    def close(timeout: float) -> None:
        provider.shutdown(timeout_millis=max(timeout, 0.1) * 1000)

    return close
