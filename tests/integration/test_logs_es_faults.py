"""The Elasticsearch sink against what only a real cluster does: its parser, its mapping, write
blocks and closed indices, its client's own tracing, and forks while threads log."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.config import ElasticsearchOptions
from glmtrace._internal.logs.es_sink import SINK, ElasticsearchSink
from glmtrace._internal.stats import STATS

from .backends import Elasticsearch
from .jobs import run_traced

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def fresh_stats() -> Iterator[None]:
    STATS.reset()
    yield
    STATS.reset()


def counts() -> dict[str, int]:
    return STATS.snapshot().get(SINK, {})


def doc(run: str, i: int, **extra: Any) -> dict[str, Any]:
    return {
        "@timestamp": "2026-01-01T00:00:00.000001+00:00",
        "timestamp_ns": 1_767_225_600_000_001_000 + i,
        "log.id": f"{run}-{i}",
        "message": f"line {i}",
        "log.level": "INFO",
        "labels.run": run,
        **extra,
    }


def new_sink(es: Elasticsearch, tmp_path: Path) -> tuple[ElasticsearchSink, str]:
    stream = f"logs-glmtrace-{uuid.uuid4().hex[:12]}"
    sink = ElasticsearchSink(
        ElasticsearchOptions(url=es.url, data_stream=stream),
        tmp_path / "spool",
        10**8,
        retry_seconds=0.5,
        max_backoff=0.5,
    )
    return sink, stream


def wait_until(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_one_bad_value_costs_no_other_record(elasticsearch: Elasticsearch, tmp_path: Path) -> None:
    """A lone surrogate and a 5000-digit integer: all 100 records are stored, those two
    repaired, directly and through the spool."""
    sink, stream = new_sink(elasticsearch, tmp_path)
    run = uuid.uuid4().hex
    batch = [doc(run, i) for i in range(200)]
    for start in (0, 100):
        batch[start + 3]["message"] = "from \udcff.txt"
        batch[start + 7]["labels.big"] = 10**5000
    sink(batch[:100])
    sink._down_until = time.monotonic() + 60  # known down: the next batch goes to the spool
    sink(batch[100:])
    assert counts()["spooled"] == 100
    sink.close(60)
    assert sink.spool.is_empty()
    assert elasticsearch.count(stream) == 200
    hit = elasticsearch.search(stream, {"term": {"_id": f"{run}-103"}})[0]
    assert hit["message"] == "from \ufffd.txt"
    assert "dropped" not in counts()


def test_write_block_keeps_records_until_lifted(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """index.blocks.write on the data stream: records wait in the spool, none is dropped."""
    sink, stream = new_sink(elasticsearch, tmp_path)
    run = uuid.uuid4().hex
    sink([doc(run, 0)])
    elasticsearch.ok("PUT", f"{stream}/_settings", {"index.blocks.write": True})
    sink._slow_until = 0.0  # creating the index was slow; send this batch directly anyway
    try:
        sink([doc(run, i) for i in range(1, 501)])
        assert counts().get("spooled") == 500 and "dropped" not in counts()
    finally:
        elasticsearch.ok("PUT", f"{stream}/_settings", {"index.blocks.write": False})
    sink.close(60)
    assert sink.spool.is_empty()
    assert elasticsearch.count(stream) == 501
    assert "dropped" not in counts()


def test_closed_write_index_keeps_records_until_reopened(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """The data stream's write index closed: records wait in the spool, then all arrive."""
    sink, stream = new_sink(elasticsearch, tmp_path)
    run = uuid.uuid4().hex
    sink([doc(run, 0)])
    # The concrete indices behind the name (a data stream's backing indices, or the index
    # itself where the cluster has no data streams module): the newest is written to.
    write_index = sorted(elasticsearch.ok("GET", f"{stream}/_settings"))[-1]
    elasticsearch.ok("POST", f"{write_index}/_close")
    sink._slow_until = 0.0  # creating the index was slow; send this batch directly anyway
    try:
        sink([doc(run, i) for i in range(1, 501)])
        assert counts().get("spooled") == 500 and "dropped" not in counts()
    finally:
        elasticsearch.ok("POST", f"{write_index}/_open?wait_for_active_shards=1")
    sink.close(60)
    assert sink.spool.is_empty()
    assert elasticsearch.count(stream) == 501


