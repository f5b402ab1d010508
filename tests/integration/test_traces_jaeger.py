"""Traces exported over OTLP gRPC and OTLP HTTP to the real Jaeger, read back through its API."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.remote.es_query import es_logs
from glmtrace._internal.remote.jaeger import jaeger_recent, jaeger_trace
from glmtrace._internal.remote.probe import probe
from glmtrace._internal.remote.push import push as push_store

from .backends import Jaeger
from .jobs import run_traced

pytestmark = pytest.mark.integration

# A multi-thread, multi-process job. Its in-memory exporter sees the spans of this process
# exactly as the SDK made them; the worker processes report their span ids.
JOB = """
    import json, logging, sys
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    import numpy as np
    import torch
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import glmtrace
    from glmtrace._internal.export.exporters import span_to_row

    memory = InMemorySpanExporter()

    @glmtrace.stage("thread work")
    def thread_work(i):
        return glmtrace.current_span_id()

    @glmtrace.stage("process work")
    def process_work(i):
        with glmtrace.span("inner", attributes={{"i": i}}):
            pass
        return [glmtrace.current_trace_id(), glmtrace.current_span_id()]

    @glmtrace.stage("flaky", retries=3)
    def flaky():
        raise ValueError("bad batch 7")

    if __name__ == "__main__":
        glmtrace.init(service_name={service!r}, endpoint={endpoint!r}, protocol={protocol!r},
                      logs="none", exporter=memory, store="store/glmtrace.db")
        with glmtrace.span("pipeline", attributes={{"run": {run!r}, "batch_size": 8, "ratio": 0.5,
                                                    "tags": ["a", "b"]}}) as root:
            with glmtrace.span("tensors", attributes={{"embeddings": np.zeros((4, 16), np.float32),
                                                       "logits": torch.ones(2, 3)}}):
                pass
            try:
                flaky()
            except ValueError:
                pass
            with glmtrace.span("threads") as threads:
                with ThreadPoolExecutor(4) as pool:
                    thread_spans = list(pool.map(thread_work, range(4)))
            with glmtrace.span("processes") as fanout:
                with ProcessPoolExecutor(2) as pool:
                    workers = list(pool.map(glmtrace.propagate(process_work), range(4)))
        ok = glmtrace.shutdown(20)
        rows = [span_to_row(s) for s in memory.get_finished_spans()]
        print(json.dumps({{"trace_id": root.trace_id, "rows": rows, "flushed": ok,
                          "threads_span": threads.span_id, "thread_spans": thread_spans,
                          "fanout": fanout.span_id, "workers": workers,
                          "stats": glmtrace.stats()}}))
"""

COMPARED = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_ns",
    "end_ns",
    "status",
    "status_message",
    "service_name",
    "attributes",
    "events",
)


def run_job(tmp_path: Path, **values: Any) -> dict[str, Any]:
    """Run JOB in a fresh interpreter; returns the JSON it prints last."""
    return run_traced(JOB.format(**values), tmp_path, timeout=180)


@pytest.fixture(scope="module", params=["grpc", "http/protobuf"])
def traced_job(
    request: pytest.FixtureRequest, jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The job's output after running it once against Jaeger over one OTLP protocol."""
    protocol = request.param
    tmp_path = tmp_path_factory.mktemp("jaeger-job")
    endpoint = f"http://{jaeger.otlp_grpc}" if protocol == "grpc" else jaeger.otlp_http
    service = f"jaeger-it-{protocol.split('/')[0]}"
    out = run_job(
        tmp_path, service=service, endpoint=endpoint, protocol=protocol, run=uuid.uuid4().hex
    )
    assert out["flushed"], out["stats"]
    assert out["stats"]["otlp"].get("dropped", 0) == 0
    out["service"] = service
    return out


