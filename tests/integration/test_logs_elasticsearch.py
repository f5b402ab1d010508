"""Log records shipped straight to the real Elasticsearch, read back through its search API."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from glmtrace._internal.config import ElasticsearchOptions
from glmtrace._internal.remote.es_query import es_logs

from .backends import Elasticsearch
from .jobs import run_traced

pytestmark = pytest.mark.integration

PATTERN = "logs-glmtrace-*"


JOB = """
    import json, logging, sys, threading
    import glmtrace

    glmtrace.init(service_name="es-it", traces="none", logs="elasticsearch",
                  es_url=sys.argv[1] if len(sys.argv) > 1 else {url!r}, store="store/glmtrace.db")
    log = logging.getLogger("es.it")
    run = {run!r}
    expected = []

    def note(level, message, **kw):
        log.log(level, message, extra={{"run": run}}, **kw)
        expected.append({{"span_id": glmtrace.current_span_id(),
                         "level": logging.getLevelName(level), "message": message}})

    with glmtrace.span("job") as job:
        note(logging.INFO, "starting")
        with glmtrace.span("step"):
            for i in range(50):
                note(logging.DEBUG if i % 2 else logging.INFO, f"step line {{i}}")
            try:
                raise ValueError("bad row 7")
            except ValueError:
                note(logging.ERROR, "row failed", exc_info=True)
        worker = threading.Thread(target=lambda: note(logging.WARNING, "from a thread"))
        worker.start(); worker.join()
    log.warning("outside any span", extra={{"run": run}})
    ok = glmtrace.shutdown(20)
    print(json.dumps({{"trace_id": job.trace_id, "expected": expected, "flushed": ok,
                      "stats": glmtrace.stats()}}))
"""


def test_every_log_line_is_found_by_trace_id(elasticsearch: Elasticsearch, tmp_path: Path) -> None:
    """Each line of a traced run is in ES under its trace.id with its span.id, level, message."""
    run = uuid.uuid4().hex
    out = run_traced(JOB.format(url=elasticsearch.url, run=run), tmp_path)
    assert out["flushed"], out["stats"]
    # log_level INFO is the default: DEBUG lines are filtered before shipping.
    expected = [e for e in out["expected"] if e["level"] != "DEBUG"]
    hits = elasticsearch.search(
        PATTERN, {"term": {"trace.id": out["trace_id"]}}, min_hits=len(expected), size=500
    )
    assert len(hits) == len(expected)
    got = sorted((h["span.id"], h["log.level"], h["message"]) for h in hits)
    want = sorted((e["span_id"], e["level"], e["message"]) for e in expected)
    assert got == want
    error = next(h for h in hits if h["log.level"] == "ERROR")
    assert error["error.type"] == "ValueError" and "bad row 7" in error["error.message"]
    assert "Traceback" in error["error.stack_trace"]
    assert all(h["service.name"] == "es-it" and h["labels.run"] == run for h in hits)
    assert out["stats"]["logs-elasticsearch"].get("dropped", 0) == 0


def test_log_outside_a_span_has_no_trace_id(elasticsearch: Elasticsearch, tmp_path: Path) -> None:
    """The line logged after the span closed carries no trace.id / span.id at all."""
    run = uuid.uuid4().hex
    run_traced(JOB.format(url=elasticsearch.url, run=run), tmp_path)
    hits = elasticsearch.search(
        PATTERN,
        {"bool": {"filter": [{"term": {"labels.run": run}}, {"match": {"message": "outside"}}]}},
    )
    (outside,) = hits
    assert "trace.id" not in outside and "span.id" not in outside
    assert outside["message"] == "outside any span"


def test_template_and_data_stream_are_created_by_glmtrace(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """glmtrace PUTs its index template; the documents land in a data stream with its mapping."""
    run = uuid.uuid4().hex
    run_traced(JOB.format(url=elasticsearch.url, run=run), tmp_path)
    templates = elasticsearch.ok("GET", "_index_template/glmtrace-logs")["index_templates"]
    assert templates and "logs-glmtrace-*" in templates[0]["index_template"]["index_patterns"]
    mapping = elasticsearch.ok("GET", "logs-glmtrace-default/_mapping")
    (backing,) = [m for name, m in mapping.items() if name.startswith(".ds-logs-glmtrace-default")]
    props = backing["mappings"]["properties"]
    assert props["trace"]["properties"]["id"]["type"] == "keyword"
    assert props["@timestamp"]["type"] == "date_nanos"


def test_rerun_of_the_same_documents_creates_no_duplicates(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """Shipping a batch twice (as a replay would) stores each log.id once."""
    from glmtrace._internal.logs.es_sink import ElasticsearchSink

    run = uuid.uuid4().hex
    docs = [
        {
            "@timestamp": "2026-01-01T00:00:00.000001+00:00",
            "timestamp_ns": 1,
            "log.id": f"{run}-{i}",
            "message": f"dup {i}",
            "log.level": "INFO",
            "labels.run": run,
        }
        for i in range(20)
    ]
    sink = ElasticsearchSink(ElasticsearchOptions(url=elasticsearch.url), tmp_path / "spool", 10**8)
    sink(docs)
    sink(docs)
    sink.close()
    elasticsearch.search(PATTERN, {"term": {"labels.run": run}}, min_hits=20)
    assert elasticsearch.count(PATTERN, {"term": {"labels.run": run}}) == 20


def test_es_logs_reads_back_the_documents_as_shipped(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """es_logs returns the trace's lines in time order, in ecs_document's flat shape."""
    run = uuid.uuid4().hex
    out = run_traced(JOB.format(url=elasticsearch.url, run=run), tmp_path)
    expected = [e for e in out["expected"] if e["level"] != "DEBUG"]
    elasticsearch.search(PATTERN, {"term": {"trace.id": out["trace_id"]}}, min_hits=len(expected))
    docs = es_logs(elasticsearch.url, out["trace_id"])
    assert [d["message"] for d in docs] == [e["message"] for e in expected]
    first = docs[0]
    assert first["trace.id"] == out["trace_id"] and first["log.level"] == "INFO"
    assert isinstance(first["timestamp_ns"], int) and first["log.id"]
    assert [d["timestamp_ns"] for d in docs] == sorted(d["timestamp_ns"] for d in docs)
    # Options (auth/TLS settings) are accepted as well as a bare URL.
    assert len(es_logs(ElasticsearchOptions(url=elasticsearch.url), out["trace_id"])) == len(docs)
