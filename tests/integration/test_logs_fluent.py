"""Log records over Fluent forward, through the real Collector, into the real Elasticsearch."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal import remote

from .backends import Collector, Elasticsearch
from .jobs import run_traced

pytestmark = pytest.mark.integration


def run_job(tmp_path: Path, timeout: float = 120, **values: Any) -> dict[str, Any]:
    """Run JOB in a fresh interpreter; returns the JSON it prints last."""
    return run_traced(JOB.format(**values), tmp_path, timeout)


JOB = """
    import json, logging, sys, time
    import glmtrace

    glmtrace.init(service_name="fluent-it", traces="none", logs="fluent",
                  fluent_host={host!r}, fluent_port={port}, store="store/glmtrace.db")
    log = logging.getLogger("fluent.it")
    created = []

    class Keep(logging.Filter):
        def filter(self, record):
            created.append(int(record.created * 1e9))
            return True

    log.addFilter(Keep())
    expected = []
    loop_started = time.monotonic()
    with glmtrace.span("job") as job:
        for i in range({n}):
            with glmtrace.span("item"):
                log.info("item %d done", i, extra={{"run": {run!r}}})
                expected.append({{"span_id": glmtrace.current_span_id(),
                                  "message": f"item {{i}} done", "created_ns": created[-1]}})
        log.error("summary failed", extra={{"run": {run!r}}})
        expected.append({{"span_id": job.span_id, "message": "summary failed",
                          "created_ns": created[-1]}})
    log_s = time.monotonic() - loop_started
    started = time.monotonic()
    ok = glmtrace.shutdown({shutdown})
    print(json.dumps({{"trace_id": job.trace_id, "expected": expected, "flushed": ok,
                      "shutdown_s": time.monotonic() - started, "log_s": log_s,
                      "stats": glmtrace.stats()}}))
"""


def test_fluent_records_reach_elasticsearch_by_trace_id(
    collector: Collector, elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """Every line is found by trace.id, with its span.id, level, message and ns timestamp."""
    run = uuid.uuid4().hex
    out = run_job(
        tmp_path, host=collector.fluent_host, port=collector.fluent_port, n=40, run=run, shutdown=10
    )
    assert out["flushed"] and "dropped" not in out["stats"]["logs-fluent"]
    expected = out["expected"]
    elasticsearch.search(
        "logs-glmtrace-*", {"term": {"trace.id": out["trace_id"]}}, min_hits=len(expected)
    )
    docs = remote.es_logs(elasticsearch.url, out["trace_id"])
    assert len(docs) == len(expected)
    by_message = {d["message"]: d for d in docs}
    for line in expected:
        doc = by_message[line["message"]]
        assert doc["span.id"] == line["span_id"]
        assert doc["trace.id"] == out["trace_id"]
        assert doc["service.name"] == "fluent-it"
        assert doc["labels.run"] == run
        # EventTime: the record's own time, to the microsecond Python's clock gives.
        assert abs(doc["timestamp_ns"] - line["created_ns"]) < 1_000
    assert by_message["summary failed"]["log.level"] == "ERROR"
    assert {d["log.level"] for d in docs} == {"INFO", "ERROR"}


def test_fluent_peer_down_never_blocks_the_caller(tmp_path: Path) -> None:
    """With nothing listening, logging stays fast and shutdown keeps its deadline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_job(tmp_path, host="127.0.0.1", port=port, n=2000, run="down", shutdown=2)
    # 2,000 spans + log lines; generous, but a blocked caller would take the socket timeout
    # per record (2,000 s) or hang.
    assert out["log_s"] < 20
    assert out["shutdown_s"] < 2 + 0.5


def test_stats_count_each_shipped_record_once(
    collector: Collector, elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """glmtrace.stats() counts each record exported once (the sink counts; the runtime not)."""
    out = run_job(
        tmp_path,
        host=collector.fluent_host,
        port=collector.fluent_port,
        n=9,
        run="count",
        shutdown=10,
    )
    assert out["stats"]["logs-fluent"] == {"exported": 10}
