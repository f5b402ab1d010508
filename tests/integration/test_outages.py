"""Outages against the real programs: Elasticsearch stopped mid-run, an OTLP endpoint black-holed.

The Elasticsearch test runs its own node (not the session one) because it stops and restarts
it: same port, same data directory, so the documents indexed before the outage are still
there when it comes back and exactly-once can be counted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .backends import ES_USER, Elasticsearch, Process, http, spawn, start_elasticsearch, wait_until

pytestmark = pytest.mark.integration

PATTERN = "logs-glmtrace-*"
RECORDS = 100_000
OUTAGE_S = 30.0

# Logs RECORDS lines at a steady pace (so the outage falls in the middle), writing how many
# it has logged to ./progress as it goes, then waits until the sink reports every spooled
# record replayed, and exits.
ES_JOB = """
    import json, logging, os, sys, time
    import glmtrace

    glmtrace.init(service_name="outage-it", traces="none", logs="elasticsearch",
                  es_url={url!r}, store="store/glmtrace.db")
    log = logging.getLogger("outage.it")
    run, total, per_s = {run!r}, {records}, {per_s}
    started = time.monotonic()
    timeline = []  # (seconds, records queued in memory, counters): shown when the test fails

    def sample():
        from glmtrace._internal.runtime import DEFAULT
        while True:
            queued = sum(s.pending for s in DEFAULT._shippers)
            stats = glmtrace.stats().get("logs-elasticsearch", {{}})
            timeline.append((round(time.monotonic() - started, 1), queued, stats))
            time.sleep(1)

    import threading
    threading.Thread(target=sample, name="glmtrace-test-sampler", daemon=True).start()
    with glmtrace.span("long job"):
        for i in range(total):
            log.info("record %d", i, extra={{"run": run, "seq": i}})
            if i % 500 == 499:  # pace: the user code would be doing real work here
                with open("progress.tmp", "w") as f:
                    f.write(str(i + 1))
                os.replace("progress.tmp", "progress")
                time.sleep(max(0.0, started + (i + 1) / per_s - time.monotonic()))
    logged_s = time.monotonic() - started

    def replayed_all():
        s = glmtrace.stats().get("logs-elasticsearch", {{}})
        return s.get("replayed", 0) >= s.get("spooled", 0)

    glmtrace.force_flush(30)  # everything is now either in Elasticsearch or in the spool
    deadline = time.monotonic() + {drain_s}
    while not replayed_all() and time.monotonic() < deadline:
        time.sleep(0.5)
    ok = glmtrace.shutdown(10)
    print(json.dumps({{"logged_s": logged_s, "flushed": ok,
                      "stats": glmtrace.stats(), "timeline": timeline}}))
