"""Log records over Fluent forward, through the real Collector, into the real Elasticsearch."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.remote.es_query import es_logs

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
    with glmtrace.span("job") as job:
        for i in range({n}):
            with glmtrace.span("item"):
                log.info("item %d done", i, extra={{"run": {run!r}}})
                expected.append({{"span_id": glmtrace.current_span_id(),
                                  "message": f"item {{i}} done", "created_ns": created[-1]}})
        log.error("summary failed", extra={{"run": {run!r}}})
        expected.append({{"span_id": job.span_id, "message": "summary failed",
                          "created_ns": created[-1]}})
    logged = glmtrace.stats().get("logs-fluent", {{}})  # what was delivered when logging ended
    ok = glmtrace.shutdown({shutdown})
    print(json.dumps({{"trace_id": job.trace_id, "expected": expected, "flushed": ok,
                      "logged": logged, "stats": glmtrace.stats()}}))
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
    docs = es_logs(elasticsearch.url, out["trace_id"])
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


@pytest.fixture(params=["refused", "black-holed"])
def dead_peer(request: pytest.FixtureRequest, refused_port: int) -> Iterator[int]:
    """A Fluent port that refuses connections, or that accepts them (kernel backlog) and never
    reads a byte nor acks; held for the whole test, so no other process takes it."""
    if request.param == "refused":
        yield refused_port
        return
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        yield server.getsockname()[1]


def test_fluent_peer_down_never_blocks_the_caller(tmp_path: Path, dead_peer: int) -> None:
    """With a dead peer the program logs all its lines without waiting for any delivery, its
    shutdown returns, and every record is counted dropped.

    The bound is the job's own timeout (120 s): a caller that waited on the network would
    spend the sink's 5 s attempt on each of 2,001 records, a shutdown without a deadline
    would wait for acks that never come.
    """
    out = run_job(tmp_path, host="127.0.0.1", port=dead_peer, n=2000, run="down", shutdown=2)
    assert "exported" not in out["logged"]  # logging finished with nothing delivered
    assert not out["flushed"], out["stats"]
    assert out["stats"].get("logs-fluent") == {"dropped": 2001}, out["stats"]


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
