"""The remote readers' pure logic: OTLP JSON to rows, rows back to SDK spans, times, summaries.

What Jaeger and Elasticsearch actually return is checked against the real programs in
tests/integration (test_traces_jaeger.py, test_logs_elasticsearch.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from glmtrace._internal.export.convert import readable_span, rows_from_otlp_json
from glmtrace._internal.export.exporters import span_to_row
from glmtrace._internal.remote.es_query import _log_doc, _log_order, timestamp_ns
from glmtrace._internal.remote.http import RemoteError
from glmtrace._internal.remote.jaeger import _summary as summary_of
from glmtrace._internal.remote.jaeger import jaeger_trace
from glmtrace._internal.remote.probe import probe
from glmtrace._internal.remote.push import push as push_store
from glmtrace._internal.store.database import Store

TRACE = "0af7651916cd43dd8448eb211c80319c"


def sdk_rows() -> list[dict[str, Any]]:
    """A parent/child pair made by the real SDK, as the local store keeps them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("n", 3)
        parent.set_attribute("tags", ["a", "b"])
        with tracer.start_as_current_span("child") as child:
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return [span_to_row(s) for s in exporter.get_finished_spans()]


def test_otlp_json_becomes_store_rows() -> None:
    """Hex ids, int enums, string-encoded ints, arrays and events decode to the store shape."""
    payload = {
        "result": {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                    },
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": TRACE,
                                    "spanId": "b7ad6b7169203331",
                                    "parentSpanId": "",
                                    "name": "stage x",
                                    "kind": 2,
                                    "startTimeUnixNano": "1700000000000000001",
                                    "endTimeUnixNano": "1700000000000000009",
                                    "status": {"code": 2, "message": "bad"},
                                    "attributes": [
                                        {"key": "n", "value": {"intValue": "8"}},
                                        {"key": "r", "value": {"doubleValue": 0.5}},
                                        {
                                            "key": "t",
                                            "value": {
                                                "arrayValue": {"values": [{"stringValue": "a"}]}
                                            },
                                        },
                                    ],
                                    "events": [
                                        {"name": "e", "timeUnixNano": "1700000000000000005"}
                                    ],
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    }
    (row,) = rows_from_otlp_json(payload)
    assert row == {
        "trace_id": TRACE,
        "span_id": "b7ad6b7169203331",
        "parent_span_id": None,
        "name": "stage x",
        "kind": "SERVER",
        "start_ns": 1700000000000000001,
        "end_ns": 1700000000000000009,
        "status": "ERROR",
        "status_message": "bad",
        "service_name": "svc",
        "attributes": {"n": 8, "r": 0.5, "t": ["a"]},
        "events": [{"name": "e", "timestamp_ns": 1700000000000000005, "attributes": {}}],
        "links": [],
        "resource": {"service.name": "svc"},
    }


def test_enum_names_and_base64_ids_are_accepted() -> None:
    """Protobuf-JSON style (enum names, base64 ids) decodes the same as Jaeger's style."""
    import base64

    span = {
        "traceId": base64.b64encode(bytes.fromhex(TRACE)).decode(),
        "spanId": base64.b64encode(bytes.fromhex("b7ad6b7169203331")).decode(),
        "kind": "SPAN_KIND_CLIENT",
        "status": {"code": "STATUS_CODE_OK"},
    }
    (row,) = rows_from_otlp_json({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    assert (row["trace_id"], row["span_id"]) == (TRACE, "b7ad6b7169203331")
    assert (row["kind"], row["status"]) == ("CLIENT", "OK")


def test_store_row_round_trips_through_readable_span() -> None:
    """A store row -> ReadableSpan -> store row is the identity (what push relies on)."""
    for row in sdk_rows():
        again = span_to_row(readable_span(json.loads(json.dumps(row))))
        assert again == row


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-01-01T00:00:00.000001+00:00", 1767225600000001000),
        ("2026-01-01T00:00:00.123456789Z", 1767225600123456789),
        ("2026-01-01T00:00:00Z", 1767225600000000000),
        ("2026-01-01T01:00:00.5+01:00", 1767225600500000000),
    ],
)
def test_timestamp_ns_parses_rfc3339(text: str, ns: int) -> None:
    """@timestamp strings with 0-9 fraction digits and any offset give exact nanoseconds."""
    assert timestamp_ns(text) == ns


