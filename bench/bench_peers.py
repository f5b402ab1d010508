"""glmtrace against the tools users would pick instead, in one process, sending nowhere.

Per-call cost of a decorated no-op function: bare call, raw OpenTelemetry, @glmtrace.stage,
Pydantic Logfire's @logfire.instrument and OpenLLMetry's @workflow; enabled, sampled out and
3-deep. Then memory after 100,000 spans with the OTLP backend down. The peers are installed
only in the benchmark's own environment (bench/peers.sh).

    bash bench/peers.sh
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import Discard, paired_ns, raw_decorator

import glmtrace


def nest(
    decorate: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    def leaf(x: int) -> int:
        return x + 1

    one = decorate(leaf)

    def mid(x: int) -> int:
        return one(x)

    two = decorate(mid)

    def top(x: int) -> int:
        return two(x)

    three = decorate(top)
    return (lambda: one(1)), (lambda: three(1))


def raw_otel(sampled: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    provider = TracerProvider(sampler=None if sampled else ParentBased(ALWAYS_OFF))
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1_000_000))
    return raw_decorator(provider.get_tracer("bench"))


def measure(
    label: str,
    decorate: Callable[..., Any],
    baseline: tuple[Callable[[], Any], Callable[[], Any]],
    calls: int,
    rows: list[tuple[str, float, float, float, float]],
) -> None:
    """Per-call cost of one and three nested decorated calls, each alternated with raw OTel."""
    one, three = nest(decorate)
    raw_one, one_ns = paired_ns(baseline[0], one, calls)
    raw_three, three_ns = paired_ns(baseline[1], three, calls)
    rows.append((label, one_ns, three_ns, one_ns / raw_one, three_ns / raw_three))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    rows: list[tuple[str, float, float, float, float]] = []
    baseline = nest(raw_otel(True))

    measure("bare call", lambda fn: fn, baseline, args.calls, rows)
    measure("raw OpenTelemetry", raw_otel(True), baseline, args.calls, rows)
    measure("raw OpenTelemetry, sampled out", raw_otel(False), baseline, args.calls, rows)

    glmtrace.init(traces="none", logs="none", capture_logs=False, exporter=Discard())
    measure("@glmtrace.stage", glmtrace.stage, baseline, args.calls, rows)
    glmtrace.init(
        traces="none", logs="none", capture_logs=False, exporter=Discard(), sample_rate=0.0
    )
    measure("@glmtrace.stage, sampled out", glmtrace.stage, baseline, args.calls, rows)
    glmtrace.shutdown()

    import logfire

    logfire.configure(
        send_to_logfire=False,
        console=False,
        additional_span_processors=[BatchSpanProcessor(Discard())],
    )
    measure(
        "logfire @instrument",
        lambda fn: logfire.instrument(fn.__name__)(fn),
        baseline,
        args.calls,
        rows,
    )

    from traceloop.sdk import Traceloop
    from traceloop.sdk.decorators import workflow

    Traceloop.init(
        app_name="bench", exporter=Discard(), telemetry_enabled=False, disable_batch=False
    )
    measure(
        "OpenLLMetry @workflow",
        lambda fn: workflow(name=fn.__name__)(fn),
        baseline,
        args.calls,
        rows,
    )

    header = ("variant", "1 level ns", "3-deep ns", "vs raw (1)", "vs raw (3)")
    print(f"{header[0]:<32} " + " ".join(f"{h:>10}" for h in header[1:]))
    for label, one, three, ratio_one, ratio_three in rows:
        print(f"{label:<32} {one:>10.0f} {three:>10.0f} {ratio_one:>9.2f}x {ratio_three:>9.2f}x")
    print()
    memory_with_backend_down()


def memory_with_backend_down(spans: int = 100_000) -> None:
    """RSS and Python heap after 100,000 spans aimed at a closed port."""
    glmtrace.init(
        endpoint="http://127.0.0.1:9", logs="none", capture_logs=False, shutdown_timeout=1
    )

    @glmtrace.stage
    def work(i: int) -> int:
        return i

    gc.collect()
    tracemalloc.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    checkpoints = []
    for i in range(spans):
        work(i)
        if (i + 1) % 25_000 == 0:
            checkpoints.append(tracemalloc.get_traced_memory()[0] / 1e6)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.stop()
    glmtrace.shutdown()
    stats = glmtrace.stats().get("otlp", {})
    print(
        f"backend down, {spans} spans: Python heap after each 25k spans (MB): "
        + ", ".join(f"{c:.1f}" for c in checkpoints)
    )
    print(
        f"peak RSS growth {(rss_after - rss_before) / 1024:.1f} MB; "
        f"counted dropped={stats.get('dropped', 0)}"
    )


if __name__ == "__main__":
    main()
