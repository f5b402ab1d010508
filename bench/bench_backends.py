"""Throughput against the real backends, and the caller-side cost of shipping logs.

Starts the real Jaeger and Elasticsearch the test suite uses (``bash scripts/provision.sh``
first), then measures on this machine:

- spans per second exported to Jaeger over OTLP gRPC, with zero dropped (checked in stats()
  and by reading traces back from Jaeger);
- log records per second shipped to Elasticsearch with zero lost (counted in Elasticsearch);
- ``logger.info`` inside a span with glmtrace's Elasticsearch handler attached, as a ratio
  to the same call with a stdlib ``NullHandler``, in the same process.

Each throughput run happens in a fresh interpreter so runtimes never share state.

    python bench/bench_backends.py [--spans 100000] [--logs 100000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.backends import start_elasticsearch, start_jaeger  # noqa: E402

SPANS = """
import json, sys, time
import glmtrace
total, per_trace = int(sys.argv[2]), 200
glmtrace.init(service_name="bench-spans", endpoint="http://" + sys.argv[1], logs="none")
trace_ids = []
start = time.perf_counter()
for made in range(per_trace, total + 1, per_trace):
    with glmtrace.span("bench root") as root:
        for i in range(per_trace - 1):
            with glmtrace.span("bench child"):
                pass
    trace_ids.append(root.trace_id)
    # Stay under the 20,000-span queue: measure export throughput, not drops.
    while made - glmtrace.stats().get("otlp", {}).get("exported", 0) > 15_000:
        time.sleep(0.001)
ok = glmtrace.force_flush(60)
elapsed = time.perf_counter() - start
glmtrace.shutdown()
print(json.dumps({"elapsed": elapsed, "flushed": ok, "stats": glmtrace.stats(),
                  "sample": trace_ids[:: max(1, len(trace_ids) // 5)]}))
"""

LOGS = """
import json, logging, sys, time
import glmtrace
total, run, rate = int(sys.argv[2]), sys.argv[3], float(sys.argv[5])
glmtrace.init(service_name="bench-logs", traces="none", logs="elasticsearch", es_url=sys.argv[1],
              store=sys.argv[4] + "/glmtrace.db")
log = logging.getLogger("bench")
start = time.perf_counter()
with glmtrace.span("bench"):
    for i in range(total):
        log.info("record %d", i, extra={"run": run})
        if i % 1000 == 999:  # hold the offered rate: a sustained load, not a burst
            ahead = (i + 1) / rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
logged = time.perf_counter() - start
ok = glmtrace.force_flush(120)
elapsed = time.perf_counter() - start
glmtrace.shutdown(30)
print(json.dumps({"elapsed": elapsed, "logged": logged, "flushed": ok,
                  "stats": glmtrace.stats()}))
"""

CALL_COST = """
import json, logging, sys, statistics, timeit
import glmtrace
glmtrace.init(service_name="bench-call", traces="none", logs="elasticsearch", es_url=sys.argv[1],
              store=sys.argv[2] + "/glmtrace.db")
null_logger = logging.getLogger("bench.null")
null_logger.propagate = False
null_logger.addHandler(logging.NullHandler())
shipped = logging.getLogger("bench.shipped")
calls = {"NullHandler": lambda: null_logger.info("request %d done", 7),
         "glmtrace handler": lambda: shipped.info("request %d done", 7)}
times = {name: [] for name in calls}
n = 20000
with glmtrace.span("bench"):
    for name, fn in calls.items():  # warm-up, not kept
        timeit.timeit(fn, number=n)
    for i in range(10):  # alternate the two, and which goes first; keep the medians
        for name in (list(calls) if i % 2 == 0 else list(reversed(list(calls)))):
            times[name].append(timeit.timeit(calls[name], number=n) / n * 1e9)
stats = glmtrace.stats()
glmtrace.shutdown(30)
rows = {name: statistics.median(t) for name, t in times.items()}
pairs = zip(times["glmtrace handler"], times["NullHandler"])
rows["ratio"] = statistics.median(s / b for s, b in pairs)
rows["stats"] = stats
print(json.dumps(rows))
"""


def run(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--logs", type=int, default=100_000)
    parser.add_argument(
        "--log-rates",
        type=int,
        nargs="+",
        default=[20_000, 1_000_000],
        help="offered log rates (records/s); the largest is an unpaced burst",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="glmtrace-bench-"))

    with start_jaeger(work / "jaeger") as jaeger:
        result = run(SPANS, jaeger.otlp_grpc, str(args.spans))
        stats = result["stats"]["otlp"]
        for trace_id in result["sample"]:
            jaeger.trace(trace_id, min_spans=200, timeout=60)
        rate = args.spans / float(result["elapsed"])
        print(
            f"spans -> Jaeger (OTLP gRPC): {rate:,.0f} spans/s; exported={stats.get('exported')} "
            f"dropped={stats.get('dropped', 0)}; sampled traces complete in Jaeger"
        )

    with start_elasticsearch(work / "es") as es:
        # A node that has just started compiles its bulk path on the first requests; warm it
        # up so the figures describe a running cluster, as in production.
        run(LOGS, es.url, "20000", "warm-up", str(work), "20000")
        for offered in args.log_rates:
            label = uuid.uuid4().hex
            result = run(LOGS, es.url, str(args.logs), label, str(work), str(offered))
            stored = es.count("logs-glmtrace-*", {"term": {"labels.run": label}})
            logged = args.logs / float(result["logged"])
            shipped = args.logs / float(result["elapsed"])
            print(
                f"logs -> Elasticsearch, offered {offered:,}/s: logged at {logged:,.0f}/s, "
                f"flushed after {float(result['elapsed']):.1f}s ({shipped:,.0f}/s); "
                f"stored={stored}/{args.logs}; stats={result['stats']}"
            )
        costs = run(CALL_COST, es.url, str(work))
        null, shipped = costs["NullHandler"], costs["glmtrace handler"]
        print(
            f"logger.info: NullHandler {null:,.0f} ns, with glmtrace ES handler {shipped:,.0f} ns "
            f"= {float(shipped) / float(null):.2f}x (median of per-round ratios "
            f"{float(costs['ratio']):.2f}x); stats={costs['stats']}"
        )


if __name__ == "__main__":
    main()
