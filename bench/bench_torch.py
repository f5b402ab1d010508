"""Benchmarks of the torch integration, on CPU, in one process.

1. Forward time of a small MLP and a small transformer block with ``instrument_torch(depth=1)``
   against the same model uninstrumented (target: under 5% overhead). Rounds alternate the
   two, and which of them runs first, so that drift (turbo, other load) hits both; the median
   ratio is reported.
2. Profiler events turned into spans per second (target: at least 100,000/s), measured on
   real Kineto windows by the converter itself (event extraction, parenting, span export).

Spans go to an exporter that only counts them, so the numbers are glmtrace's own cost (the
Python path); with ``--sink local`` they go to a local store in a temporary directory, as the
embedded default does (the native queue and writer thread when the extension is built).

    python bench/bench_torch.py [--rounds 15] [--iters 30] [--sink discard|local]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import glmtrace


class CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


def mlp() -> tuple[torch.nn.Module, torch.Tensor]:
    model = torch.nn.Sequential(
        torch.nn.Linear(512, 2048),
        torch.nn.GELU(),
        torch.nn.Linear(2048, 2048),
        torch.nn.GELU(),
        torch.nn.Linear(2048, 512),
    )
    return model, torch.randn(64, 512)


def transformer_block() -> tuple[torch.nn.Module, torch.Tensor]:
    layer = torch.nn.TransformerEncoderLayer(
        d_model=256, nhead=4, dim_feedforward=1024, batch_first=True, dropout=0.0
    )
    return layer.eval(), torch.randn(8, 128, 256)


def _time(model: torch.nn.Module, x: torch.Tensor, iters: int) -> float:
    with torch.no_grad(), glmtrace.span("bench"):
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        return (time.perf_counter() - start) / iters


def _paired(
    model: torch.nn.Module, x: torch.Tensor, iters: int, traced_first: bool
) -> tuple[float, float]:
    """One round: (plain, instrumented) forward time, the instrumented run first if asked.

    Rounds swap the order, so whatever the first run of a pair pays (or gains: caches warm,
    the other core's load) falls on both sides equally.
    """
    plain = 0.0
    if not traced_first:
        plain = _time(model, x, iters)
    glmtrace.instrument_torch(model, depth=1)
    traced = _time(model, x, iters)
    glmtrace.uninstrument_torch(model)
    if traced_first:
        plain = _time(model, x, iters)
    return plain, traced


def overhead(
    name: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    rounds: int,
    iters: int,
    exported: Callable[[], int],
) -> None:
    _time(model, x, iters)  # warm-up
    ratios, plain_s, traced_s = [], [], []
    glmtrace.force_flush()
    before = exported()
    for i in range(rounds):
        plain, traced = _paired(model, x, iters, traced_first=i % 2 == 1)
        ratios.append(traced / plain)
        plain_s.append(plain)
        traced_s.append(traced)
    glmtrace.force_flush()
    # Measured, not assumed: a fused layer runs no children, so they make no spans.
    spans = (exported() - before - 2 * rounds) / (rounds * iters)
    print(
        f"{name:18} forward {statistics.median(plain_s) * 1e3:7.3f} ms  "
        f"instrumented {statistics.median(traced_s) * 1e3:7.3f} ms  "
        f"overhead {100 * (statistics.median(ratios) - 1):+5.2f}%  ({spans:.0f} spans/forward)"
    )


def hook_cost(rounds: int) -> None:
    """Cost of one module span (pre + post hook, export), on modules that do nothing."""
    model = torch.nn.Sequential(*[torch.nn.Identity() for _ in range(16)])
    x = torch.zeros(1)
    iters = 200
    costs = []
    for i in range(rounds):
        plain, traced = _paired(model, x, iters, traced_first=i % 2 == 1)
        costs.append((traced - plain) / 17)
        glmtrace.force_flush()
    print(f"module span cost: {statistics.median(costs) * 1e6:.1f} us per instrumented module call")


def profiler_throughput(windows: int) -> None:
    x = torch.randn(8, 8)
    results: list[dict[str, Any]] = []
    for _ in range(windows):
        with glmtrace.profile(every=1, active=1, max_spans=1_000_000) as prof:
            with glmtrace.span("step"):
                for _ in range(1500):
                    with glmtrace.span("inner"):
                        (x + 1).relu_()
            prof.step()
        glmtrace.force_flush()
        results.extend(r for r in prof.results if r["spans"] > 100)
    spans = sum(r["spans"] for r in results)
    seconds = sum(r["convert_s"] for r in results)
    print(
        f"profiler events -> spans: {spans} spans in {seconds:.3f} s = "
        f"{spans / seconds:,.0f} events/s ({len(results)} windows)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--sink", choices=("discard", "local"), default="discard")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.sink == "local":
            glmtrace.init(service_name="bench", store=f"{tmp}/bench.db", logs="none")

            def exported() -> int:
                return glmtrace.stats().get("local", {}).get("exported", 0)

        else:
            exporter = CountingExporter()
            glmtrace.init(service_name="bench", traces="none", logs="none", exporter=exporter)

            def exported() -> int:
                return exporter.count

        path = "native" if "native" in glmtrace.stats().get("local", {}) else "Python"
        threads = torch.get_num_threads()
        print(f"torch {torch.__version__}, {threads} threads, sink {args.sink} ({path} path)")
        for name, build in (("mlp", mlp), ("transformer block", transformer_block)):
            model, x = build()
            overhead(name, model, x, args.rounds, args.iters, exported)
        hook_cost(args.rounds)
        profiler_throughput(args.windows)
        glmtrace.shutdown()
        print(f"exported spans: {exported()}, stats: {glmtrace.stats()}")


if __name__ == "__main__":
    main()
