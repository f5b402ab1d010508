"""Per-call cost of @glmtrace.stage against a bare call and raw OpenTelemetry, in one process.

Every variant exports into a discarding exporter, so no network or disk is measured. The
figures to trust are the ratios: every row is measured in the same process, interleaved.
Raw OpenTelemetry gets the same batch processor bounds as glmtrace (20,000 spans queued,
batches of 512, 500 ms), every round starts from an empty queue, and every measured block
checks that no span was dropped on either side: a ratio over lost spans would flatter both.

Two raw baselines: ``start_as_current_span`` (what most users hand-write) and
``start_span`` + ``context.attach``/``detach`` (the leaner form glmtrace itself uses).

    python bench/bench_core.py [--calls 5000] [--rounds 31]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import threading
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

import glmtrace

# glmtrace's own batch processor settings (glmtrace/_internal/runtime.py), given to raw OTel.
QUEUE, BATCH, DELAY_MS = 20_000, 512, 500

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class Discard(SpanExporter):
    """Drops every span it is handed, counting them so the benchmark can check none was lost."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.count += len(spans)
        return SpanExportResult.SUCCESS


def bounded_processor(exporter: SpanExporter) -> BatchSpanProcessor:
    return BatchSpanProcessor(
        exporter, max_queue_size=QUEUE, max_export_batch_size=BATCH, schedule_delay_millis=DELAY_MS
    )


def raw_decorator(tracer: trace.Tracer) -> Decorator:
    """What users hand-write with raw OpenTelemetry."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(fn.__name__):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def attach_decorator(tracer: trace.Tracer) -> Decorator:
    """Raw OpenTelemetry without the context manager: start_span, attach, detach, end."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            span = tracer.start_span(name)
            token = context.attach(trace.set_span_in_context(span))
            try:
                return fn(*args, **kwargs)
            finally:
                context.detach(token)
                span.end()

        return wrapper

    return decorate


class Pipeline:
    """One traced variant: its calls, how many spans one call makes, and where they end up."""

    def __init__(
        self, call: Callable[[], Any], spans_per_call: int, exported: Callable[[], int]
    ) -> None:
        self.call, self.spans_per_call, self.exported = call, spans_per_call, exported


def check_no_drops(name: str, made: int, exported: int) -> None:
    dropped = glmtrace.stats().get("custom", {}).get("dropped", 0)
    if exported != made or dropped:
        raise SystemExit(
            f"{name}: {made} spans made, {exported} exported, glmtrace dropped={dropped}: "
            "the queue overflowed, so this figure would not be honest"
        )


def paired_ns(
    a: Callable[[], Any],
    b: Callable[[], Any],
    calls: int,
    rounds: int = 9,
    between: Callable[[], Any] = lambda: None,
) -> tuple[float, float, float]:
    """Median per-call cost of ``a`` and ``b`` in alternating rounds, and the median b/a ratio.

    Alternating (and swapping which goes first every round) keeps drift (the batch thread,
    the other core's load) out of the ratio; the ratio is taken within each round, between
    two blocks measured back to back, so load that comes and goes cancels in it.
    ``between`` runs untimed after every block.
    """
    first: list[float] = []
    second: list[float] = []
    for i in range(rounds):
        order = ((a, first), (b, second)) if i % 2 == 0 else ((b, second), (a, first))
        for fn, out in order:
            out.append(timeit.timeit(fn, number=calls) / calls * 1e9)
            between()
    ratio = statistics.median(y / x for x, y in zip(first, second, strict=True))
    return statistics.median(first), statistics.median(second), ratio


def per_call_ns(fn: Callable[[], Any], calls: int, repeats: int = 7) -> float:
    times = timeit.repeat(fn, number=calls, repeat=repeats)
    return statistics.median(times) / calls * 1e9


