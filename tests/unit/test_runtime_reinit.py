"""A second init() keeps OpenTelemetry's global tracer provider working."""

from __future__ import annotations

from pathlib import Path

from tests.integration.jobs import run_traced

PROGRAM = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import glmtrace

early = trace.get_tracer("plain")  # obtained before any init(), as module-level code does
first, second = InMemorySpanExporter(), InMemorySpanExporter()
glmtrace.init(service_name="one", traces="none", logs="none", exporter=first)
with early.start_as_current_span("plain-1"):
    pass
tracer = trace.get_tracer("plain")  # obtained between the two init() calls
glmtrace.init(service_name="two", traces="none", logs="none", exporter=second)
with early.start_as_current_span("plain-2") as plain:
    with glmtrace.span("inner") as inner:
        pass
with tracer.start_as_current_span("plain-3"):
    pass
glmtrace.force_flush()


def rows(exporter):
    return {
        s.name: {
            "span_id": format(s.context.span_id, "016x"),
            "parent": format(s.parent.span_id, "016x") if s.parent else None,
            "service": s.resource.attributes["service.name"],
        }
        for s in exporter.get_finished_spans()
    }


print(json.dumps({"first": rows(first), "second": rows(second), "inner": inner.span_id}))
"""


def test_plain_opentelemetry_spans_follow_a_second_init(tmp_path: Path) -> None:
    """After re-init, plain OTel spans (old and new tracers) reach the new exporters and
    glmtrace spans under them have parents that arrive."""
    result = run_traced(PROGRAM, tmp_path)
    assert set(result["first"]) == {"plain-1"}
    second = result["second"]
    assert set(second) == {"plain-2", "inner", "plain-3"}
    assert second["inner"]["parent"] == second["plain-2"]["span_id"]
    assert {row["service"] for row in second.values()} == {"two"}
