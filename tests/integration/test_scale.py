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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glmtrace._internal.stack import services
from glmtrace._internal.stack.procs import Service, http

from .backends import INDEX_TEMPLATE, es_rundir, failing_test, free_port
from .scale_runs import (
    DECISION_WAIT_S,
    KEEP_PERCENT,
    SLOW_MS,
    TIER1_CONFIG,
    TIER2_CONFIG,
    Run,
    Tier,
    judge,
    kept_spans,
    report,
    run_job,
    tier1_metrics,
    wait_for_logs,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


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
    # A counter appears in the Collector's metrics only once it has counted something.
    while after.get(sent, 0.0) - before.get(sent, 0.0) < 2 * per_process and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
        after = tier1_metrics(tier)
    elapsed = time.monotonic() - started
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if "spans" in k}
    print(
        f"\n[scale] burst: {2 * per_process} spans from 2 processes through tier 1 in "
        f"{elapsed:.1f}s ({2 * per_process / elapsed:.0f} spans/s, interpreter start included); "
        f"tier 1 counters: {delta}"
    )
    # "native": which export path carried them (plain-text gRPC takes the native one when built).
    counts = [{k: v for k, v in s["otlp"].items() if k != "native"} for s in stats]
    assert counts == [{"exported": per_process}] * 2
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
