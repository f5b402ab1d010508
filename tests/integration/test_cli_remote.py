"""The CLI on the real backends: the example pipeline's trace and logs from Jaeger and ES."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.remote.push import push as push_store
from glmtrace._internal.store.database import Store

from .backends import Elasticsearch, Jaeger

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "autoglm" / "pipeline.yaml"


@pytest.fixture(scope="module")
def remote_run(
    tmp_path_factory: pytest.TempPathFactory, jaeger: Jaeger, elasticsearch: Elasticsearch
) -> tuple[dict[str, str], str]:
    """The example pipeline run by `glmtrace run` with traces to Jaeger and logs to ES."""
    env = {
        **os.environ,
        "COLUMNS": "200",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp_grpc}",
        "GLMTRACE_ES_URL": elasticsearch.url,
        "GLMTRACE_JAEGER_URL": jaeger.query_url,
        "GLMTRACE_STORE": str(tmp_path_factory.mktemp("cli-remote") / "unused.db"),
    }
    done = cli(env, "run", str(EXAMPLE), "--input", "<p>Route <b>me</b></p>", "--session", "r-1")
    trace_id = re.search(r"trace_id: ([0-9a-f]{32})", done.stdout)
    assert trace_id, done.stdout
    jaeger.trace(trace_id.group(1), min_spans=4)  # pipeline, two stages, the chat span
    elasticsearch.search("logs-glmtrace-*", {"term": {"trace.id": trace_id.group(1)}}, min_hits=3)
    return env, trace_id.group(1)


def cli(
    env: dict[str, str], *args: str, python_file: bool = False
) -> subprocess.CompletedProcess[str]:
    """``glmtrace ARGS`` (or ``python ARGS`` with ``python_file``), which must succeed."""
    done = subprocess.run(
        [sys.executable, *args] if python_file else [sys.executable, "-m", "glmtrace", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_show_from_jaeger_and_es_prints_tree_with_logs(
    remote_run: tuple[dict[str, str], str],
) -> None:
    """show --jaeger --es renders both stages and each stage's log lines."""
    env, trace_id = remote_run
    out = cli(env, "show", trace_id).stdout  # URLs from GLMTRACE_JAEGER_URL / GLMTRACE_ES_URL
    for text in (
        "pipeline autoglm",
        "stage preprocess",
        "stage infer",
        "chat chatglm3",
        "cleaned text",
        "routing request",
        "generated 4 tokens",
    ):
        assert text in out


def test_show_json_from_backends_links_logs_to_spans(
    remote_run: tuple[dict[str, str], str],
) -> None:
    """--json from Jaeger+ES has the local store's shape, and each log names its stage span."""
    env, trace_id = remote_run
    doc = json.loads(cli(env, "show", trace_id, "--json").stdout)
    spans = {s["name"]: s for s in doc["spans"]}
    root = spans["pipeline autoglm"]
    assert spans["stage preprocess"]["parent_span_id"] == root["span_id"]
    assert spans["stage infer"]["parent_span_id"] == root["span_id"]
    assert spans["stage infer"]["attributes"]["session.id"] == "r-1"
    by_message = {entry["message"].split(":")[0]: entry for entry in doc["logs"]}
    assert by_message["routing request"]["span.id"] == spans["stage infer"]["span_id"]
    assert all(entry["trace.id"] == trace_id for entry in doc["logs"])


def test_ls_from_jaeger(remote_run: tuple[dict[str, str], str]) -> None:
    """ls --jaeger --service lists the trace with its root span."""
    env, trace_id = remote_run
    out = cli(env, "ls", "--service", "autoglm").stdout
    assert trace_id in out and "pipeline autoglm" in out


def test_doctor_reports_backend_versions(remote_run: tuple[dict[str, str], str]) -> None:
    """doctor says Jaeger and Elasticsearch answer, with Elasticsearch's version."""
    env, _ = remote_run
    out = cli(env, "doctor").stdout
    wanted = ("jaeger", "elasticsearch", "otlp")
    rows = [line.split("│") for line in out.splitlines() if line.count("│") >= 4]
    health = {cells[1].strip(): "│".join(cells) for cells in rows if cells[1].strip() in wanted}
    assert set(health) == {"jaeger", "elasticsearch", "otlp"}
    assert all(" ok " in line for line in health.values()), health
    assert re.search(r"9\.\d+\.\d+", health["elasticsearch"])


BATCH_JOB = ROOT / "tests" / "unit" / "batch_job.py"


