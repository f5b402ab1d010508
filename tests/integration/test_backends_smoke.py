"""Each real backend does what glmtrace relies on, checked through its own query API."""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from .backends import LOGS_DATA_STREAM, Collector, Elasticsearch, Jaeger, http, start_jaeger

pytestmark = pytest.mark.integration


def _export_spans(endpoint: str, service: str, protocol: str = "grpc") -> tuple[str, str, str]:
    """Send a parent and a child span through the OTel SDK's OTLP exporter; their ids."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode

    exporter: SpanExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPExporter,
        )

        exporter = HTTPExporter(endpoint=f"{endpoint}/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("glmtrace.tests")
    with tracer.start_as_current_span("stage preprocess", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("glmtrace.batch_size", 8)
        parent.set_attribute("glmtrace.ratio", 0.5)
        parent.set_attribute("glmtrace.tags", ["a", "b"])
        with tracer.start_as_current_span("chat chatglm3") as child:
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    ctx, child_ctx = parent.get_span_context(), child.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", f"{child_ctx.span_id:016x}"


def test_jaeger_returns_the_spans_sent_over_otlp_grpc(jaeger: Jaeger) -> None:
    """A parent/child pair sent over OTLP gRPC comes back from Jaeger's query API, decoded."""
    trace_id, parent_id, child_id = _export_spans(jaeger.otlp_grpc, "smoke-jaeger")
    spans = {s["name"]: s for s in jaeger.trace(trace_id, min_spans=2)}
    parent, child = spans["stage preprocess"], spans["chat chatglm3"]
    assert parent["span_id"] == parent_id and parent["parent_span_id"] is None
    assert child["span_id"] == child_id and child["parent_span_id"] == parent_id
    assert {parent["trace_id"], child["trace_id"]} == {trace_id}
    assert parent["service_name"] == "smoke-jaeger"
    assert parent["kind"] == "SERVER" and child["kind"] == "INTERNAL"
    assert parent["attributes"] == {
        "glmtrace.batch_size": 8,
        "glmtrace.ratio": 0.5,
        "glmtrace.tags": ["a", "b"],
    }
    assert child["status_code"] == "ERROR"
    assert child["events"] == [{"name": "retry", "attributes": {"attempt": 2}}]
    assert parent["start_ns"] <= child["start_ns"] <= child["end_ns"] <= parent["end_ns"]
    assert "smoke-jaeger" in jaeger.services()


