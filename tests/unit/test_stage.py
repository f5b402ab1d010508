"""@glmtrace.stage on functions, coroutines, generators, methods and classes."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

import glmtrace
from tests.conftest import Traced


def test_sync_function_span_and_signature(traced: Traced) -> None:
    """A decorated function keeps its signature and makes one child span."""

    def prep(text: str, *, lower: bool = True) -> str:
        return text.lower() if lower else text

    before = inspect.signature(prep)
    prep = glmtrace.stage("prep", team="nlp")(prep)
    assert inspect.signature(prep) == before
    with glmtrace.span("root"):
        assert prep("HeLLo") == "hello"
    span, root = traced.one("stage prep"), traced.one("root")
    assert span["parent_span_id"] == root["span_id"]
    assert span["trace_id"] == root["trace_id"]
    assert span["attributes"]["glmtrace.stage"] == "prep"
    assert span["attributes"]["team"] == "nlp"


def test_bare_decorator_uses_function_name(traced: Traced) -> None:
    """@glmtrace.stage without arguments names the span after the function."""

    @glmtrace.stage
    def tokenize() -> int:
        return 3

    assert tokenize() == 3
    assert traced.one("stage tokenize")["parent_span_id"] is None


def test_exception_recorded_and_reraised_untouched(traced: Traced) -> None:
    """A user exception sets status ERROR, adds an exception event, and propagates as is."""
    error = ValueError("bad input")

    @glmtrace.stage
    def fail() -> None:
        raise error

    with pytest.raises(ValueError) as info:
        fail()
    assert info.value is error
    span = traced.one("stage fail")
    assert span["status"] == "ERROR"
    (event,) = span["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "bad input"


async def test_async_function(traced: Traced) -> None:
    """Coroutines are awaited inside their span."""

    @glmtrace.stage
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    with glmtrace.span("root"):
        assert await fetch(1) == 2
    assert traced.one("stage fetch")["parent_span_id"] == traced.one("root")["span_id"]


def test_generator_span_covers_iteration_and_early_break(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    """A generator's span lasts until it is closed; an early break ends it cleanly."""

    inside: list[str | None] = []

    @glmtrace.stage
    def numbers() -> Iterator[int]:
        for i in range(10):
            logging.getLogger("gen").warning("item %d", i)
            inside.append(glmtrace.current_span_id())
            yield i

    with glmtrace.span("root") as root:
        for n in numbers():
            assert glmtrace.current_span_id() == root.span_id  # consumer keeps its own context
            if n == 2:
                break
    span = traced.one("stage numbers")
    assert inside == [span["span_id"]] * 3  # the generator body runs inside its own span
    assert span["parent_span_id"] == root.span_id
    assert span["status"] == "UNSET"
    assert "Failed to detach context" not in caplog.text


def test_generator_closed_from_another_context(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing a half-consumed generator outside its span raises no context error."""

    closed: list[bool] = []

    @glmtrace.stage
    def numbers() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    with glmtrace.span("root") as root:
        gen = numbers()
        next(gen)
    assert "stage numbers" not in [s["name"] for s in traced.spans()]  # still open
    gen.close()
    assert closed == [True]  # the close reached the user's generator
    span = traced.one("stage numbers")  # and ended the span
    assert span["parent_span_id"] == root.span_id
    assert span["status"] == "UNSET"  # closing early is not an error
    assert "Failed to detach context" not in caplog.text


async def test_async_generator_break_and_cancel(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    """Async generators: early break and task cancellation both end the span cleanly."""

    @glmtrace.stage
    async def ticks() -> AsyncIterator[int]:
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.01)

    iterating = asyncio.Event()

    async def consume(stop: int) -> None:
        agen = ticks()
        async for i in agen:
            if i == 3:
                iterating.set()
            if i == stop:
                break
        await agen.aclose()

    await consume(2)
    task = asyncio.create_task(consume(10_000))
    await iterating.wait()  # cancelled mid-iteration, inside the generator's span
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spans = [s for s in traced.spans() if s["name"] == "stage ticks"]
    assert len(spans) == 2
    assert all(s["status"] != "ERROR" for s in spans)
    assert any(s["attributes"].get("glmtrace.cancelled") for s in spans)
    assert "Failed to detach context" not in caplog.text


def test_method_and_class_with_invoke(traced: Traced) -> None:
    """Methods and classes exposing invoke() are traced; the class name is the default."""

    class Model:
        @glmtrace.stage
        def predict(self, x: int) -> int:
            return x * 3

    @glmtrace.stage
    class Cleaner:
        def invoke(self, envelope: dict[str, str]) -> dict[str, str]:
            return {**envelope, "payload": envelope["payload"].strip()}

    assert Model().predict(2) == 6
    assert Cleaner().invoke({"payload": " x "})["payload"] == "x"
    assert traced.one("stage predict")["attributes"]["code.function"].endswith("Model.predict")
    assert traced.one("stage Cleaner")["attributes"]["glmtrace.stage"] == "Cleaner"


def test_class_without_invoke_is_rejected() -> None:
    """Decorating a class with no invoke() fails at decoration time with a clear message."""
    with pytest.raises(TypeError, match="invoke"):

        @glmtrace.stage
        class Nothing:
            pass


def test_sampled_out_parent_skips_children(tmp_path: object) -> None:
    """With sample_rate=0 no span is recorded and stages still run."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    glmtrace.init(traces="none", logs="none", sample_rate=0.0, exporter=exporter)
    try:

        @glmtrace.stage
        def work() -> int:
            return 1

        with glmtrace.span("root"):
            assert work() == 1
        glmtrace.force_flush()
        assert exporter.get_finished_spans() == ()
    finally:
        glmtrace.shutdown()


def test_decorator_attributes_follow_the_limits_of_init(tmp_path: object) -> None:
    """Stages decorated before init() get init()'s redact_keys and length limit."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    @glmtrace.stage("lookup", ssn="123-45-6789", note="n" * 500)
    def lookup() -> None:
        pass

    exporter = InMemorySpanExporter()
    glmtrace.init(
        traces="none", logs="none", exporter=exporter, redact_keys=["ssn"], max_attribute_length=50
    )
    try:
        lookup()
        glmtrace.force_flush()
        (span,) = exporter.get_finished_spans()
        assert span.attributes is not None
        assert span.attributes["ssn"] == "[REDACTED]"
        assert len(str(span.attributes["note"])) < 100
    finally:
        glmtrace.shutdown()