def test_es_hit_becomes_a_flat_store_document() -> None:
    """Nested _source (Collector ECS mode) flattens to dotted keys; id and ns time restored."""
    hit = {
        "_id": "abc-7",
        "_source": {
            "@timestamp": "2026-01-01T00:00:00.000001Z",
            "message": "hi",
            "trace": {"id": TRACE},
            "log": {"level": "INFO"},
            "labels.run": "r",
        },
    }
    doc = _log_doc(hit)
    assert doc == {
        "@timestamp": "2026-01-01T00:00:00.000001Z",
        "message": "hi",
        "trace.id": TRACE,
        "log.level": "INFO",
        "labels.run": "r",
        "log.id": "abc-7",
        "timestamp_ns": 1767225600000001000,
    }


def test_es_hit_id_comes_from_event_id() -> None:
    """A document glmtrace shipped (through the Collector too) keeps its own id: event.id."""
    hit = {"_id": "es-made", "_source": {"@timestamp": "2026-01-01T00:00:00Z", "event.id": "p-3"}}
    doc = _log_doc(hit)
    assert doc["log.id"] == "p-3" and "event.id" not in doc


def test_logs_in_one_microsecond_keep_their_order() -> None:
    """Equal times fall back to the per-process counter in log.id (numeric, not text)."""
    docs = [{"timestamp_ns": 5, "log.id": f"p-{i}"} for i in (10, 9, 2)]
    assert [d["log.id"] for d in sorted(docs, key=_log_order)] == ["p-2", "p-9", "p-10"]


def test_summary_picks_root_and_counts_errors() -> None:
    """A trace summary: the parentless span is the root; errors and duration are counted."""
    rows = sdk_rows()
    summary = summary_of(rows[0]["trace_id"], rows)
    assert summary.root_name == "parent"
    assert summary.span_count == 2 and summary.error_count == 1
    assert summary.duration_ns == max(r["end_ns"] for r in rows) - min(r["start_ns"] for r in rows)


def test_jaeger_needs_a_full_trace_id() -> None:
    """A short prefix is a clear RemoteError (Jaeger cannot search by prefix)."""
    with pytest.raises(RemoteError, match="32-hex"):
        jaeger_trace("http://127.0.0.1:9", "0af76519")


def test_unreachable_jaeger_is_a_one_line_error(refused_port: int) -> None:
    """Nothing listening: RemoteError naming the cause, no traceback-worthy exception."""
    with pytest.raises(RemoteError, match="did not answer"):
        jaeger_trace(f"http://127.0.0.1:{refused_port}", TRACE)


def test_probe_never_raises(refused_port: int) -> None:
    """probe() reports down endpoints and odd kinds as (False, reason)."""
    port = refused_port
    for kind in ("elasticsearch", "jaeger", "fluent", "otlp", "nonsense"):
        ok, detail = probe(kind, f"http://127.0.0.1:{port}", protocol="http/protobuf")
        assert not ok and detail


def test_push_with_nothing_new_sends_nothing(tmp_path: Path) -> None:
    """Spans already marked pushed for a destination are skipped without any network call."""
    store = Store(tmp_path / "s.db")
    rows = sdk_rows()
    store.write_spans(rows)
    url = "http://127.0.0.1:9"
    store.mark_pushed(url, "span", [f"{r['trace_id']}{r['span_id']}" for r in rows])
    calls: list[tuple[int, int]] = []
    result = push_store(store, url, None, lambda done, total: calls.append((done, total)))
    assert (result.spans, result.skipped_spans) == (0, 2)
    assert calls == [(0, 0)]
    assert "0 spans" in str(result)
