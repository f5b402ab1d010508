"""Per-call cost of @glmtrace.stage against a bare call and raw OpenTelemetry, in one process.

Every variant exports into a discarding exporter, so no network or disk is measured. The
figures to trust are the ratios: every row is measured in the same process, interleaved.

    python bench/bench_core.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

import glmtrace


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def raw_decorator(tracer: trace.Tracer) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """What users hand-write with raw OpenTelemetry."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(fn.__name__):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def per_call_ns(fn: Callable[[], Any], calls: int, repeats: int = 7) -> float:
    times = timeit.repeat(fn, number=calls, repeat=repeats)
    return statistics.median(times) / calls * 1e9


def paired_ns(
    a: Callable[[], Any], b: Callable[[], Any], calls: int, rounds: int = 9
) -> tuple[float, float]:
    """Median per-call cost of ``a`` and ``b``, measured in alternating rounds.

    Alternating keeps drift (the batch thread, the other core's load) out of the ratio.
    """
    first, second = [], []
    for _ in range(rounds):
        first.append(timeit.timeit(a, number=calls) / calls * 1e9)
        second.append(timeit.timeit(b, number=calls) / calls * 1e9)
    return statistics.median(first), statistics.median(second)


def build(sampled: bool) -> dict[str, Callable[[], Any]]:
    sampler = None if sampled else ParentBased(ALWAYS_OFF)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1_000_000))
    raw = raw_decorator(provider.get_tracer("bench"))

    def bare(x: int) -> int:
        return x + 1

    raw_fn = raw(bare)
    stage_fn = glmtrace.stage("bench")(bare)

    @raw
    def raw3(x: int) -> int:
        return raw_fn(x)

    @raw
    def raw_nested(x: int) -> int:
        return raw3(x)

    @glmtrace.stage
    def stage3(x: int) -> int:
        return stage_fn(x)

    @glmtrace.stage
    def stage_nested(x: int) -> int:
        return stage3(x)

    return {
        "bare function": lambda: bare(1),
        "raw OpenTelemetry decorator": lambda: raw_fn(1),
        "@glmtrace.stage": lambda: stage_fn(1),
        "raw OpenTelemetry, 3-deep": lambda: raw_nested(1),
        "@glmtrace.stage, 3-deep": lambda: stage_nested(1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    rows: list[tuple[str, str, float]] = []

    uninit = build(sampled=True)
    rows.append(
        ("not initialised", "@glmtrace.stage", per_call_ns(uninit["@glmtrace.stage"], args.calls))
    )
    rows.append(
        ("not initialised", "bare function", per_call_ns(uninit["bare function"], args.calls))
    )

    for sampled in (True, False):
        glmtrace.init(
            traces="none",
            logs="none",
            capture_logs=False,
            exporter=Discard(),
            sample_rate=1.0 if sampled else 0.0,
        )
        variants = build(sampled)
        label = "sampled" if sampled else "sampled out"
        rows.append((label, "bare function", per_call_ns(variants["bare function"], args.calls)))
        for raw, ours in (
            ("raw OpenTelemetry decorator", "@glmtrace.stage"),
            ("raw OpenTelemetry, 3-deep", "@glmtrace.stage, 3-deep"),
        ):
            raw_ns, ours_ns = paired_ns(variants[raw], variants[ours], args.calls)
            rows += [(label, raw, raw_ns), (label, ours, ours_ns)]
        glmtrace.shutdown()

    table = {(mode, name): ns for mode, name, ns in rows}
    print(f"{'mode':<16} {'variant':<30} {'ns/call':>10}")
    for mode, name, ns in rows:
        print(f"{mode:<16} {name:<30} {ns:>10.0f}")
    for mode in ("sampled", "sampled out"):
        one = table[(mode, "@glmtrace.stage")] / table[(mode, "raw OpenTelemetry decorator")]
        three = (
            table[(mode, "@glmtrace.stage, 3-deep")] / table[(mode, "raw OpenTelemetry, 3-deep")]
        )
        print(f"{mode}: stage / raw OTel = {one:.2f}x (1 level), {three:.2f}x (3-deep)")
    for mode in ("not initialised", "sampled out"):
        overhead = table[(mode, "@glmtrace.stage")] - table[("not initialised", "bare function")]
        print(f"{mode}: overhead over a bare call = {overhead:.0f} ns")


if __name__ == "__main__":
    main()
