"""Load test: a traced inference HTTP service under Locust, untraced vs local store vs Collector.

Starts bench/load_service.py once per mode: tracing off (glmtrace not initialised), spans to the
local store (``local``; ``local-python`` forces its Python writer), and spans over OTLP gRPC to
the real OpenTelemetry Collector (built by scripts/provision.sh, started with
exporters/collector/config.yaml, forwarding to the real Jaeger). Then, with headless Locust on
loopback:

1. maximum throughput of each (no wait between requests), in rounds that alternate the order;
2. P50/P95/P99 of each at 80% of the untraced maximum, paced, again alternated; then at 80%
   of the lowest maximum of the three, a load every one of them can carry.

Percentiles come from every response time Locust measured (bench/locustfile.py), not from its
rounded statistics. Locust runs from its own environment (``bash bench/load.sh`` makes it).

    bash bench/load.sh [--seconds 20] [--rounds 2] [--users 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.backends import (  # noqa: E402
    COLLECTOR_CONFIG,
    clean_env,
    collector_binary,
    free_port,
    port_open,
    spawn,
    start_jaeger,
    wait_until,
)

HERE = Path(__file__).parent
CACHE = Path(os.environ.get("GLMTRACE_CACHE", Path.home() / ".cache" / "glmtrace"))
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def collector(workdir: Path) -> Iterator[str]:
    """The real Collector with the project's config, traces to a real Jaeger; yields host:port.

    Its logs pipeline points at a closed port: this benchmark sends no logs, and a real
    Elasticsearch would only take CPU from the two cores being measured.
    """
    with start_jaeger(workdir / "jaeger") as jaeger:
        grpc = free_port()
        env = clean_env(
            GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC=f"127.0.0.1:{grpc}",
            GLMTRACE_COLLECTOR_LISTEN_OTLP_HTTP=f"127.0.0.1:{free_port()}",
            GLMTRACE_COLLECTOR_LISTEN_FLUENT=f"127.0.0.1:{free_port()}",
            GLMTRACE_COLLECTOR_LISTEN_PROMETHEUS=f"127.0.0.1:{free_port()}",
            GLMTRACE_COLLECTOR_JAEGER_OTLP=jaeger.otlp_grpc,
            GLMTRACE_COLLECTOR_ES_URL=f"http://127.0.0.1:{free_port()}",
            GLMTRACE_COLLECTOR_LOG_LEVEL="warn",
        )
        proc = spawn(
            "collector",
            [str(collector_binary()), f"--config={COLLECTOR_CONFIG}"],
            workdir / "collector.log",
            env,
            workdir,
        )
        try:
            wait_until(proc, "open its OTLP port", lambda: port_open(f"127.0.0.1:{grpc}"))
            yield f"127.0.0.1:{grpc}"
        finally:
            proc.stop()


class Service:
    """One load_service.py process."""

    def __init__(self, mode: str, workdir: Path, endpoint: str | None = None) -> None:
        # "local-python": the local store with the Python writer even where the native one is.
        traces = "local" if mode == "local-python" else mode
        argv = [sys.executable, str(HERE / "load_service.py"), "--traces", traces]
        if traces == "local":
            argv += ["--store", str(workdir / f"{mode}.db")]
        if endpoint:
            argv += ["--endpoint", f"http://{endpoint}"]
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, **ONE_THREAD, "PYTHONPATH": path}
        if mode == "local-python":
            env["GLMTRACE_NATIVE"] = "0"
        self.mode = mode
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> dict[str, Any]:
        """Stop it (SIGTERM: glmtrace flushes) and return its glmtrace.stats()."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=60)
        lines = err.strip().splitlines()
        return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"stderr": err}


def locust(
    locust_bin: Path, port: int, users: int, seconds: int, rate: float | None, out: Path
) -> list[tuple[float, float, bool]]:
    env = {**os.environ, "LOAD_OUT": str(out)}
    env.pop("LOAD_RATE_PER_USER", None)
    if rate is not None:
        env["LOAD_RATE_PER_USER"] = str(rate / users)
    subprocess.run(
        [
            str(locust_bin),
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(users),
            "--run-time",
            f"{seconds}s",
            "--host",
            f"http://127.0.0.1:{port}",
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=seconds + 120,
    )
    return [(float(t), float(ms), bool(ok)) for t, ms, ok in json.loads(out.read_text())]


def summarise(samples: list[tuple[float, float, bool]], warmup: float) -> dict[str, float]:
    """Throughput and exact percentiles, leaving out the first ``warmup`` seconds."""
    start = min(s[0] for s in samples) + warmup
    kept = [s for s in samples if s[0] >= start]
    ok = sorted(s[1] for s in kept if s[2])
    window = max(s[0] for s in kept) - start

    def pct(p: float) -> float:
        return ok[min(len(ok) - 1, int(p * len(ok)))]

    return {
        "rps": len(ok) / window,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": ok[-1],
        "failed": len(kept) - len(ok),
        "n": len(ok),
    }


def run_rounds(
    services: dict[str, Service],
    args: argparse.Namespace,
    rate: float | None,
    workdir: Path,
) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in services}
    order = list(services)
    for i in range(args.rounds):
        for mode in order if i % 2 == 0 else list(reversed(order)):
            samples = locust(
                args.locust,
                services[mode].port,
                args.users if rate is None else args.paced_users,
                args.seconds,
                rate,
                workdir / f"{mode}-{i}-{rate}.json",
            )
            result = summarise(samples, args.warmup)
            results[mode].append(result)
            print(
                f"  round {i} {mode:<10} "
                + json.dumps({k: round(v, 2) for k, v in result.items()}),
                flush=True,
            )
    return results


def median_of(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--locust", type=Path, default=CACHE / "bench-load-venv" / "bin" / "locust")
    parser.add_argument("--users", type=int, default=8, help="users for the maximum")
    # Paced, each user waits for its answer: with few users a slow tail lowers the rate offered.
    parser.add_argument("--paced-users", type=int, default=32, help="users for paced runs")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["off", "local", "collector"])
    parser.add_argument("--load", type=float, default=0.8, help="paced load, share of max")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="glmtrace-load-"))
    with contextlib.ExitStack() as stack:
        services: dict[str, Service] = {}
        for mode in args.modes:
            if mode == "collector":
                if not collector_binary().exists():
                    print("no Collector binary (bash scripts/provision.sh): skipping it")
                    continue
                endpoint = stack.enter_context(collector(workdir / "collector"))
                services[mode] = Service("otlp", workdir, endpoint)
            else:
                services[mode] = Service(mode, workdir)
            stack.callback(services[mode].proc.kill)  # on any error; a no-op once stopped
        print(f"maximum throughput ({args.users} users, no wait, {args.seconds} s):", flush=True)
        peak = run_rounds(services, args, None, workdir)
        maxima = {mode: median_of(rows, "rps") for mode, rows in peak.items()}
        # The target's load (a share of the untraced maximum) and the same share of the lowest
        # maximum: above a traced service's own maximum its P99 only measures the queue.
        rates = {
            "untraced max": args.load * maxima["off"],
            "lowest max": args.load * min(maxima.values()),
        }
        paced = {}
        for label, rate in rates.items():
            print(f"paced at {rate:.0f} requests/s ({args.load:.0%} of the {label}):", flush=True)
            paced[label] = run_rounds(services, args, rate, workdir)
        stats = {mode: service.stop() for mode, service in services.items()}

    print()
    print("max req/s: " + ", ".join(f"{mode} {rps:.0f}" for mode, rps in maxima.items()))
    for label, rate in rates.items():
        print(
            f"at {rate:.0f} req/s ({args.load:.0%} of the {label}): "
            "achieved req/s, P50 / P95 / P99 ms, P99 vs off"
        )
        off_p99 = median_of(paced[label]["off"], "p99")
        for mode in services:
            rows = paced[label][mode]
            p99 = median_of(rows, "p99")
            print(
                f"  {mode:<10} {median_of(rows, 'rps'):>6.0f}  {median_of(rows, 'p50'):.2f} / "
                f"{median_of(rows, 'p95'):.2f} / {p99:.2f} ms  {p99 / off_p99:.2f}x"
            )
    print(f"glmtrace.stats() at exit: {stats}")


if __name__ == "__main__":
    main()
