"""glmtrace against the tools users would pick instead, each in its own process, sending nowhere.

Per-call cost of a decorated no-op function, one level and 3-deep: bare call, raw
OpenTelemetry (``start_as_current_span``; ``start_span`` + attach), @glmtrace.stage, Pydantic
Logfire's @logfire.instrument and OpenLLMetry's @workflow, enabled and sampled out. Each variant
runs in a fresh interpreter that configures only that variant, so no tool's global set-up
(tracer provider, context hooks, patched libraries) leaks into another's figures; inside it,
rounds alternate the variant with a raw OpenTelemetry baseline (same 20,000-span batch bounds,
discarding exporter), and the ratio to that baseline is what compares across processes.
Every measured block checks that each pipeline exported at least the spans it was given.

The peers are installed only in the benchmark's own environment (bench/peers.sh); a variant
whose package is missing is reported as skipped.

    bash bench/peers.sh [--calls 5000] [--rounds 21]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import (
    Decorator,
    Discard,
    attach_decorator,
    bounded_processor,
    paired_ns,
    raw_decorator,
)

VARIANTS = (
    "bare call",
    "raw OpenTelemetry",
    "raw OpenTelemetry, sampled out",
    "raw OTel start_span+attach",
    "@glmtrace.stage",
    "@glmtrace.stage, sampled out",
    "logfire @instrument",
    "OpenLLMetry @workflow",
)


def nest(decorate: Decorator) -> tuple[Callable[[], Any], Callable[[], Any]]:
    def leaf(x: int) -> int:
        return x + 1

    one = decorate(leaf)

    def mid(x: int) -> int:
        return int(one(x))

    two = decorate(mid)

    def top(x: int) -> int:
        return int(two(x))

    three = decorate(top)
    return (lambda: one(1)), (lambda: three(1))


def raw_pipeline(sampled: bool = True) -> tuple[TracerProvider, Discard]:
    provider = TracerProvider(sampler=None if sampled else ParentBased(ALWAYS_OFF))
    sink = Discard()
    provider.add_span_processor(bounded_processor(sink))
    return provider, sink


Flush = Callable[[], Any]


def configure(variant: str) -> tuple[Decorator, Discard | None, bool, Flush]:
    """Set up ``variant`` alone: its decorator, its spans' sink, whether it samples, its flush."""
    if variant == "bare call":
        return (lambda fn: fn), None, False, lambda: None
    if variant.startswith(("raw OpenTelemetry", "raw OTel")):
        sampled = "sampled out" not in variant
        provider, sink = raw_pipeline(sampled)
        decorate = attach_decorator if "attach" in variant else raw_decorator
        return decorate(provider.get_tracer("variant")), sink, sampled, provider.force_flush
    sink = Discard()
    if variant.startswith("@glmtrace"):
        import glmtrace

        sampled = "sampled out" not in variant
        glmtrace.init(
            traces="none",
            logs="none",
            capture_logs=False,
            exporter=sink,
            sample_rate=1.0 if sampled else 0.0,
        )
        return glmtrace.stage, sink, sampled, lambda: glmtrace.force_flush(30)
    if variant.startswith("logfire"):
        import logfire

        logfire.configure(
            send_to_logfire=False,
            console=False,
            additional_span_processors=[bounded_processor(sink)],
        )
        return (lambda fn: logfire.instrument(fn.__name__)(fn)), sink, True, logfire.force_flush
    from traceloop.sdk import Traceloop
    from traceloop.sdk.decorators import workflow

    Traceloop.init(app_name="bench", exporter=sink, telemetry_enabled=False, disable_batch=False)
    installed: Any = trace.get_tracer_provider()  # Traceloop.init sets the global one
    return (lambda fn: workflow(name=fn.__name__)(fn)), sink, True, installed.force_flush


def child(variant: str, calls: int, rounds: int) -> dict[str, Any]:
    baseline_provider, baseline_sink = raw_pipeline()
    baseline = nest(raw_decorator(baseline_provider.get_tracer("baseline")))
    try:
        decorate, sink, sampled, flush_variant = configure(variant)
    except ImportError as exc:
        return {"variant": variant, "skipped": f"{exc}"}
    variant_calls = nest(decorate)

    def flush() -> None:
        baseline_provider.force_flush()
        flush_variant()

    result: dict[str, Any] = {"variant": variant}
    for depth, index in (("1", 0), ("3", 1)):
        flush()
        before = baseline_sink.count, sink.count if sink else 0
        raw_ns, ns, ratio = paired_ns(baseline[index], variant_calls[index], calls, rounds, flush)
        made = calls * rounds * (1 if index == 0 else 3)
        exported = (baseline_sink.count - before[0], (sink.count if sink else 0) - before[1])
        short = [
            name
            for name, got, want in (
                ("raw baseline", exported[0], made),
                (variant, exported[1], made if sink and sampled else 0),
            )
            if got < want
        ]
        if short:
            raise SystemExit(f"{variant}, {depth} level(s): spans lost in {short}: {exported}")
        result[depth] = {"ns": ns, "raw_ns": raw_ns, "ratio": ratio}
    if variant.startswith("@glmtrace"):
        import glmtrace

        dropped = glmtrace.stats().get("custom", {}).get("dropped", 0)
        if dropped:
            raise SystemExit(f"{variant}: glmtrace.stats() counted {dropped} dropped")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5_000, help="calls per block (<= 20,000)")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.calls, args.rounds)))
        return
    header = (
        "variant",
        "1 level ns",
        "3-deep ns",
        "raw (1)",
        "raw (3)",
        "vs raw (1)",
        "vs raw (3)",
    )
    print(f"{header[0]:<32} " + " ".join(f"{h:>10}" for h in header[1:]))
    for variant in args.variants:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                variant,
                "--calls",
                str(args.calls),
                "--rounds",
                str(args.rounds),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if done.returncode:
            print(f"{variant:<32} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        if "skipped" in r:
            print(f"{variant:<32} skipped ({r['skipped']})")
            continue
        one, three = r["1"], r["3"]
        print(
            f"{variant:<32} {one['ns']:>10.0f} {three['ns']:>10.0f} {one['raw_ns']:>10.0f} "
            f"{three['raw_ns']:>10.0f} {one['ratio']:>9.2f}x {three['ratio']:>9.2f}x"
        )


if __name__ == "__main__":
    main()
