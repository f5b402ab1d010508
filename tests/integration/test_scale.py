"""The scale path of docs/scaling.md, run on loopback with the real binaries.

Tier 1: a Collector (exporters/collector/tier1.yaml) whose load-balancing exporter routes spans by
trace id (static resolver) to two tier-2 Collectors (tier2.yaml: tail sampling keeps every error
trace, every slow trace and a fixed share of the rest), which export to Jaeger on a two-node
Elasticsearch cluster (one replica). Logs go over Fluent forward to tier 1 and from there to the
same cluster. The traced job (scale_job.py) is one coordinator and three rank processes with two
threads each: every trace has spans from four processes.

Runs on one tier, in this order: undisturbed; one tier-2 Collector stopped and restarted mid-run;
a burst from two processes; one Elasticsearch node stopped mid-run (it stays down). Each prints
what it measured (``-s`` shows it); the figures in docs/scaling.md come from here. No assertion
is about time: rates are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.stack import services
from glmtrace._internal.stack.procs import Service, http

from .backends import EXPORTERS, INDEX_TEMPLATE, es_rundir, failing_test, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TRACES = 240  # per run: 240 x 13 spans = 3120 spans, 2880 log records
RANKS = 3
SPANS_PER_TRACE = 1 + RANKS * 2 * 2
SLOW_MS = 300
KEEP_PERCENT = 25
DECISION_WAIT_S = 2
JOB = Path(__file__).with_name("scale_job.py")
TIER1_CONFIG = EXPORTERS / "collector" / "tier1.yaml"
TIER2_CONFIG = EXPORTERS / "collector" / "tier2.yaml"


@dataclass
class Tier:
    es: dict[str, Service]
    es_urls: list[str]
    jaeger_url: str
    tier1_grpc: int
    fluent: int
    tier1_metrics: int
    tier2: dict[str, Service]
    tier2_env: dict[str, dict[str, str]]
    workdir: Path
    stopped: list[Service] = field(default_factory=list)

    def restart_tier2(self, name: str) -> None:
        env = self.tier2_env[name]
        port = int(env["GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC"].rsplit(":", 1)[1])
        with failing_test():
            self.tier2[name] = services.start_collector(
                self.workdir / f"{name}-restarted", env, (port,), TIER2_CONFIG, name
            )


def _cluster_template() -> bytes:
    """The shared log template with one replica, as docs/scaling.md says a cluster wants."""
    template = json.loads(INDEX_TEMPLATE.read_text(encoding="utf-8"))
    template["template"]["settings"]["number_of_replicas"] = 1
    return json.dumps(template).encode()


def _one_replica_for_jaeger(es_url: str) -> None:
    """Give Jaeger's indices a replica, through the index templates it installed at start-up.

    Jaeger 2.13 (module v1.76.0) installed its templates with 0 replicas whatever its
    ``indices.spans.replicas`` said, set with ``--set`` or in a merged config file (seen here), so
    the templates are raised before the first span creates the day's indices.
    """
    for name in ("jaeger-span", "jaeger-service"):
        (found,) = http("GET", f"{es_url}/_index_template/{name}").json()["index_templates"]
        template = {
            k: v
            for k, v in found["index_template"].items()
            if not k.startswith(("created", "modified"))
        }
        template["template"]["settings"]["index"]["number_of_replicas"] = "1"
        reply = http("PUT", f"{es_url}/_index_template/{name}", template)
        assert reply.status == 200, reply.body


@pytest.fixture(scope="module")
def tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    workdir = tmp_path_factory.mktemp("scale")
    started: list[Service] = []
    rundirs: list[Path] = []
    try:
        nodes = [
            services.EsNode(free_port(), free_port(), name=name, cluster="glmtrace-scale")
            for name in ("es1", "es2")
        ]
        seeds = tuple(f"127.0.0.1:{n.transport_port}" for n in nodes)
        # es1 is the only master-eligible node: a two-node cluster cannot keep a master quorum
        # when a master-eligible node leaves, so the node stopped in the fault run holds data only.
        nodes[0] = services.EsNode(
            nodes[0].http_port, nodes[0].transport_port, "es1", "glmtrace-scale", seeds, ("es1",)
        )
        nodes[1] = services.EsNode(
            nodes[1].http_port,
            nodes[1].transport_port,
            "es2",
            "glmtrace-scale",
            seeds,
            roles=("data", "ingest"),
        )
        es: dict[str, Service] = {}
        version = ""
        for node in nodes:
            rundir = es_rundir(workdir / node.name)
            rundirs.append(rundir)
            with failing_test():
                es[node.name], version = services.start_elasticsearch(rundir, node)
            started.append(es[node.name])
        es_urls = [n.url for n in nodes]
        health = http("GET", f"{es_urls[0]}/_cluster/health?wait_for_nodes=2&timeout=60s").json()
        assert health["number_of_nodes"] == 2, health
        reply = http("PUT", f"{es_urls[0]}/_index_template/glmtrace-logs", _cluster_template())
        assert reply.status == 200, reply.body

        jaeger_ports = services.JaegerPorts(*(free_port() for _ in range(5)))
        storage = "extensions::jaeger_storage::backends::main::elasticsearch"
        with failing_test():
            jaeger = services.start_jaeger(
                workdir / "jaeger",
                jaeger_ports,
                es_urls[0],
                version,
                (f"--set={storage}::server_urls=[{','.join(es_urls)}]",),
            )
        started.append(jaeger)
        _one_replica_for_jaeger(es_urls[0])

        tier2: dict[str, Service] = {}
        tier2_env: dict[str, dict[str, str]] = {}
        for name in ("tier2-a", "tier2-b"):
            port = free_port()
            tier2_env[name] = {
                "GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC": f"127.0.0.1:{port}",
                "GLMTRACE_COLLECTOR_JAEGER_OTLP": f"127.0.0.1:{jaeger_ports.otlp_grpc}",
                "GLMTRACE_COLLECTOR_METRICS_PORT": str(free_port()),
                "GLMTRACE_TIER2_NAME": name,
                "GLMTRACE_TIER2_DECISION_WAIT": f"{DECISION_WAIT_S}s",
                "GLMTRACE_TIER2_SLOW_MS": str(SLOW_MS),
                "GLMTRACE_TIER2_KEEP_PERCENT": str(KEEP_PERCENT),
            }
            with failing_test():
                tier2[name] = services.start_collector(
                    workdir, tier2_env[name], (port,), TIER2_CONFIG, name
                )
            started.append(tier2[name])

        grpc, fluent, metrics = free_port(), free_port(), free_port()
        env = {
            "GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC": f"127.0.0.1:{grpc}",
            "GLMTRACE_COLLECTOR_LISTEN_FLUENT": f"127.0.0.1:{fluent}",
            "GLMTRACE_COLLECTOR_METRICS_PORT": str(metrics),
            "GLMTRACE_TIER2_A": tier2_env["tier2-a"]["GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC"],
            "GLMTRACE_TIER2_B": tier2_env["tier2-b"]["GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC"],
            "GLMTRACE_ES_NODE_1": es_urls[0],
            "GLMTRACE_ES_NODE_2": es_urls[1],
        }
        with failing_test():
            tier1 = services.start_collector(workdir, env, (grpc, fluent), TIER1_CONFIG, "tier1")
        started.append(tier1)
        handle = Tier(
            es=es,
            es_urls=es_urls,
            jaeger_url=f"http://127.0.0.1:{jaeger_ports.query_http}",
            tier1_grpc=grpc,
            fluent=fluent,
            tier1_metrics=metrics,
            tier2=tier2,
            tier2_env=tier2_env,
            workdir=workdir,
        )
        yield handle
        started += list(handle.tier2.values())
    finally:
        for service in reversed(started):
            service.stop()
        for rundir in rundirs:
            if rundir.parent != workdir:
                shutil.rmtree(rundir, ignore_errors=True)


# --- the job and what came out of it ------------------------------------------------------------


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


# --- the runs ------------------------------------------------------------------------------------


def test_tier_keeps_whole_traces_errors_and_a_share_and_loses_no_log(tier: Tier) -> None:
    run = run_job(tier)
    verdict = judge(run, kept_spans(tier, [run]))
    logs = wait_for_logs(tier, run)
    report("undisturbed", run, verdict, logs)
    print(f"[scale] tier 1 counters: {tier1_metrics(tier)}")

    assert not verdict.incomplete, verdict.incomplete[:5]
    assert not verdict.split, verdict.split[:5]  # every kept trace went through one replica
    assert not verdict.errors_missing and not verdict.slow_missing
    # probabilistic 25 % of ~200 traces: mean 50, sd ~6; these bounds are ~4.5 sd wide
    share = verdict.normal_kept / verdict.normal_total
    assert 0.10 <= share <= 0.42, share
    assert logs == (run.summary["logs"], run.summary["logs"])  # each record once, none lost
    tiers = {s["tier2"] for spans in kept_spans(tier, [run], settle=0).values() for s in spans}
    assert tiers == {"tier2-a", "tier2-b"}  # the load was spread


def test_a_tier2_collector_restarting_mid_run_loses_only_traces_in_flight(tier: Tier) -> None:
    def restart(run: Run) -> None:
        tier.tier2["tier2-b"].stop()
        time.sleep(3)
        run.resumed_at = time.time()
        tier.restart_tier2("tier2-b")

    run = run_job(tier, restart)
    verdict = judge(run, kept_spans(tier, [run]))
    logs = wait_for_logs(tier, run)
    report("tier2-b stopped for 3 s mid-run", run, verdict, logs)

    assert run.fault_at is not None and run.resumed_at is not None
    damaged = verdict.incomplete + verdict.errors_missing + verdict.slow_missing
    # Tier 1 queues and retries what it routes to the stopped replica; what can be lost is what
    # that replica held when it stopped: traces in flight at that moment (started in the last
    # decision_wait before the stop, or still sending spans when it stopped).
    window = (run.fault_at - DECISION_WAIT_S - 1, run.resumed_at + 1)
    outside = [r for r in damaged if not window[0] <= r["t"] <= window[1]]
    assert not outside, outside[:5]
    assert verdict.spans_lost <= 0.05 * verdict.spans_sent, verdict.spans_lost
    assert not verdict.split, verdict.split[:5]
    assert logs == (run.summary["logs"], run.summary["logs"])


BURST = """
import json, sys, glmtrace
glmtrace.init(service_name="scale-burst", logs="none", shutdown_timeout=60)
for t in range(int(sys.argv[1]) // 10):
    with glmtrace.span("burst", {"scale.t": t}):
        for n in range(9):
            with glmtrace.span("part", {"scale.n": n}):
                pass
glmtrace.shutdown(60)
print(json.dumps(glmtrace.stats()))
"""


def test_a_burst_through_tier1_is_taken_without_refusal(tier: Tier) -> None:
    """Two processes send 10,000 spans as fast as they can; tier 1 refuses and loses none."""
    per_process = 5000
    before = tier1_metrics(tier)
    env = {k: v for k, v in os.environ.items() if k != "GLMTRACE_STRICT"}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{tier.tier1_grpc}"
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BURST, str(per_process)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    stats = []
    for proc in procs:
        with proc:
            out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        stats.append(json.loads(out.strip().splitlines()[-1]))
    sent = "otelcol_exporter_sent_spans"
    deadline = time.monotonic() + 120
    after = tier1_metrics(tier)
    while after[sent] - before[sent] < 2 * per_process and time.monotonic() < deadline:
        time.sleep(0.2)
        after = tier1_metrics(tier)
    elapsed = time.monotonic() - started
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if "spans" in k}
    print(
        f"\n[scale] burst: {2 * per_process} spans from 2 processes through tier 1 in "
        f"{elapsed:.1f}s ({2 * per_process / elapsed:.0f} spans/s, interpreter start included); "
        f"tier 1 counters: {delta}"
    )
    assert [s["otlp"] for s in stats] == [{"exported": per_process}] * 2
    assert delta["otelcol_receiver_accepted_spans"] == 2 * per_process
    assert delta[sent] == 2 * per_process
    assert delta.get("otelcol_receiver_refused_spans", 0) == 0


def test_an_elasticsearch_node_stopping_mid_run_loses_no_log_and_queries_answer(
    tier: Tier,
) -> None:
    earlier = run_job(tier)
    earlier_found = kept_spans(tier, [earlier])

    def stop_node(run: Run) -> None:
        tier.es["es2"].stop()

    run = run_job(tier, stop_node)
    verdict = judge(run, kept_spans(tier, [run]))
    logs = wait_for_logs(tier, run, timeout=120)
    report("es2 stopped mid-run", run, verdict, logs)

    assert logs[1] == run.summary["logs"]  # no log record lost (a retried one may be twice)
    # queries answer from the surviving node: traces written before and during the fault
    again = kept_spans(tier, [earlier])
    assert {t: len(s) for t, s in again.items()} == {t: len(s) for t, s in earlier_found.items()}
    assert not verdict.errors_missing, verdict.errors_missing[:5]
    print(
        f"[scale] es2 down: Jaeger answered for {len(again)} earlier traces; spans lost "
        f"{verdict.spans_lost} of {verdict.spans_sent}"
    )
