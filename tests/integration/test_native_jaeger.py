"""Spans sent by the native export path reach the real Jaeger complete."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal import native_export
from glmtrace._internal.remote.jaeger import jaeger_trace

from .backends import Jaeger
from .jobs import run_traced
from .test_traces_jaeger import COMPARED  # the fields both paths must deliver alike

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not native_export.available() or native_export.forced_off(),
        reason="native extension not built or forced off",
    ),
]

JOB = """
    import json
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import glmtrace
    from glmtrace._internal.export.exporters import span_to_row

    memory = InMemorySpanExporter()
    glmtrace.init(service_name={service!r}, endpoint={endpoint!r}, protocol={protocol!r},
                  logs="none", exporter=memory, store="store/glmtrace.db")
    tracer = trace.get_tracer("raw.otel", "2.0")
    with glmtrace.span("root", attributes={{"run": {run!r}, "n": 7, "ratio": 0.25, "ok": True,
                                            "tags": ["a", "b"], "ints": [1, 2]}}) as root:
        with tracer.start_as_current_span("linked", links=[trace.Link(
                trace.get_current_span().get_span_context(), {{"why": "fan-in"}})]) as s:
            s.add_event("checkpoint", {{"step": 3, "loss": 0.5}})
            s.set_status(trace.Status(trace.StatusCode.ERROR, "bad shard"))
        for i in range({many}):
            with glmtrace.span(f"leaf {{i}}", attributes={{"i": i}}):
                pass
    ok = glmtrace.shutdown(20)
    rows = [span_to_row(s) for s in memory.get_finished_spans()]
    print(json.dumps({{"trace_id": root.trace_id, "rows": rows, "flushed": ok,
                      "stats": glmtrace.stats()}}))
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_native_path_spans_arrive_complete(jaeger: Jaeger, tmp_path: Path, protocol: str) -> None:
    """Attributes of each type, events, links, status and 2,000 leaves, none dropped, over
    OTLP/HTTP and OTLP/gRPC (Jaeger's 4317)."""
    service = "native-it"
    endpoint = jaeger.otlp_http if protocol == "http/protobuf" else f"http://{jaeger.otlp_grpc}"
    job = JOB.format(
        service=service, endpoint=endpoint, protocol=protocol, run=uuid.uuid4().hex, many=2000
    )
    out: dict[str, Any] = run_traced(
        job,
        tmp_path,
        timeout=180,
    )
    otlp = out["stats"]["otlp"]
    assert otlp.get("native") == 1, otlp
    assert out["flushed"] and otlp.get("dropped", 0) == 0, otlp
    assert otlp["exported"] == len(out["rows"]) == 2002
    jaeger.trace(out["trace_id"], min_spans=len(out["rows"]))
    # Jaeger may answer before the last batch (the root's) is stored: wait for every span id,
    # or Jaeger annotates the orphans it returned (@jaeger@warnings) and they differ.
    wanted, deadline = {row["span_id"] for row in out["rows"]}, time.monotonic() + 60
    while True:
        got = {r["span_id"]: r for r in jaeger_trace(jaeger.query_url, out["trace_id"])}
        if set(got) >= wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(got) == wanted
    for row in out["rows"]:
        # Jaeger may add query-time notes ("@jaeger@warnings" from its clock-skew adjuster)
        # to what it returns; they are not part of what was sent.
        sent = {k: v for k, v in got[row["span_id"]]["attributes"].items() if "@jaeger@" not in k}
        assert {**{k: got[row["span_id"]][k] for k in COMPARED}, "attributes": sent} == {
            k: row[k] for k in COMPARED
        }
    (linked,) = (r for r in out["rows"] if r["name"] == "linked")
    assert got[linked["span_id"]]["links"] == linked["links"]
