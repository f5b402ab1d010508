"""The embedded local store as a span sink: how fast it keeps up, and what a burst costs.

Each round runs the same traced loop three times in one process, rotating which goes first:
glmtrace writing to the local store (``traces="local"``) with the native writer (glmtrace_native,
when built) and with the Python writer (``GLMTRACE_NATIVE=0``), and glmtrace handing the same
spans to a discarding exporter (the baseline: span creation and the batch processor, no store).
Printed: spans created per second, the ratio to the baseline, spans stored per second (written
and committed, counted by ``glmtrace.stats()`` and by reading the store back) and spans dropped,
per writer; then each writer alone on finished spans, and a burst.

    python bench/bench_store.py [--spans 20000] [--burst 50000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import glmtrace
from glmtrace._internal.store import native_writer
from glmtrace._internal.store.database import Store

NATIVE = native_writer.unavailable() is None
WRITERS = ["native", "python"] if NATIVE else ["python"]


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def use(writer: str) -> None:
    """Make the next init() take ``writer`` ("native" or "python") for the local store."""
    os.environ["GLMTRACE_NATIVE"] = "1" if writer == "native" else "0"


def run(spans: int, store: Path | None) -> tuple[float, float, dict[str, int]]:
    """(spans created per second, wall seconds until all were stored or dropped, counts)."""
    before = glmtrace.stats().get("local", {})
    if store is None:
        glmtrace.init(service_name="bench-store", exporter=Discard(), traces="none", logs="none")
    else:
        glmtrace.init(service_name="bench-store", traces="local", store=store, logs="none")
    start = time.perf_counter()
    with glmtrace.span("root"):
        for i in range(spans - 1):
            with glmtrace.span("child", {"i": i}):
                pass
    created = time.perf_counter()
    glmtrace.shutdown()
    done = time.perf_counter()
    after = glmtrace.stats().get("local", {})
    counts = {k: v - before.get(k, 0) for k, v in after.items()}  # the counters are cumulative
    return spans / (created - start), done - start, counts


def write_alone(spans: int, db: Path, native: bool) -> float:
    """Spans per second a writer stores from finished spans (no creation timed): the Python
    store exporter, 512 a call, or the native writer from hand-off to committed."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from glmtrace._internal.export.exporters import StoreSpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    for i in range(spans):
        with tracer.start_as_current_span("child", attributes={"i": i, "thread.name": "main"}):
            pass
    finished = memory.get_finished_spans()
    if native:
        processor = native_writer.start(Store(db), 10.0, len(finished))
        assert processor is not None
        start = time.perf_counter()
        for span in finished:
            processor.on_end(span)
        assert processor.force_flush(60_000)
        rate = len(finished) / (time.perf_counter() - start)
        processor.shutdown()
        return rate
    exporter = StoreSpanExporter(Store(db))
    start = time.perf_counter()
    for i in range(0, len(finished), 512):
        assert exporter.export_lost(finished[i : i + 512]) == 0
    rate = len(finished) / (time.perf_counter() - start)
    exporter.shutdown()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--burst", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} (1 min); writers: {', '.join(WRITERS)}")
    ratios: dict[str, list[float]] = {w: [] for w in WRITERS}
    stored_rates: dict[str, list[float]] = {w: [] for w in WRITERS}
    dropped: dict[str, int] = dict.fromkeys(WRITERS, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            targets: list[str | None] = [None, *WRITERS]
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            rates: dict[str | None, float] = {}
            for writer in order:
                if writer is None:
                    rates[None] = run(args.spans, None)[0]
                    continue
                use(writer)
                db = Path(tmp) / f"r{r}-{writer}.db"
                rate, wall, counts = run(args.spans, db)
                rates[writer] = rate
                kept = len(Store(db).all_spans())
                assert kept + counts.get("dropped", 0) == args.spans, (kept, counts)
                assert counts.get("native", 0) == (writer == "native"), counts
                stored_rates[writer].append(kept / wall)
                dropped[writer] += counts.get("dropped", 0)
                print(
                    f"round {r}: {writer} writer {rate:,.0f} created/s, {kept:,} stored in "
                    f"{wall:.2f} s, {counts.get('dropped', 0):,} dropped"
                )
            for writer in WRITERS:
                ratios[writer].append(rates[None] / rates[writer])
        alone = {
            writer: statistics.median(
                write_alone(args.spans, Path(tmp) / f"alone{r}-{writer}.db", writer == "native")
                for r in range(args.rounds)
            )
            for writer in WRITERS
        }
        bursts = {}
        for writer in WRITERS:
            use(writer)
            burst_db = Path(tmp) / f"burst-{writer}.db"
            rate, wall, counts = run(args.burst, burst_db)
            bursts[writer] = (rate, wall, counts, len(Store(burst_db).all_spans()))
    print(f"\nmedians of {args.rounds} rounds; load now {os.getloadavg()[0]:.2f} (1 min)")
    for writer in WRITERS:
        rate, wall, counts, kept = bursts[writer]
        print(
            f"{writer} writer: creation cost with the store / without "
            f"{statistics.median(ratios[writer]):.2f}x; stored per second while created "
            f"{statistics.median(stored_rates[writer]):,.0f} ({dropped[writer]:,} dropped); "
            f"alone on finished spans {alone[writer]:,.0f}/s; burst of {args.burst:,}: created "
            f"at {rate:,.0f}/s, {kept:,} stored, {counts.get('dropped', 0):,} dropped (counted), "
            f"{wall:.2f} s to shut down"
        )


if __name__ == "__main__":
    main()
