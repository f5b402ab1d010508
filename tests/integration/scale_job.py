"""The traced job of test_scale.py: one coordinator and several rank processes, threads in each.

    python scale_job.py coordinator RUN TRACES RANKS SLOW_MS      (prints one JSON summary line)
    python scale_job.py rank RUN R                                 (started by the coordinator)

Each trace is a ``step`` span in the coordinator whose context is handed (W3C traceparent, as
``glmtrace.inject``) to every rank; each rank makes two ``work`` spans in each of two threads
under it and logs one record per span. So the spans of one trace come from 1 + RANKS processes.
Every tenth trace has an error in rank 1; every twentieth is slow (its step outlasts SLOW_MS).
glmtrace is configured from the environment: OTLP to tier 1, logs over Fluent forward to it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import glmtrace

THREADS = 2
SPANS_PER_THREAD = 2
log = logging.getLogger("scale")


def kind_of(index: int) -> str:
    if index % 10 == 3:
        return "error"
    if index % 20 == 7:
        return "slow"
    return "normal"


def _work(run: str, rank: int, task: dict[str, Any], thread: int) -> int:
    made = 0
    for n in range(SPANS_PER_THREAD):
        seq = ((task["i"] * 100 + rank) * THREADS + thread) * SPANS_PER_THREAD + n
        fail = task["kind"] == "error" and rank == 1 and thread == 0 and n == 0
        try:
            with glmtrace.span("work", {"scale.rank": rank, "scale.thread": thread}):
                log.info("work %d", seq, extra={"run": run, "seq": seq})
                made += 1
                if fail:
                    raise RuntimeError("injected failure")
        except RuntimeError:
            pass
    return made


def rank_main(run: str, rank: int) -> None:
    glmtrace.init(service_name=f"scale-rank{rank}", shutdown_timeout=30)
    logs = 0
    with ThreadPoolExecutor(THREADS) as pool:
        for line in sys.stdin:
            task = json.loads(line)
            with glmtrace.attach(task["carrier"]):
                done = [pool.submit(_work, run, rank, task, t) for t in range(THREADS)]
                logs += sum(f.result() for f in done)
            print("ok", flush=True)
    glmtrace.shutdown(30)
    print(json.dumps({"logs": logs, "stats": glmtrace.stats()}), flush=True)


def coordinator_main(run: str, traces: int, ranks: int, slow_ms: int) -> None:
    glmtrace.init(service_name="scale-coordinator", shutdown_timeout=30)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "rank", run, str(r)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**env, "RANK": str(r), "WORLD_SIZE": str(ranks + 1)},
        )
        for r in range(1, ranks + 1)
    ]
    started = time.time()
    rows = []
    for i in range(traces):
        kind = kind_of(i)
        begin = time.time()
        with glmtrace.span("step", {"scale.run": run, "scale.i": i, "scale.kind": kind}):
            trace_id = glmtrace.current_trace_id()
            task = json.dumps({"i": i, "kind": kind, "carrier": glmtrace.inject({})})
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(task + "\n")
                proc.stdin.flush()
            for proc in procs:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "ok"
            if kind == "slow":
                time.sleep(slow_ms / 1000 + 0.1)
        spans = 1 + ranks * THREADS * SPANS_PER_THREAD
        rows.append({"i": i, "trace_id": trace_id, "kind": kind, "spans": spans, "t": begin})
        print(f"progress {i + 1}", file=sys.stderr, flush=True)
    produced = time.time() - started
    ranks_out = []
    for proc in procs:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        ranks_out.append(json.loads(proc.stdout.read().strip().splitlines()[-1]))
        proc.wait(60)
    glmtrace.shutdown(30)
    summary = {
        "traces": rows,
        "seconds": produced,
        "logs": sum(r["logs"] for r in ranks_out),
        "stats": [glmtrace.stats(), *(r["stats"] for r in ranks_out)],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "rank":
        rank_main(sys.argv[2], int(sys.argv[3]))
    else:
        coordinator_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
