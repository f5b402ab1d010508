"""The embedded local store as a span sink: how fast it keeps up, and what a burst costs.

Each round runs the same traced loop twice in one process, alternating which goes first:
glmtrace writing to the local store (``traces="local"``), and glmtrace handing the same spans to
a discarding exporter (the baseline: span creation and the batch processor, no store). Printed:
spans created per second in both, the ratio, spans stored per second (written and committed,
counted by ``glmtrace.stats()`` and by reading the store back) and spans dropped.

    python bench/bench_store.py [--spans 20000] [--burst 50000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import glmtrace
from glmtrace._internal.store.database import Store


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def run(spans: int, store: Path | None) -> tuple[float, float, dict[str, int]]:
    """(spans created per second, wall seconds until all were stored or dropped, counts)."""
    if store is None:
        glmtrace.init(service_name="bench-store", exporter=Discard(), traces="none", logs="none")
    else:
        glmtrace.init(service_name="bench-store", traces="local", store=store, logs="none")
    before = glmtrace.stats().get("local", {})
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


def write_alone(spans: int, db: Path) -> float:
    """Spans per second the store exporter writes from finished spans (no creation timed)."""
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
    ratios, stored_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            db = Path(tmp) / f"r{r}.db"
            order = [None, db] if r % 2 else [db, None]
            rates: dict[bool, float] = {}
            for target in order:
                rate, wall, counts = run(args.spans, target)
                rates[target is not None] = rate
                if target is not None:
                    kept = len(Store(db).all_spans())
                    assert kept + counts.get("dropped", 0) == args.spans, (kept, counts)
                    stored_rates.append(kept / wall)
                    print(
                        f"round {r}: store {rate:,.0f} created/s, {kept:,} stored in "
                        f"{wall:.2f} s, {counts.get('dropped', 0):,} dropped"
                    )
            ratios.append(rates[False] / rates[True])
        alone = statistics.median(
            write_alone(args.spans, Path(tmp) / f"alone{r}.db") for r in range(args.rounds)
        )
        burst_db = Path(tmp) / "burst.db"
        rate, wall, counts = run(args.burst, burst_db)
        kept = len(Store(burst_db).all_spans())
    print(
        f"\ncreation cost with the store / without (median of {args.rounds}): "
        f"{statistics.median(ratios):.2f}x"
    )
    print(f"stored per second while created (median): {statistics.median(stored_rates):,.0f}")
    print(f"stored per second by the store exporter alone (median): {alone:,.0f}")
    print(
        f"burst of {args.burst:,}: created at {rate:,.0f}/s, {kept:,} stored, "
        f"{counts.get('dropped', 0):,} dropped (counted), {wall:.2f} s to shut down"
    )


if __name__ == "__main__":
    main()
