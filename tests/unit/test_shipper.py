"""The background shipper: glmtrace's own thread stays out of the user's traces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import TracerProvider

from glmtrace._internal.logs.shipper import BackgroundShipper


@pytest.fixture
def threading_instrumented() -> Iterator[None]:
    ThreadingInstrumentor().instrument()
    yield
    ThreadingInstrumentor().uninstrument()


def test_shipper_thread_starts_outside_the_callers_trace(threading_instrumented: None) -> None:
    """Started by a log line inside a user span, the thread sees no span, and the network
    calls it makes for glmtrace are not instrumented (no client spans in any trace)."""
    seen: list[tuple[bool, bool]] = []

    def send(batch: list[Any]) -> None:
        span = trace.get_current_span().get_span_context()
        seen.append((span.is_valid, is_instrumentation_enabled()))

    shipper = BackgroundShipper("test", send)
    tracer = TracerProvider().get_tracer("user")
    with tracer.start_as_current_span("user"):
        shipper.submit(1)  # the first item starts the thread, from inside the span
        assert shipper.flush(10)
    assert shipper.shutdown(10)
    assert seen == [(False, False)]