"""


def _job(tmp_path: Path, code: str, **values: Any) -> subprocess.Popen[str]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(code.format(**values)), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "GLMTRACE_STRICT": "1"},
    )


def _finish(job: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = job.communicate(timeout=timeout)
    assert job.returncode == 0, f"job failed:\n{out}\n{err}"
    if err:
        print(err[-5000:])
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


class RestartableNode:
    """Stops and restarts the node of a started Elasticsearch on its port and data dir."""

    def __init__(self, es: Elasticsearch) -> None:
        self.es = es
        proc = es.process
        self.argv = list(proc.popen.args)  # type: ignore[arg-type]
        # The environment the fixture built (JDK, config dir): read back from the process.
        raw = Path(f"/proc/{proc.popen.pid}/environ").read_bytes()
        self.env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        settings = dict(a[2:].split("=", 1) for a in self.argv if a.startswith("-E"))
        self.rundir = Path(settings["path.data"]).parent
        self.user = ES_USER if os.geteuid() == 0 else None
        self.current: Process = proc

    def stop(self) -> None:
        self.current.stop()

    def start(self) -> None:
        log = self.rundir / "logs" / f"restart-{time.time_ns()}.log"
        self.current = spawn("elasticsearch", self.argv, log, self.env, self.rundir, self.user)
        wait_until(
            self.current,
            "yellow cluster health after restart",
            lambda: (
                http(
                    "GET", f"{self.es.url}/_cluster/health?wait_for_status=yellow&timeout=1s"
                ).status
                == 200
            ),
        )


@pytest.fixture
def own_elasticsearch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableNode]:
    """A dedicated Elasticsearch node this test may stop and start again."""
    with start_elasticsearch(tmp_path_factory.mktemp("es-outage") / "elasticsearch") as es:
        node = RestartableNode(es)
        try:
            yield node
        finally:
            if node.current is not es.process:
                node.current.stop()


def _distinct_seqs(es: Elasticsearch, run: str) -> set[int]:
    """Every labels.seq value of the run, exactly (composite aggregation, paged)."""
    seen: set[int] = set()
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {
            "size": 10_000,
            "sources": [{"seq": {"terms": {"field": "labels.seq"}}}],
        }
        if after:
            composite["after"] = after
        reply = es.ok(
            "POST",
            f"{PATTERN}/_search",
            {
                "size": 0,
                "query": {"term": {"labels.run": run}},
                "aggs": {"seqs": {"composite": composite}},
            },
        )
        agg = reply["aggregations"]["seqs"]
        seen.update(int(b["key"]["seq"]) for b in agg["buckets"])
        after = agg.get("after_key")
        if not agg["buckets"] or after is None:
            return seen


def _progress(tmp_path: Path) -> int:
    """How many records the job has logged so far (it writes the count every 500)."""
    try:
        return int((tmp_path / "progress").read_text())
    except FileNotFoundError:
        return 0


def test_es_stopped_mid_run_every_record_arrives_exactly_once(
    own_elasticsearch: RestartableNode, tmp_path: Path
) -> None:
    """100,000 records, Elasticsearch down >= 30 s in the middle: the program keeps logging
    through the outage, and all records arrive, none twice."""
    es = own_elasticsearch.es
    run = uuid.uuid4().hex
    per_s = 2_000
    job = _job(tmp_path, ES_JOB, url=es.url, run=run, records=RECORDS, per_s=per_s, drain_s=240)
    try:
        # Let the run get going with the backend up, then take it away.
        deadline = time.monotonic() + 60
        while es.count(PATTERN, {"term": {"labels.run": run}}) < 5_000:
            assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline, "the run never started shipping"
            time.sleep(0.5)
        own_elasticsearch.stop()
        down_at = time.monotonic()
        logged_before = _progress(tmp_path)
        spool = tmp_path / "store" / "spool" / "elasticsearch"
        time.sleep(OUTAGE_S)
        assert job.poll() is None, "the run should still be logging during the outage"
        logged_during = _progress(tmp_path) - logged_before
        assert any(spool.iterdir()), "records were not spooled during the outage"
        own_elasticsearch.start()
        outage = time.monotonic() - down_at
        out = _finish(job, timeout=400)
    finally:
        if job.poll() is None:
            job.kill()
    # The figures for the closing note (-s / -rP).
    print(f"outage {outage:.1f}s; {logged_during} records logged during it; job {out}")
    assert outage >= OUTAGE_S
    # The caller never waited on the network: with Elasticsearch gone the program still
    # logged at its pace (a quarter of it is the bound; one waiting on retries or timeouts
    # per batch would crawl or stop).
    assert logged_during >= per_s * OUTAGE_S / 4, (logged_during, out["timeline"])
    stats = out["stats"]["logs-elasticsearch"]
    assert stats.get("dropped", 0) == 0, stats
    assert stats["spooled"] > 0 and stats["replayed"] > 0, stats
    assert out["flushed"]
    es.search(PATTERN, {"term": {"labels.run": run}}, min_hits=1)
    assert es.count(PATTERN, {"term": {"labels.run": run}}) == RECORDS
    assert _distinct_seqs(es, run) == set(range(RECORDS))
    assert not [p for p in spool.iterdir() if p.stat().st_size], "spool not drained"


SPANS = 5_000
BLACKHOLE_JOB = """
    import json, logging, threading
    import glmtrace

    glmtrace.init(service_name="blackhole-it", endpoint={endpoint!r}, protocol={protocol!r},
                  logs="none", shutdown_timeout={deadline}, store="store/glmtrace.db")
    for i in range({spans}):
        with glmtrace.span("work", attributes={{"i": i}}):
            pass
    ok = glmtrace.shutdown()
    # The flush that shutdown() ran for its deadline, if still stuck in the exporter.
    flushing = any(t.name == "glmtrace-flush" for t in threading.enumerate())
    print(json.dumps({{"flushed": ok, "still_flushing": flushing,
                      "stats": glmtrace.stats()}}))
"""


@pytest.fixture(scope="module", params=["grpc", "http/protobuf"])
def black_holed_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A job exporting 5,000 spans over OTLP to a port that accepts TCP connections (kernel
    backlog) and never reads or answers; its report once it has shut down."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(128)
        job = _job(
            tmp_path_factory.mktemp("black-hole"),
            BLACKHOLE_JOB,
            endpoint=f"http://127.0.0.1:{server.getsockname()[1]}",
            protocol=request.param,
            deadline=2.0,
            spans=SPANS,
        )
        # A hang detector, not a benchmark: the job itself takes a few seconds. A span
        # creation that waited on the exporter, or an exit hook that waited for it again
        # after shutdown() gave up, would take minutes.
        out = _finish(job, timeout=60)
    print(f"{request.param}: job {out}")
    return out


def test_shutdown_keeps_its_deadline_with_a_black_holed_otlp_endpoint(
    black_holed_run: dict[str, Any],
) -> None:
    """shutdown() returns False within its deadline and nothing was exported. On the Python
    exporter the export it started is still stuck on the black hole (it waited for its
    deadline, not for the exporter); the native pipeline gives up on it by itself."""
    assert not black_holed_run["flushed"]
    if not black_holed_run["stats"].get("otlp", {}).get("native"):
        assert black_holed_run["still_flushing"], black_holed_run
    assert black_holed_run["stats"].get("otlp", {}).get("exported", 0) == 0


def test_black_holed_otlp_endpoint_every_span_is_counted(black_holed_run: dict[str, Any]) -> None:
    """What shutdown() could not send is counted dropped: nothing is lost silently."""
    otlp = black_holed_run["stats"].get("otlp", {})
    assert otlp.get("exported", 0) + otlp.get("dropped", 0) == SPANS, otlp
