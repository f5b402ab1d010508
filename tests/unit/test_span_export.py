"""One span that cannot be encoded or stored never costs the spans exported with it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, Status, StatusCode

from glmtrace._internal.config import Options
from glmtrace._internal.export.convert import readable_span
from glmtrace._internal.export.exporters import (
    CountingExporter,
    SizeBoundedExporter,
    StoreSpanExporter,
    otlp_exporter,
    span_to_row,
)
from glmtrace._internal.stats import STATS
from glmtrace._internal.store.database import Store


def _span(i: int, name: str | None = None, **fields: Any) -> ReadableSpan:
    return ReadableSpan(
        name=name if name is not None else f"span {i}",  # type: ignore[arg-type]
        context=SpanContext(0xAB, i + 1, is_remote=False),
        start_time=fields.pop("start_time", i + 1),
        end_time=i + 2,
        **fields,
    )


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver keeping the spans of every request it could decode."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value for a in span.attributes}
                    self.received.append(
                        {"name": span.name, "attributes": attributes, "resource": resource}
                    )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_otlp_batch_survives_unencodable_spans(
    collector: tuple[str, list[dict[str, Any]]],
) -> None:
    """Surrogates and a 5000-digit integer in two of 102 spans: all 102 reach the receiver."""
    url, received = collector
    options = Options(endpoint=url, protocol="http/protobuf")
    exporter = SizeBoundedExporter("otlp-test", otlp_exporter(options, timeout=5))
    bad_name = _span(
        100,
        name="open \udcff.txt",
        status=Status(StatusCode.ERROR, "no file '\udcff'"),
        events=[Event("exception", {"exception.message": "\udcff"}, 5)],
    )
    big = _span(101, attributes={"big": 10**5000, "wide": 2**64, "ok": 1})
    spans = [_span(i) for i in range(100)] + [bad_name, big]
    try:
        exporter.export(spans)
    finally:
        exporter.shutdown()
    names = [s["name"] for s in received]
    assert len(names) == 102
    assert "open \ufffd.txt" in names
    (sent,) = [s for s in received if s["name"] == "span 101"]
    assert sent["attributes"]["big"].string_value.startswith("1000")
    assert sent["attributes"]["wide"].string_value == str(2**64)
    assert sent["attributes"]["ok"].int_value == 1


def test_pushed_store_rows_with_wide_integers_keep_them(tmp_path: Path) -> None:
    """A stored integer past 64 bits goes to OTLP as text instead of being dropped."""
    row = span_to_row(_span(1, attributes={"ok": 1}))
    row["attributes"]["wide"] = 2**64
    request = encode_spans([readable_span(row)])
    (span,) = request.resource_spans[0].scope_spans[0].spans
    values = {a.key: a.value for a in span.attributes}
    assert values["wide"].string_value == str(2**64)


def _counts(sink: str) -> tuple[int, int]:
    counts = STATS.snapshot().get(sink, {})
    return counts.get("exported", 0), counts.get("dropped", 0)


def test_store_export_counts_only_what_was_stored(tmp_path: Path) -> None:
    """A span the store refuses is counted dropped; the ten stored with it count as exported."""
    store = Store(tmp_path / "s.db")
    exporter = CountingExporter("local-refused", StoreSpanExporter(store))
    before = _counts("local-refused")
    exporter.export([_span(i) for i in range(10)] + [_span(10, start_time=2**70)])
    after = _counts("local-refused")
    assert (after[0] - before[0], after[1] - before[1]) == (10, 1)
    assert len(store.all_spans()) == 10


def test_nameless_span_counted_exported_is_stored(tmp_path: Path) -> None:
    """``span(None)``'s span, counted exported, is really in the store."""
    store = Store(tmp_path / "s.db")
    exporter = CountingExporter("local-nameless", StoreSpanExporter(store))
    before = _counts("local-nameless")
    exporter.export([_span(1), ReadableSpan(name=None, context=SpanContext(1, 2, False))])  # type: ignore[arg-type]
    exported = _counts("local-nameless")[0] - before[0]
    assert exported == len(store.all_spans()) == 2


class _Refusing(SpanExporter):
    """Accepts every request except one holding a span named ``bad``, which it fails."""

    def __init__(self, fail_by_raising: bool) -> None:
        self.fail_by_raising = fail_by_raising
        self.delivered: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if any(s.name == "bad" for s in spans):
            if self.fail_by_raising:
                raise ConnectionError("request refused")
            return SpanExportResult.FAILURE
        self.delivered += [s.name for s in spans]
        return SpanExportResult.SUCCESS


@pytest.mark.parametrize("fail_by_raising", [False, True])
def test_a_refused_request_costs_only_its_own_spans(
    fail_by_raising: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches split into requests: one refused request is counted dropped, the rest exported."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")
    inner = _Refusing(fail_by_raising)
    sink = f"otlp-refused-{fail_by_raising}"
    exporter = CountingExporter(sink, SizeBoundedExporter(sink, inner, max_bytes=150))
    spans = [_span(0), _span(1), _span(2, name="bad"), _span(3)]
    before = _counts(sink)
    exporter.export(spans)
    after = _counts(sink)
    assert inner.delivered == ["span 0", "span 1", "span 3"]
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)


def test_oversized_sequence_attribute_is_truncated_under_the_limit() -> None:
    """A 10 MB tuple attribute is cut like a long string, so its request stays under 4 MiB."""
    sent: list[ReadableSpan] = []

    class Recorder(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            sent.extend(spans)
            return SpanExportResult.SUCCESS

    big = _span(1, attributes={"rows": tuple("x" * 100 for _ in range(100_000))})
    SizeBoundedExporter("otlp-seq", Recorder()).export([big])
    (span,) = sent
    assert span.attributes is not None and span.attributes["glmtrace.truncated"] is True
    assert encode_spans(sent).ByteSize() < 4 * 1024 * 1024


def test_nameless_span_reaches_otlp(collector: tuple[str, list[dict[str, Any]]]) -> None:
    """``span(None)``'s span goes out over OTLP (named ""), and its batch with it."""
    url, received = collector
    options = Options(endpoint=url, protocol="http/protobuf")
    exporter = SizeBoundedExporter("otlp-nameless", otlp_exporter(options, timeout=5))
    nameless = ReadableSpan(name=None, context=SpanContext(1, 2, False))  # type: ignore[arg-type]
    try:
        result = exporter.export([_span(1), nameless])
    finally:
        exporter.shutdown()
    assert sorted(s["name"] for s in received) == ["", "span 1"]
    assert result is SpanExportResult.SUCCESS


def test_undecodable_service_name_reaches_otlp(
    collector: tuple[str, list[dict[str, Any]]],
) -> None:
    """A service name with undecodable bytes (from the environment) arrives repaired, not lost."""
    url, received = collector
    options = Options(endpoint=url, protocol="http/protobuf")
    exporter = SizeBoundedExporter("otlp-service", otlp_exporter(options, timeout=5))
    resource = Resource({"service.name": "train-\udcff"})
    try:
        result = exporter.export([_span(i, resource=resource) for i in range(3)])
    finally:
        exporter.shutdown()
    services = [s["resource"]["service.name"].string_value for s in received]
    assert services == ["train-\ufffd"] * 3
    assert result is SpanExportResult.SUCCESS


def test_forked_child_inherits_no_export_in_flight() -> None:
    """A child forked while the parent exports counts none of the parent's spans as its own."""
    release, started = threading.Event(), threading.Event()

    class Slow(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            started.set()
            release.wait(10)
            return SpanExportResult.SUCCESS

    counter = CountingExporter("fork-test", Slow())
    exporting = threading.Thread(target=counter.export, args=([_span(i) for i in range(3)],))
    exporting.start()
    assert started.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: nothing of its own is in flight
        os._exit(counter.abandon())
    _, status = os.waitpid(pid, 0)
    release.set()
    exporting.join(10)
    assert os.waitstatus_to_exitcode(status) == 0
