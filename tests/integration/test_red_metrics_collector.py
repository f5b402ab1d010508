"""The real Collector serves glmtrace's RED histograms on its Prometheus endpoint."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from glmtrace._internal.cli.main import main

from .backends import Collector
from .jobs import run_traced

pytestmark = pytest.mark.integration

# Stage name -> (calls, failures): what the job does, and what both the store and the
# Collector must count.
PLAN = {"load": (3, 0), "infer": (4, 1), "post": (2, 2)}

JOB = """
    import json
    import glmtrace

    glmtrace.init(service_name={service!r}, traces="local", store="store/glmtrace.db")
    plan = {plan!r}
    for name, (calls, failures) in plan.items():
        @glmtrace.stage(name)
        def step(fail):
            if fail:
                raise ValueError(name)
        for i in range(calls):
            try:
                step(i < failures)
            except ValueError:
                pass
    print(json.dumps({{"flushed": glmtrace.shutdown(20)}}))
"""

# One sample line of the text exposition: name, labels, value.
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
SCRAPE_DEADLINE_S = 60


def stage_counts(exposition: str, service: str) -> tuple[Counter[str], Counter[str]]:
    """Per-stage call and failure counts in the stage histogram's ``_count`` series."""
    calls: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for line in exposition.splitlines():
        match = SAMPLE.match(line)
        if not match or match["name"] != "glmtrace_stage_duration_seconds_count":
            continue
        labels = dict(LABEL.findall(match["labels"] or ""))
        if labels.get("job") != service:
            continue
        count = int(float(match["value"]))
        calls[labels["glmtrace_stage"]] += count
        if "error_type" in labels:
            failures[labels["glmtrace_stage"]] += count
    return calls, failures


def scrape_until(collector: Collector, service: str, want: Counter[str]) -> str:
    """GET /metrics until the job's series hold ``want`` calls or the deadline passes."""
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    while True:
        with urllib.request.urlopen(f"{collector.prometheus}/metrics", timeout=10) as reply:
            text: str = reply.read().decode()
        if stage_counts(text, service)[0] == want or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def test_collector_serves_the_stage_counts_stats_computes(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = f"red-it-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"http://{collector.otlp_grpc}")
    assert run_traced(JOB.format(service=service, plan=PLAN), tmp_path)["flushed"]

    store = tmp_path / "store" / "glmtrace.db"
    result = CliRunner().invoke(main, ["stats", "--json", "--window", "all", "--store", str(store)])
    assert result.exit_code == 0, result.output
    stats = {g["key"]: (g["count"], g["errors"]) for g in json.loads(result.output)["stages"]}
    assert stats == PLAN

    want = Counter({name: calls for name, (calls, _) in PLAN.items()})
    exposition = scrape_until(collector, service, want)
    calls, failures = stage_counts(exposition, service)
    scraped = {name: (calls[name], failures[name]) for name in calls}
    assert scraped == stats, exposition[-3000:]
