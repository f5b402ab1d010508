"""The batch span processor of the Python export path, bounded and counting what it drops."""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ..forks import after_fork_in_child
from ..otel_internals import queued
from ..stats import STATS
from .exporters import CountingExporter

MAX_QUEUE = 20_000  # spans waiting for export, per sink; the native path uses the same bound


class BoundedBatchProcessor(BatchSpanProcessor):
    """OpenTelemetry's batch processor, counting the spans it cannot queue.

    When its queue is full the SDK silently evicts the oldest span with a warning per span;
    here the new span is dropped instead, counted in ``stats()``, warned about once.
    """

    def __init__(self, sink: str, exporter: CountingExporter) -> None:
        super().__init__(
            exporter,
            max_queue_size=MAX_QUEUE,
            max_export_batch_size=512,
            schedule_delay_millis=500,
        )
        self.sink = sink
        self.counter = exporter
        self.closed = False
        self._bound = threading.Lock()
        after_fork_in_child(self._renew_lock)

    def _renew_lock(self) -> None:
        self._bound = threading.Lock()  # the parent's may be held by a thread gone here

    def pending(self) -> int:
        return queued(self)

    def abandon(self) -> int:
        """After shutdown's deadline: spans left behind, in an export or queued (counted once:
        the export, when it returns, counts nothing)."""
        return self.counter.abandon() + self.pending()

    def on_end(self, span: ReadableSpan) -> None:
        # After shutdown the SDK ignores the span; it was started under this processor's
        # runtime and ended after a re-init: still one that did not leave.
        with self._bound:  # two threads seeing one free place would both queue: the SDK's
            if self.closed or self.pending() >= MAX_QUEUE:  # deque then evicts one, uncounted
                STATS.add(self.sink, "dropped")
                return
            super().on_end(span)

    def shutdown(self) -> None:
        self.closed = True
        super().shutdown()  # type: ignore[no-untyped-call]


def dropped_by(processors: list[Any]) -> int:
    """Spans the sinks of ``processors`` have dropped so far."""
    counts = STATS.snapshot()
    return sum(counts.get(p.sink, {}).get("dropped", 0) for p in processors)