def test_user_extra_that_remaps_a_core_field_loses_no_record(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """A first ``session_id=5`` maps labels.session_id as long; glmtrace's string session ids
    that follow are kept (the value moved into a text label), not dropped."""
    sink, stream = new_sink(elasticsearch, tmp_path)
    run = uuid.uuid4().hex
    sink([doc(run, 0, **{"labels.session_id": 5})])
    sink([doc(run, i, **{"labels.session_id": f"s-{run}"}) for i in range(1, 401)])
    sink.close(60)
    assert sink.spool.is_empty()
    assert elasticsearch.count(stream) == 401
    assert "dropped" not in counts()
    hit = elasticsearch.search(stream, {"term": {"_id": f"{run}-9"}})[0]
    assert f"s-{run}" in hit["labels.glmtrace_unmapped"]
    assert hit["message"] == "line 9"


CLIENT_SPANS = """
    import json, logging, sys
    from opentelemetry import trace
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from glmtrace._internal.config import ElasticsearchOptions
    from glmtrace._internal.logs.es_sink import SINK, ElasticsearchSink
    from glmtrace._internal.logs.shipper import BackgroundShipper

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    ThreadingInstrumentor().instrument()
    sink = ElasticsearchSink(ElasticsearchOptions(url={url!r}), __import__("pathlib").Path("s"),
                             10**8)
    shipper = BackgroundShipper(SINK, sink)
    tracer = trace.get_tracer("user")
    for n in range(2):
        with tracer.start_as_current_span(f"user-{{n}}"):
            shipper.submit({{"log.id": f"{run}-{{n}}", "message": "hello",
                            "@timestamp": "2026-01-01T00:00:00+00:00", "labels.run": {run!r}}})
            shipper.flush(30)
    ok = shipper.shutdown(30)
    print(json.dumps({{"ok": ok, "spans": [
        {{"name": s.name, "trace": s.context.trace_id,
          "parent": s.parent.span_id if s.parent else None}}
        for s in exporter.get_finished_spans()]}}))
"""


def test_client_spans_stay_out_of_user_traces(elasticsearch: Elasticsearch, tmp_path: Path) -> None:
    """The shipper's ``bulk``/``put_index_template`` calls make no span in the user's trace
    (threading instrumentation on), nor anywhere: glmtrace's traffic is not the user's."""
    run = uuid.uuid4().hex
    out = run_traced(CLIENT_SPANS.format(url=elasticsearch.url, run=run), tmp_path)
    assert out["ok"]
    assert sorted(s["name"] for s in out["spans"]) == ["user-0", "user-1"]
    assert elasticsearch.count("logs-glmtrace-default", {"term": {"labels.run": run}}) == 2


FORKS = """
    import json, logging, os, sys, threading, time
    import glmtrace

    glmtrace.init(service_name="fork-es", traces="none", logs="elasticsearch",
                  es_url={url!r}, store="store/glmtrace.db")
    log = logging.getLogger("fork.es")
    run = {run!r}
    stop = threading.Event()
    sent = [0] * 3

    def chatter(n):
        while not stop.is_set():
            log.info("parent thread %d line %d", n, sent[n], extra={{"run": run}})
            sent[n] += 1
            time.sleep(0.001)

    threads = [threading.Thread(target=chatter, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    children = []
    for c in range({forks}):
        pid = os.fork()
        if pid == 0:
            for i in range({per_child}):
                log.info("child %d line %d", c, i, extra={{"run": run}})
            code = 0 if glmtrace.shutdown(30) else 3
            os._exit(code)
        children.append(pid)
        time.sleep(0.02)
    codes = []
    deadline = time.monotonic() + 120
    for pid in children:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:  # a hung child: kill it and say so
                os.kill(pid, 9)
                codes.append("hung")
                break
            time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    ok = glmtrace.shutdown(60)
    print(json.dumps({{"codes": codes, "parent": sum(sent), "ok": ok,
                      "stats": glmtrace.stats()}}))
"""


def test_forks_while_threads_log_lose_nothing(elasticsearch: Elasticsearch, tmp_path: Path) -> None:
    """20 forks while 3 threads log to Elasticsearch: no child hangs, every line arrives."""
    run = uuid.uuid4().hex
    forks, per_child = 20, 50
    out = run_traced(
        FORKS.format(url=elasticsearch.url, run=run, forks=forks, per_child=per_child),
        tmp_path,
        timeout=300,
    )
    assert out["codes"] == [0] * forks, out
    assert out["ok"], out["stats"]
    want = out["parent"] + forks * per_child
    query = {"term": {"labels.run": run}}
    wait_until(lambda: elasticsearch.count("logs-glmtrace-*", query) >= want, timeout=120)
    assert elasticsearch.count("logs-glmtrace-*", query) == want