def spans_in_jaeger(jaeger: Jaeger, out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # this process's spans + per worker call: its stage span and an inner span
    expected = len(out["rows"]) + 2 * len(out["workers"])
    jaeger.trace(out["trace_id"], min_spans=expected)  # waits until all are stored
    rows = jaeger_trace(jaeger.query_url, out["trace_id"])
    assert len(rows) == expected
    return {r["span_id"]: r for r in rows}


def test_every_span_arrives_as_the_sdk_made_it(jaeger: Jaeger, traced_job: dict[str, Any]) -> None:
    """Ids, parents, names, times, status, service, attributes and events all round-trip."""
    by_id = spans_in_jaeger(jaeger, traced_job)
    for row in traced_job["rows"]:
        got = by_id[row["span_id"]]
        assert {k: got[k] for k in COMPARED} == {k: row[k] for k in COMPARED}, row["name"]
        assert got["resource"]["service.name"] == traced_job["service"]


def test_error_status_and_exception_event(jaeger: Jaeger, traced_job: dict[str, Any]) -> None:
    """The failing stage is ERROR with an exception event naming the type and message."""
    by_id = spans_in_jaeger(jaeger, traced_job)
    (flaky,) = [s for s in by_id.values() if s["name"] == "stage flaky"]
    assert flaky["status"] == "ERROR" and "bad batch 7" in flaky["status_message"]
    (event,) = [e for e in flaky["events"] if e["name"] == "exception"]
    assert event["attributes"]["exception.type"] == "ValueError"
    assert "bad batch 7" in event["attributes"]["exception.message"]
    assert "Traceback" in event["attributes"]["exception.stacktrace"]
    assert flaky["attributes"]["retries"] == 3


def test_tensor_summaries_and_typed_attributes(jaeger: Jaeger, traced_job: dict[str, Any]) -> None:
    """numpy/torch values arrive as shape/dtype/device summaries; ints, floats, lists typed."""
    by_id = spans_in_jaeger(jaeger, traced_job)
    (root,) = [s for s in by_id.values() if s["name"] == "pipeline"]
    assert root["parent_span_id"] is None
    assert root["attributes"]["batch_size"] == 8 and root["attributes"]["ratio"] == 0.5
    assert root["attributes"]["tags"] == ["a", "b"]
    (tensors,) = [s for s in by_id.values() if s["name"] == "tensors"]
    text = json.dumps(tensors["attributes"])
    for fragment in ("[4, 16]", "float32", "[2, 3]", "torch.float32", "cpu"):
        assert fragment in text, (fragment, tensors["attributes"])


def test_threads_and_processes_keep_exact_parents(
    jaeger: Jaeger, traced_job: dict[str, Any]
) -> None:
    """Thread-pool spans are children of 'threads'; process spans of 'processes', one trace."""
    by_id = spans_in_jaeger(jaeger, traced_job)
    for span_id in traced_job["thread_spans"]:
        assert by_id[span_id]["parent_span_id"] == traced_job["threads_span"]
        assert by_id[span_id]["name"] == "stage thread work"
    for trace_id, span_id in traced_job["workers"]:
        assert trace_id == traced_job["trace_id"]
        worker = by_id[span_id]
        assert worker["name"] == "stage process work"
        assert worker["parent_span_id"] == traced_job["fanout"]
        assert worker["service_name"] == traced_job["service"]
        (inner,) = [s for s in by_id.values() if s["parent_span_id"] == span_id]
        assert inner["name"] == "inner"
    assert len({s["trace_id"] for s in by_id.values()}) == 1


def test_recent_traces_of_a_service(jaeger: Jaeger, traced_job: dict[str, Any]) -> None:
    """jaeger_recent lists the trace with its root, span count and error count."""
    spans_in_jaeger(jaeger, traced_job)
    summaries = jaeger_recent(jaeger.query_url, traced_job["service"], limit=5)
    (mine,) = [s for s in summaries if s.trace_id == traced_job["trace_id"]]
    assert mine.root_name == "pipeline"
    assert mine.span_count == len(traced_job["rows"]) + 2 * len(traced_job["workers"])
    assert mine.error_count == 1


def test_probe_reports_jaeger_and_otlp(jaeger: Jaeger) -> None:
    """doctor's probe: Jaeger's query API and both OTLP receivers answer; a closed port not."""
    assert probe("jaeger", jaeger.query_url)[0]
    assert probe("otlp", f"http://{jaeger.otlp_grpc}", protocol="grpc")[0]
    assert probe("otlp", jaeger.otlp_http, protocol="http/protobuf")[0]
    ok, detail = probe("jaeger", "http://127.0.0.1:9")
    assert not ok and detail


LOCAL_JOB = """
    import json, logging
    import glmtrace

    glmtrace.init(service_name="push-it", store="store/glmtrace.db")
    log = logging.getLogger("push.it")
    with glmtrace.span("offline run", attributes={"n": 3}) as root:
        for i in range(3):
            with glmtrace.span("step"):
                log.warning("step %d", i)
    glmtrace.shutdown(10)
    print(json.dumps({"trace_id": root.trace_id}))
"""


def test_push_uploads_a_local_store_once(
    jaeger: Jaeger, elasticsearch: Any, tmp_path: Path
) -> None:
    """push sends the store's spans to Jaeger and logs to ES; a second push sends nothing."""
    from glmtrace._internal.store.database import Store

    script = tmp_path / "local.py"
    script.write_text(textwrap.dedent(LOCAL_JOB), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    trace_id = json.loads(done.stdout.strip().splitlines()[-1])["trace_id"]
    store = Store(tmp_path / "store" / "glmtrace.db")
    local_spans, local_logs = store.spans(trace_id), store.logs(trace_id)
    assert len(local_spans) == 4 and len(local_logs) == 3

    seen: list[tuple[int, int]] = []
    otlp = f"http://{jaeger.otlp_grpc}"
    first = push_store(store, otlp, elasticsearch.url, lambda d, t: seen.append((d, t)))
    assert (first.spans, first.logs) == (4, 3)
    assert seen[-1] == (7, 7)

    jaeger.trace(trace_id, min_spans=4)
    got = {r["span_id"]: r for r in jaeger_trace(jaeger.query_url, trace_id)}
    for row in local_spans:
        assert {k: got[row["span_id"]][k] for k in COMPARED} == {k: row[k] for k in COMPARED}
    elasticsearch.search("logs-glmtrace-*", {"term": {"trace.id": trace_id}}, min_hits=3)
    shipped = es_logs(elasticsearch.url, trace_id)
    assert [d["log.id"] for d in shipped] == [d["log.id"] for d in local_logs]
    assert [d["message"] for d in shipped] == ["step 0", "step 1", "step 2"]

    again = push_store(store, otlp, elasticsearch.url)
    assert (again.spans, again.logs, again.skipped_spans, again.skipped_logs) == (0, 0, 4, 3)
    # Even with the pushed table forgotten, Elasticsearch keeps one copy per log.id.
    fresh = tmp_path / "copy.db"
    fresh_store = Store(fresh)
    fresh_store.write_logs(local_logs)
    assert push_store(fresh_store, None, elasticsearch.url).logs == 3
    assert elasticsearch.count("logs-glmtrace-*", {"term": {"trace.id": trace_id}}) == 3
    assert len(jaeger_trace(jaeger.query_url, trace_id)) == 4


def test_probe_reports_elasticsearch_version(elasticsearch: Any) -> None:
    """doctor's probe names the Elasticsearch version the node reports."""
    ok, detail = probe("elasticsearch", elasticsearch.url)
    assert ok and detail == f"Elasticsearch {elasticsearch.version}"