def build(sampled: bool, glm_sink: Discard) -> tuple[dict[str, Pipeline], Callable[[], None]]:
    """Every variant, and a function that flushes both pipelines (glmtrace's and raw OTel's).

    ``glm_sink`` is the exporter glmtrace was initialised with.
    """
    sampler = None if sampled else ParentBased(ALWAYS_OFF)
    provider = TracerProvider(sampler=sampler)
    raw_sink = Discard()
    provider.add_span_processor(bounded_processor(raw_sink))
    tracer = provider.get_tracer("bench")
    per_span = 1 if sampled else 0

    def bare(x: int) -> int:
        return x + 1

    def chain(decorate: Decorator) -> tuple[Callable[[], Any], Callable[[], Any]]:
        one = decorate(bare)
        two = decorate(lambda x: one(x))
        three = decorate(lambda x: two(x))
        return (lambda: one(1)), (lambda: three(1))

    variants: dict[str, Pipeline] = {"bare function": Pipeline(lambda: bare(1), 0, lambda: 0)}
    for label, decorate, sink in (
        ("raw OTel start_as_current_span", raw_decorator(tracer), raw_sink),
        ("raw OTel start_span+attach", attach_decorator(tracer), raw_sink),
        ("@glmtrace.stage", glmtrace.stage, glm_sink),
    ):
        one, three = chain(decorate)
        variants[label] = Pipeline(one, per_span, lambda s=sink: s.count)  # type: ignore[misc]
        variants[f"{label}, 3-deep"] = Pipeline(
            three,
            3 * per_span,
            lambda s=sink: s.count,  # type: ignore[misc]
        )

    def flush() -> None:
        provider.force_flush()
        glmtrace.force_flush(30)

    return variants, flush


def measure_pair(
    a_name: str,
    b_name: str,
    variants: dict[str, Pipeline],
    flush: Callable[[], None],
    calls: int,
    rounds: int,
) -> tuple[float, float, float]:
    a, b = variants[a_name], variants[b_name]
    flush()
    before = a.exported(), b.exported()
    a_ns, b_ns, ratio = paired_ns(a.call, b.call, calls, rounds, between=flush)
    # a and b export to different sinks (raw OTel's, glmtrace's); timeit makes ``calls`` each
    check_no_drops(a_name, a.spans_per_call * calls * rounds, a.exported() - before[0])
    check_no_drops(b_name, b.spans_per_call * calls * rounds, b.exported() - before[1])
    return a_ns, b_ns, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5_000, help="calls per block (<= 20,000)")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    rows: list[tuple[str, str, float]] = []
    ratios: dict[tuple[str, str], float] = {}

    uninit, _ = build(True, Discard())
    for name in ("@glmtrace.stage", "bare function"):
        rows.append(("not initialised", name, per_call_ns(uninit[name].call, args.calls)))

    for sampled in (True, False):
        sink = Discard()
        glmtrace.init(
            traces="none",
            logs="none",
            capture_logs=False,
            exporter=sink,
            sample_rate=1.0 if sampled else 0.0,
        )
        variants, flush = build(sampled, sink)
        label = "sampled" if sampled else "sampled out"
        rows.append(
            (label, "bare function", per_call_ns(variants["bare function"].call, args.calls))
        )
        for depth in ("", ", 3-deep"):
            for raw in ("raw OTel start_as_current_span", "raw OTel start_span+attach"):
                raw_ns, ours_ns, ratio = measure_pair(
                    raw + depth, "@glmtrace.stage" + depth, variants, flush, args.calls, args.rounds
                )
                ours = f"@glmtrace.stage{depth} (vs {raw[9:]})"
                rows += [(label, raw + depth, raw_ns), (label, ours, ours_ns)]
                ratios[(label, raw + depth)] = ratio
        glmtrace.shutdown()
        print(f"{label}: glmtrace.stats() = {glmtrace.stats()}; zero dropped in every block")

    table = {(mode, name): ns for mode, name, ns in rows}
    print(f"{'mode':<16} {'variant':<54} {'ns/call':>10}")
    for mode, name, ns in rows:
        print(f"{mode:<16} {name:<54} {ns:>10.0f}")
    for mode in ("sampled", "sampled out"):
        for raw in ("raw OTel start_as_current_span", "raw OTel start_span+attach"):
            one, three = ratios[(mode, raw)], ratios[(mode, raw + ", 3-deep")]
            print(f"{mode}: stage / {raw} = {one:.2f}x (1 level), {three:.2f}x (3-deep)")
    bare = table[("not initialised", "bare function")]
    uninit_ns = table[("not initialised", "@glmtrace.stage")]
    print(f"not initialised: overhead over a bare call = {uninit_ns - bare:.0f} ns")
    ours_out = statistics.median(
        table[("sampled out", f"@glmtrace.stage (vs {raw[9:]})")]
        for raw in ("raw OTel start_as_current_span", "raw OTel start_span+attach")
    )
    print(f"sampled out: overhead over a bare call = {ours_out - bare:.0f} ns")


if __name__ == "__main__":
    main()
