"""``glmtrace ui --jaeger URL --es URL``: the app over the real Jaeger and Elasticsearch.

Lives with the integration tests for their backend fixtures; the browser is tests/ui's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from glmtrace._internal.cli.main import main
from glmtrace._internal.config import ElasticsearchOptions
from glmtrace._internal.ui.remote_source import RemoteSource
from glmtrace._internal.ui.server import App
from tests.ui.conftest import Served, launch_chromium, open_page, shot, watched_page

from .backends import Elasticsearch, Jaeger, http, otlp_json_spans

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autoglm" / "pipeline.yaml"


@pytest.fixture(scope="module")
def run_id(
    tmp_path_factory: pytest.TempPathFactory, jaeger: Jaeger, elasticsearch: Elasticsearch
) -> str:
    """The example pipeline run with traces to Jaeger and logs to Elasticsearch."""
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp_grpc}",
        "GLMTRACE_ES_URL": elasticsearch.url,
        "GLMTRACE_STORE": str(tmp_path_factory.mktemp("ui-remote") / "unused.db"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "glmtrace",
            "run",
            str(EXAMPLE),
            "--input",
            "<p>Route <b>me</b></p>",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    found = re.search(r"trace_id: ([0-9a-f]{32})", done.stdout)
    assert found, done.stdout + done.stderr
    jaeger.trace(found.group(1), min_spans=4)
    elasticsearch.search("logs-glmtrace-*", {"term": {"trace.id": found.group(1)}}, min_hits=2)
    return found.group(1)


@pytest.fixture(scope="module")
def remote_served(jaeger: Jaeger, elasticsearch: Elasticsearch) -> Iterator[Served]:
    source = RemoteSource(jaeger.query_url, ElasticsearchOptions(url=elasticsearch.url))
    served = Served(App(source, jaeger.query_url))
    yield served
    served.close()


def get(served: Served, path: str) -> Any:
    with urllib.request.urlopen(served.url + path, timeout=30) as reply:
        return json.loads(reply.read())


def test_list_and_trace_come_from_jaeger_and_es(
    remote_served: Served, run_id: str, jaeger: Jaeger, elasticsearch: Elasticsearch
) -> None:
    """The run is listed; its waterfall has Jaeger's spans and every ES log line on its span."""
    listed = get(remote_served, "/api/traces")["traces"]
    assert run_id in [t["trace_id"] for t in listed]
    failed = get(remote_served, "/api/traces?status=error")["traces"]
    assert run_id not in [t["trace_id"] for t in failed]
    found = get(remote_served, f"/api/traces?trace={run_id}")["traces"]
    assert [t["trace_id"] for t in found] == [run_id] and found[0]["span_count"] >= 4
    page = get(remote_served, f"/api/trace/{run_id}")
    jaeger_ids = {s["span_id"] for s in jaeger.trace(run_id, min_spans=4)}
    assert {r[0] for r in page["rows"]} == jaeger_ids  # no GPU spans in this pipeline
    hits = elasticsearch.search("logs-glmtrace-*", {"term": {"trace.id": run_id}}, min_hits=2)
    messages = sorted(h["message"] for h in hits)
    assert sorted(log["msg"] for log in page["logs"]) == messages
    assert all(log["span"] in jaeger_ids for log in page["logs"])


def test_metrics_from_jaeger_match_numpy(
    remote_served: Served, run_id: str, jaeger: Jaeger
) -> None:
    """Stage P95 over Jaeger's spans equals numpy's; `glmtrace stats --jaeger` counts the same."""
    stages = {g["key"]: g for g in get(remote_served, "/api/metrics?window=1h")["stages"]}
    durations: dict[str, list[float]] = {}
    for span in _recent_spans(jaeger):
        if span["start_ns"] >= time.time_ns() - 3600 * 10**9:
            stage = span["attributes"].get("glmtrace.stage")
            if stage:
                durations.setdefault(stage, []).append((span["end_ns"] - span["start_ns"]) / 1e6)
    assert stages.keys() == durations.keys()
    cli = CliRunner().invoke(main, ["stats", "--json", "--jaeger", jaeger.query_url])
    assert cli.exit_code == 0, cli.output
    by_cli = {g["key"]: g for g in json.loads(cli.output)["stages"]}
    assert {k: g["count"] for k, g in by_cli.items()} == {k: len(v) for k, v in durations.items()}
    for key, values in durations.items():
        assert stages[key]["count"] == len(values)
        assert stages[key]["p95_ms"] == pytest.approx(np.percentile(values, 95))


def test_browser_on_jaeger(remote_served: Served, run_id: str) -> None:
    """The page opens the Jaeger trace with its ES log lines and an 'open in Jaeger' link."""
    with launch_chromium() as browser, watched_page(browser) as page:
        open_page(page, f"{remote_served.url}/trace/{run_id}")
        shot(page, "remote-trace")
        assert page.locator("#log-list li.log").count() >= 2
        assert run_id in (page.locator("#open-jaeger").get_attribute("href") or "")


def _recent_spans(jaeger: Jaeger) -> list[dict[str, Any]]:
    """Every span of the last two hours, read with the harness's own OTLP JSON decoding."""
    now = time.time()

    def stamp(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    spans: dict[str, dict[str, Any]] = {}
    for service in jaeger.services():
        query = urllib.parse.urlencode(
            {
                "query.service_name": service,
                "query.start_time_min": stamp(now - 7200),
                "query.start_time_max": stamp(now + 60),
                "query.num_traces": "1000",
            }
        )
        reply = http("GET", f"{jaeger.query_url}/api/v3/traces?{query}")
        for span in otlp_json_spans(reply.json()):
            spans[span["span_id"]] = span
    return list(spans.values())
