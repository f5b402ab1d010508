"""A stuck exporter never blocks the caller; every span it cannot take is counted."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

import glmtrace


class Stuck(SpanExporter):
    """An exporter that hangs like a black-holed collector until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait()
        return SpanExportResult.FAILURE


def test_full_queue_drops_are_counted_and_shutdown_gives_up() -> None:
    """25,000 spans into a stuck exporter: the caller finishes, drops counted, shutdown returns."""
    stuck = Stuck()
    before = glmtrace.stats().get("custom", {}).get("dropped", 0)
    glmtrace.init(traces="none", logs="none", exporter=stuck)
    try:

        @glmtrace.stage
        def step(i: int) -> int:
            return i

        assert sum(step(i) for i in range(25_000)) == sum(range(25_000))
        assert glmtrace.shutdown(timeout=0.5) is False
        dropped = glmtrace.stats()["custom"]["dropped"] - before
        # The batch the exporter is stuck on counts too: nothing is lost silently.
        assert dropped == 25_000
    finally:
        stuck.release.set()


def test_exporter_errors_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A collector that stays down logs its export error once a minute, not once per batch."""
    glmtrace.init(traces="none", logs="none")
    try:
        noisy = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")
        # The limit is per message and process-wide: a message no earlier test logged, so
        # that the first line is this test's to see whatever ran before.
        message = f"Failed to export traces to %s ({uuid.uuid4().hex})"
        with caplog.at_level(logging.WARNING):
            for _ in range(50):
                noisy.error(message, "127.0.0.1:9")
        assert caplog.text.count("Failed to export traces") == 1
    finally:
        glmtrace.shutdown()
