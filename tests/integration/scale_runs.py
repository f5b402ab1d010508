"""The scale test's runs and their verdicts (test_scale.py): the job, and what came out of it.

A run is scale_job.py against tier 1; its verdict compares the traces the job made with what
Jaeger kept, and its log records with what the logs data stream holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmtrace._internal.stack import services
from glmtrace._internal.stack.procs import Service, http

from .backends import EXPORTERS, failing_test

TRACES = 240  # per run: 240 x 13 spans = 3120 spans, 2880 log records
RANKS = 3
SLOW_MS = 300
KEEP_PERCENT = 25
DECISION_WAIT_S = 2
JOB = Path(__file__).with_name("scale_job.py")
TIER1_CONFIG = EXPORTERS / "collector" / "tier1.yaml"
TIER2_CONFIG = EXPORTERS / "collector" / "tier2.yaml"


@dataclass
class Tier:
    """The running tier: its processes and where each listens."""

    es: dict[str, Service]
    es_urls: list[str]
    jaeger_url: str
    tier1_grpc: int
    fluent: int
    tier1_metrics: int
    tier2: dict[str, Service]
    tier2_env: dict[str, dict[str, str]]
    workdir: Path

    def restart_tier2(self, name: str) -> None:
        env = self.tier2_env[name]
        port = int(env["GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC"].rsplit(":", 1)[1])
        with failing_test():
            self.tier2[name] = services.start_collector(
                self.workdir / f"{name}-restarted", env, (port,), TIER2_CONFIG, name
            )


@dataclass
class Run:
    run: str
    summary: dict[str, Any]
    fault_at: float | None = None
    resumed_at: float | None = None


def run_job(tier: Tier, fault: Any = None) -> Run:
    """The traced job against tier 1; ``fault(run)`` is called a third of the way through."""
    run = uuid.uuid4().hex[:12]
    env = {k: v for k, v in os.environ.items() if k != "GLMTRACE_STRICT"}  # as a user runs it
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{tier.tier1_grpc}",
        GLMTRACE_LOGS="fluent",
        GLMTRACE_FLUENT_HOST="127.0.0.1",
        GLMTRACE_FLUENT_PORT=str(tier.fluent),
        PYTHONPATH=os.pathsep.join(sys.path),
    )
    result = Run(run, {})
    third = threading.Event()
    errors: list[str] = []
    with subprocess.Popen(
        [sys.executable, str(JOB), "coordinator", run, str(TRACES), str(RANKS), str(SLOW_MS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:

        def follow() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith("progress ") and int(line.split()[1]) >= TRACES // 3:
                    third.set()
                elif not line.startswith("progress "):
                    errors.append(line)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        if fault is not None:
            assert third.wait(300), "".join(errors[-30:])
            result.fault_at = time.time()
            fault(result)
        assert proc.stdout is not None
        out = proc.stdout.read()  # the reader thread drains stderr meanwhile
        proc.wait(600)
        reader.join(10)
    assert proc.returncode == 0, "".join(errors[-50:])
    result.summary = json.loads(out.strip().splitlines()[-1])
    return result


def kept_spans(tier: Tier, runs: list[Run], settle: float = 60) -> dict[str, list[dict[str, Any]]]:
    """Per trace id, the spans Jaeger has, once two looks a few seconds apart agree."""
    time.sleep(DECISION_WAIT_S + 2)
    deadline = time.monotonic() + settle
    previous: dict[str, int] | None = None
    while True:
        found: dict[str, list[dict[str, Any]]] = {}
        for run in runs:
            for row in run.summary["traces"]:
                reply = http("GET", f"{tier.jaeger_url}/api/v3/traces/{row['trace_id']}")
                if reply.status == 200:
                    found[row["trace_id"]] = _spans(reply.json())
        counts = {tid: len(spans) for tid, spans in found.items()}
        if counts == previous or time.monotonic() > deadline:
            return found
        previous = counts
        time.sleep(3)


def _spans(payload: dict[str, Any]) -> list[dict[str, Any]]:
    spans = []
    for rs in payload["result"]["resourceSpans"]:
        attrs = {a["key"]: a["value"].get("stringValue") for a in rs["resource"]["attributes"]}
        for ss in rs["scopeSpans"]:
            for span in ss.get("spans", []):
                spans.append({"name": span["name"], "tier2": attrs.get("glmtrace.tier2")})
    return spans


def log_count(tier: Tier, run: str, url: str | None = None) -> tuple[int, int]:
    """(documents, distinct seq values) of ``run`` in the logs data stream."""
    url = url or tier.es_urls[0]
    http("POST", f"{url}/logs-glmtrace-*/_refresh?ignore_unavailable=true")
    reply = http(
        "POST",
        f"{url}/logs-glmtrace-*/_search?ignore_unavailable=true",
        {
            "size": 0,
            "track_total_hits": True,
            "query": {"term": {"labels.run": run}},
            "aggs": {
                "seqs": {"cardinality": {"field": "labels.seq", "precision_threshold": 40000}}
            },
        },
    )
    assert reply.status == 200, reply.body[:500]
    body = reply.json()
    return int(body["hits"]["total"]["value"]), int(body["aggregations"]["seqs"]["value"])


def wait_for_logs(tier: Tier, run: Run, timeout: float = 90) -> tuple[int, int]:
    want = run.summary["logs"]
    deadline = time.monotonic() + timeout
    counts = log_count(tier, run.run)
    while counts[1] < want and time.monotonic() < deadline:
        time.sleep(2)
        counts = log_count(tier, run.run)
    return counts


@dataclass
class Verdict:
    kept: dict[str, int]  # trace id -> spans found, for every trace Jaeger has
    incomplete: list[dict[str, Any]]
    split: list[dict[str, Any]]  # kept spans came through both tier-2 replicas
    errors_missing: list[dict[str, Any]]
    slow_missing: list[dict[str, Any]]
    normal_total: int
    normal_kept: int
    spans_sent: int
    spans_lost: int  # spans of error/slow traces and of kept traces that Jaeger lacks


def judge(run: Run, found: dict[str, list[dict[str, Any]]]) -> Verdict:
    rows = run.summary["traces"]
    kept = {r["trace_id"]: len(found[r["trace_id"]]) for r in rows if r["trace_id"] in found}
    incomplete = [r for r in rows if r["trace_id"] in kept and kept[r["trace_id"]] != r["spans"]]
    split = [r for r in rows if len({s["tier2"] for s in found.get(r["trace_id"], [])}) > 1]
    errors_missing = [r for r in rows if r["kind"] == "error" and r["trace_id"] not in kept]
    slow_missing = [r for r in rows if r["kind"] == "slow" and r["trace_id"] not in kept]
    normal = [r for r in rows if r["kind"] == "normal"]
    lost = sum(r["spans"] - kept[r["trace_id"]] for r in incomplete)
    lost += sum(r["spans"] for r in errors_missing + slow_missing)
    return Verdict(
        kept=kept,
        incomplete=incomplete,
        split=split,
        errors_missing=errors_missing,
        slow_missing=slow_missing,
        normal_total=len(normal),
        normal_kept=sum(1 for r in normal if r["trace_id"] in kept),
        spans_sent=sum(r["spans"] for r in rows),
        spans_lost=lost,
    )


def report(title: str, run: Run, verdict: Verdict, logs: tuple[int, int]) -> None:
    seconds = run.summary["seconds"]
    print(
        f"\n[scale] {title}: {len(run.summary['traces'])} traces, {verdict.spans_sent} spans in "
        f"{seconds:.1f}s ({verdict.spans_sent / seconds:.0f} spans/s into tier 1); kept "
        f"{len(verdict.kept)} traces ({verdict.normal_kept}/{verdict.normal_total} of the rest); "
        f"incomplete {len(verdict.incomplete)}, split {len(verdict.split)}, error traces missing "
        f"{len(verdict.errors_missing)}, spans lost {verdict.spans_lost}; logs "
        f"{logs[1]}/{run.summary['logs']} (documents {logs[0]})"
    )


def tier1_metrics(tier: Tier) -> dict[str, float]:
    """Tier 1's own span and log counters (Prometheus text, summed over label sets)."""
    text = http("GET", f"http://127.0.0.1:{tier.tier1_metrics}/metrics").body.decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("otelcol_") and ("_spans" in line or "_log_records" in line):
            name = line.split("{")[0].split()[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals
