"""Traced calls while the OTLP endpoint is black-holed: worst latency, memory, drops.

The endpoint is a loopback socket that listens and never accepts: connections complete in the
kernel's backlog and every request then waits for its deadline, the way a collector behind a
dropping firewall behaves. Each variant runs in its own interpreter:

- ``glmtrace``: ``@glmtrace.stage`` with ``endpoint=`` the black hole (OTLP gRPC, the Python
  exporter);
- ``glmtrace-native``: the same over OTLP/HTTP protobuf, which takes the native pipeline
  (queued spans live outside Python's heap);
- ``raw``: a raw OpenTelemetry decorator, the same exporter and batch bounds (20,000 queued).

In each, blocks of traced calls alternate with blocks of untraced calls, so the count of slow
calls that the machine's load alone causes (the untraced column) sits beside the traced one.
Every call is timed on its own; RSS, the Python heap and full garbage collections are sampled.

    python bench/bench_blackhole.py [--calls 100000]
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SLOW_NS = (1_000_000, 5_000_000, 15_000_000)  # 1 ms, 5 ms, 15 ms
BLOCK = 5_000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class GcPauses:
    """Durations of the garbage collector's passes per generation, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._start = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        else:
            self.ms[info["generation"]].append((time.perf_counter_ns() - self._start) / 1e6)


def traced_function(variant: str, endpoint: str) -> tuple[Callable[[int], int], Callable[[], Any]]:
    """The decorated function and a ``finish()`` returning what was exported and dropped."""

    def work(x: int) -> int:
        return x + 1

    if variant.startswith("glmtrace"):
        import glmtrace

        protocol = "http/protobuf" if variant == "glmtrace-native" else "grpc"
        glmtrace.init(
            endpoint=endpoint,
            protocol=protocol,
            logs="none",
            capture_logs=False,
            shutdown_timeout=1,
        )
        native = glmtrace.stats().get("otlp", {}).get("native", 0)
        assert native == (variant == "glmtrace-native"), f"{variant}: native={native}"

        def finish() -> dict[str, int]:
            glmtrace.shutdown(1)
            return glmtrace.stats().get("otlp", {})

        return glmtrace.stage(work), finish

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_core import bounded_processor, raw_decorator

    class Counting(OTLPSpanExporter):
        exported = 0

        def export(self, spans: Any) -> SpanExportResult:
            result = super().export(spans)
            if result is SpanExportResult.SUCCESS:
                Counting.exported += len(spans)
            return result

    provider = TracerProvider()
    provider.add_span_processor(
        bounded_processor(Counting(endpoint=endpoint, insecure=True, timeout=4))
    )

    def finish_raw() -> dict[str, int]:
        # The same 1 s shutdown budget glmtrace was given; the SDK's own would be 30 s.
        stopper = threading.Thread(target=provider.shutdown, daemon=True)
        stopper.start()
        stopper.join(1.0)
        return {"exported": Counting.exported}

    return raw_decorator(provider.get_tracer("bench"))(work), finish_raw


def child(variant: str, calls: int) -> None:
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(1024)  # and never accept()
    fn, finish = traced_function(variant, f"http://127.0.0.1:{hole.getsockname()[1]}")

    def bare(x: int) -> int:
        return x + 1

    pauses = GcPauses()
    gc.callbacks.append(pauses)
    lat = {"traced": array.array("q"), "untraced": array.array("q")}
    memory = [(0, rss_mb())]
    clock = time.perf_counter_ns
    start = time.perf_counter()
    done = 0
    while done < calls:
        for name, f in (("traced", fn), ("untraced", bare)):
            out = lat[name]
            for i in range(BLOCK):
                t0 = clock()
                f(i)
                out.append(clock() - t0)
        done += BLOCK
        if done % 20_000 == 0:
            memory.append((done, rss_mb()))
    elapsed = time.perf_counter() - start
    gc.callbacks.remove(pauses)
    stats = finish()
    summary: dict[str, Any] = {
        "variant": variant,
        "calls": done,
        "seconds": elapsed,
        "rss_mb": memory,
        "gc": {
            gen: {
                "count": len(ms),
                "max_ms": max(ms, default=0.0),
                "over_5ms": sum(m > 5 for m in ms),
            }
            for gen, ms in pauses.ms.items()
        },
        "stats": stats,
    }
    for name, values in lat.items():
        ordered = sorted(values)
        summary[name] = {
            "p50_us": ordered[len(ordered) // 2] / 1e3,
            "p99_us": ordered[int(len(ordered) * 0.99)] / 1e3,
            "p999_us": ordered[int(len(ordered) * 0.999)] / 1e3,
            "max_ms": ordered[-1] / 1e6,
            **{f"over_{ns // 1_000_000}ms": sum(v > ns for v in values) for ns in SLOW_NS},
            # Before the queue is full spans are queued; after it, each is dropped and counted.
            "over_5ms_first_20k": sum(v > 5_000_000 for v in values[:20_000]),
        }
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--variants", nargs="+", default=["glmtrace", "glmtrace-native", "raw"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return
    for variant in args.variants:
        done = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--calls", str(args.calls)],
            capture_output=True,
            text=True,
            timeout=1200,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        made = r["calls"]
        exported = r["stats"].get("exported", 0)
        dropped = r["stats"].get("dropped", 0)
        print(f"{variant}: {made:,} traced calls in {r['seconds']:.1f} s (with as many untraced)")
        for name in ("traced", "untraced"):
            s = r[name]
            print(
                f"  {name:<9} p50 {s['p50_us']:.1f} us, p99 {s['p99_us']:.1f} us, "
                f"p99.9 {s['p999_us']:.1f} us, worst {s['max_ms']:.1f} ms; "
                f"> 1 ms: {s['over_1ms']}, > 5 ms: {s['over_5ms']} "
                f"({s['over_5ms_first_20k']} in the first 20,000), > 15 ms: {s['over_15ms']}"
            )
        print(
            "  GC passes: "
            + "; ".join(
                f"gen {gen}: {g['count']}, longest {g['max_ms']:.1f} ms, {g['over_5ms']} > 5 ms"
                for gen, g in r["gc"].items()
            )
        )
        print("  RSS (MB) after calls: " + ", ".join(f"{n:,}: {mb:.0f}" for n, mb in r["rss_mb"]))
        if variant.startswith("glmtrace"):
            missing = made - exported - dropped
            print(
                f"  exported {exported:,}, dropped {dropped:,} (stats()), unaccounted {missing:,}"
            )
        else:
            print(f"  exported {exported:,}, lost {made - exported:,} (the SDK logs 'Queue full')")


if __name__ == "__main__":
    main()