def test_jaeger_on_compose_es_storage_keeps_traces_across_a_restart(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """Jaeger on compose's storage-elasticsearch.yaml writes to ES; a restart still finds it."""
    with start_jaeger(tmp_path / "first", elasticsearch) as first:
        trace_id, parent_id, _ = _export_spans(first.otlp_grpc, "smoke-jaeger-es")
        first.trace(trace_id, min_spans=2)
    with start_jaeger(tmp_path / "second", elasticsearch) as second:
        spans = {s["name"]: s for s in second.trace(trace_id, min_spans=2)}
    assert spans["chat chatglm3"]["parent_span_id"] == parent_id
    assert spans["stage preprocess"]["service_name"] == "smoke-jaeger-es"
    assert elasticsearch.count("jaeger-span-*") >= 2


def test_elasticsearch_takes_the_index_template_and_bulk_creates(
    elasticsearch: Elasticsearch,
) -> None:
    """The template installs; `_bulk` create into logs-glmtrace-default makes a data stream."""
    assert elasticsearch.version.startswith("9.")
    elasticsearch.put_index_template()
    trace_id = secrets.token_hex(16)
    doc = {
        "@timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        "message": "loaded 3 shards",
        "log.level": "INFO",
        "log.logger": "autoglm.loader",
        "service.name": "smoke-es",
        "trace.id": trace_id,
        "span.id": secrets.token_hex(8),
        "labels.session_id": "s-1",
        "process.pid": 1234,
        "host.hostname": "box",
    }
    reply = elasticsearch.bulk(LOGS_DATA_STREAM, [doc])
    assert reply["items"][0]["create"]["_index"].startswith(f".ds-{LOGS_DATA_STREAM}-")
    (hit,) = elasticsearch.search("logs-glmtrace-*", {"term": {"trace.id": trace_id}})
    assert hit["message"] == "loaded 3 shards"
    mapping = elasticsearch.ok(
        "GET", f"{LOGS_DATA_STREAM}/_mapping/field/trace.id,labels.session_id,log.level"
    )
    (fields,) = mapping.values()
    assert {
        name: next(iter(m["mapping"].values()))["type"] for name, m in fields["mappings"].items()
    } == {
        "trace.id": "keyword",
        "labels.session_id": "keyword",
        "log.level": "keyword",
    }


def test_collector_puts_a_fluent_record_into_es_with_a_top_level_trace_id(
    collector: Collector, elasticsearch: Elasticsearch
) -> None:
    """A Fluent forward record with ECS keys lands in ES with `trace.id` at the top level."""
    from fluent.sender import FluentSender

    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    sender = FluentSender(
        "glmtrace",
        host=collector.fluent_host,
        port=collector.fluent_port,
        nanosecond_precision=True,
    )
    try:
        record = {
            "message": "tokenized 8 prompts",
            "log.level": "WARNING",
            "log.logger": "autoglm.tokenize",
            "service.name": "smoke-fluent",
            "trace.id": trace_id,
            "span.id": span_id,
        }
        assert sender.emit("log", record), sender.last_error
    finally:
        sender.close()
    (doc,) = elasticsearch.search(LOGS_DATA_STREAM, {"term": {"trace.id": trace_id}})
    assert doc["trace"] == {"id": trace_id}
    assert doc["span"] == {"id": span_id}
    assert doc["message"] == "tokenized 8 prompts"
    assert doc["log"] == {"level": "WARNING", "logger": "autoglm.tokenize"}
    assert doc["service"] == {"name": "smoke-fluent"}
    assert doc["@timestamp"].startswith(datetime.now(timezone.utc).strftime("%Y-%m-%d"))


def test_collector_puts_an_otlp_log_into_es_in_ecs_shape(
    collector: Collector, elasticsearch: Elasticsearch
) -> None:
    """An OTLP/HTTP log record's trace id, severity and service become ECS fields in ES."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    payload = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "smoke-otlp-logs"}}
                    ]
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "autoglm"},
                        "logRecords": [
                            {
                                "timeUnixNano": str(time.time_ns()),
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "body": {"stringValue": "inference failed"},
                                "traceId": trace_id,
                                "spanId": span_id,
                                "attributes": [
                                    {"key": "error.type", "value": {"stringValue": "RuntimeError"}}
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    reply = http("POST", f"{collector.otlp_http}/v1/logs", json.dumps(payload))
    assert reply.status == 200, reply
    (doc,) = elasticsearch.search(LOGS_DATA_STREAM, {"term": {"trace.id": trace_id}})
    assert doc["trace"]["id"] == trace_id
    assert doc["span"]["id"] == span_id
    assert doc["message"] == "inference failed"
    assert doc["log"]["level"] == "ERROR"
    assert doc["service"]["name"] == "smoke-otlp-logs"
    assert doc["error"]["type"] == "RuntimeError"


def test_collector_forwards_otlp_http_traces_to_jaeger(
    collector: Collector, jaeger: Jaeger
) -> None:
    """Spans sent to the Collector over OTLP/HTTP reach Jaeger with their parent links intact."""
    trace_id, parent_id, _ = _export_spans(collector.otlp_http, "smoke-collector", protocol="http")
    spans = {s["name"]: s for s in jaeger.trace(trace_id, min_spans=2)}
    assert spans["chat chatglm3"]["parent_span_id"] == parent_id
    assert spans["stage preprocess"]["service_name"] == "smoke-collector"