@pytest.fixture(scope="module")
def batch_in_jaeger(
    tmp_path_factory: pytest.TempPathFactory, jaeger: Jaeger
) -> tuple[dict[str, str], str, dict[str, Any]]:
    """batch_job.py run twice, into Jaeger and into a local store.

    Returns the CLI environment for Jaeger, the batch trace id there, and the local store's
    ``show --json`` document of its own batch trace (for comparing shapes).
    """
    folder = tmp_path_factory.mktemp("batch-remote")
    env = {
        **os.environ,
        "COLUMNS": "200",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp_grpc}",
        "GLMTRACE_LOGS": "none",
        "GLMTRACE_JAEGER_URL": jaeger.query_url,
        "GLMTRACE_STORE": str(folder / "unused.db"),
    }
    remote_id = cli(env, str(BATCH_JOB), python_file=True).stdout.strip()
    jaeger.trace(remote_id, min_spans=3)
    local_env = {**os.environ, "COLUMNS": "200", "GLMTRACE_STORE": str(folder / "local.db")}
    local_id = cli(local_env, str(BATCH_JOB), python_file=True).stdout.strip()
    local = json.loads(cli(local_env, "show", local_id, "--json").stdout)
    return env, remote_id, local


def test_show_json_from_jaeger_has_the_local_store_fields(
    batch_in_jaeger: tuple[dict[str, str], str, dict[str, Any]],
) -> None:
    """From Jaeger, show --json has the same fields as from the store: kind, status message,
    service, resource, exception events with their stack trace, and links named."""
    env, trace_id, local = batch_in_jaeger
    doc = json.loads(cli(env, "show", trace_id, "--json").stdout)
    spans = {s["name"]: s for s in doc["spans"]}
    local_spans = {s["name"]: s for s in local["spans"]}
    assert spans.keys() == local_spans.keys() == {"serve", "batch decode", "fail"}
    for name, span in spans.items():
        assert span.keys() == local_spans[name].keys()
    fail = spans["fail"]
    assert fail["status_message"] == "ValueError: bad value"
    assert fail["kind"] == "INTERNAL" and fail["service_name"] == "batcher"
    assert fail["resource"]["service.name"] == "batcher"
    (event,) = fail["events"]
    assert "raise ValueError" in event["attributes"]["exception.stacktrace"]
    links = spans["batch decode"]["links"]
    assert [li["name"] for li in links] == ["chat chatglm3"] * 3
    assert {li["attributes"]["glmtrace.link.role"] for li in links} == {"request"}
    assert spans["serve"]["attributes"]["loss"] == "NaN"


def test_export_from_jaeger_draws_links(
    batch_in_jaeger: tuple[dict[str, str], str, dict[str, Any]], tmp_path: Path
) -> None:
    """export --jaeger brings the request traces along, one flow per link."""
    env, trace_id, _ = batch_in_jaeger
    target = tmp_path / "t.json"
    out = cli(env, "export", trace_id, "-o", str(target)).stdout
    assert "6 spans of 3 linked traces" in out  # each request trace: request, chat
    events = json.loads(target.read_text())["traceEvents"]
    assert sum(e["ph"] == "s" for e in events) == sum(e["ph"] == "f" for e in events) == 3


@contextmanager
def flaky(target: str, answers: list[int]) -> Iterator[str]:
    """A pass-through HTTP proxy to ``target`` whose first ``_bulk`` requests are answered
    with the statuses in ``answers`` instead (what a loaded cluster says); yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if "_bulk" in self.path and answers:
                status = answers.pop(0)
                self.reply(
                    status, {"X-Elastic-Product": "Elasticsearch"}, b'{"status":%d}' % status
                )
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            request = urllib.request.Request(
                target + self.path, body or None, headers, method=self.command
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    self.reply(answer.status, dict(answer.headers), answer.read())
            except urllib.error.HTTPError as error:
                with error:
                    self.reply(error.code, dict(error.headers), error.read())

        def reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Type", headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = relay

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_push_retries_a_cluster_answering_429_then_503(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    """push rides out a bulk request refused with 429 and then 503: every record arrives once."""
    trace_id = uuid.uuid4().hex
    now = time.time_ns()
    store = Store(tmp_path / "s.db")
    store.write_logs(
        [
            {
                "@timestamp": "2026-01-01T00:00:00.000000+00:00",
                "timestamp_ns": now + i,
                "log.id": f"{trace_id[:16]}-{i}",
                "message": f"record {i}",
                "log.level": "INFO",
                "log.logger": "push.retry",
                "trace.id": trace_id,
            }
            for i in range(5)
        ]
    )
    with flaky(elasticsearch.url, [429, 503]) as url:
        result = push_store(store, None, url)
    assert (result.logs, result.rejected_logs) == (5, 0)
    elasticsearch.search("logs-glmtrace-*", {"term": {"trace.id": trace_id}}, min_hits=5)
    assert elasticsearch.count("logs-glmtrace-*", {"term": {"trace.id": trace_id}}) == 5
