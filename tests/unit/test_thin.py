"""The thin span path: glmtrace's own spans are made without an SDK span, and still behave as one
for OpenTelemetry code that finds them current."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

import glmtrace
from glmtrace._internal import native_export, provider
from glmtrace._internal.runtime import DEFAULT
from tests.unit.test_native_export import _init, receiver  # noqa: F401  (a fixture)


class _Starts(SpanProcessor):
    """Sees spans start (as the DataLoader batch adopter does)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        parent = span.parent
        self.started.append((span.name, parent.span_id if parent is not None else None))

    def on_end(self, span: ReadableSpan) -> None:
        pass


def test_glmtrace_spans_are_not_sdk_spans(traced: Any) -> None:
    """What is current inside a stage, span() and inference() is glmtrace's thin span."""

    @glmtrace.stage
    def work() -> Any:
        return trace.get_current_span()

    with glmtrace.span("outer"):
        outer = trace.get_current_span()
        with glmtrace.inference("m"):
            call = trace.get_current_span()
        inner = work()
    for span in (outer, call, inner):
        assert span.get_span_context().is_valid
        assert not isinstance(span, SdkSpan)
    assert {s["name"] for s in traced.spans()} == {"outer", "chat m", "stage work"}


def test_opentelemetry_code_can_annotate_the_current_glmtrace_span(traced: Any) -> None:
    """An instrumentation sets attributes, events, links and status on the current span through
    the API; values are coerced and redacted like glmtrace's own."""
    with glmtrace.span("target"):
        current = trace.get_current_span()
        current.set_attribute("http.status_code", 503)
        current.set_attributes({"db.password": "hunter2", "shape": [1, "a"], "none": None})
        current.add_event("retry", {"attempt": 2})
        current.add_link(trace.SpanContext(7, 8, True), {"why": "fan-in"})
        current.record_exception(ValueError("boom"))
        current.set_status(Status(StatusCode.ERROR, "failed"))
        current.update_name("renamed")
    span = traced.one("renamed")
    assert span["attributes"]["http.status_code"] == 503
    assert span["attributes"]["db.password"] == "[REDACTED]"
    assert span["attributes"]["shape"] == '[1, "a"]'
    assert "none" not in span["attributes"]
    assert [e["name"] for e in span["events"]] == ["retry", "exception"]
    assert span["events"][1]["attributes"]["exception.type"] == "ValueError"
    assert span["links"][0]["span_id"] == format(8, "016x")
    assert (span["status"], span["status_message"]) == ("ERROR", "failed")


def test_an_ended_span_ignores_late_calls_and_ok_is_final(traced: Any) -> None:
    """As the SDK span: nothing changes after end(); an OK status is not overwritten."""
    with glmtrace.span("s"):
        current = trace.get_current_span()
        current.set_status(StatusCode.OK)
        current.set_status(StatusCode.ERROR, "later")
    current.set_attribute("late", 1)
    current.add_event("late")
    current.end()
    span = traced.one("s")
    assert span["status"] == "OK"
    assert "late" not in span["attributes"] and not span["events"]
    assert not current.is_recording()


def test_events_beyond_the_span_limit_are_dropped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """OTEL_SPAN_EVENT_COUNT_LIMIT bounds a thin span's events as it bounds an SDK span's."""
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "3")
    exporter = InMemorySpanExporter()
    glmtrace.init(
        service_name="limits", traces="none", logs="none", exporter=exporter, store=tmp_path / "g"
    )
    try:
        with glmtrace.span("busy") as handle:
            for i in range(10):
                handle.add_event(f"e{i}")
        assert glmtrace.force_flush(5)
    finally:
        glmtrace.shutdown()
    (busy,) = exporter.get_finished_spans()
    assert [e.name for e in busy.events] == ["e7", "e8", "e9"]  # the SDK keeps the last
    assert busy.dropped_events == 7


def test_processors_that_watch_starts_see_glmtrace_spans(traced: Any) -> None:
    """A processor with an on_start sees each glmtrace span start, with its parent."""
    watcher = _Starts()
    provider.GLOBAL.provider.add_span_processor(watcher)  # type: ignore[attr-defined]
    with glmtrace.span("parent"):
        parent_id = trace.get_current_span().get_span_context().span_id
        child = DEFAULT.start_span("child")
        assert child is not None
        child.end()
    assert watcher.started == [("parent", None), ("child", parent_id)]


def _sampled_at(rate: float, tmp_path: Any) -> InMemorySpanExporter:
    """glmtrace initialised with ``sample_rate=rate``, exporting into memory only."""
    exporter = InMemorySpanExporter()
    glmtrace.init(
        service_name="s",
        traces="none",
        logs="none",
        store=tmp_path / "g.db",
        exporter=exporter,
        sample_rate=rate,
    )
    return exporter


def test_sampled_out_roots_make_no_span(tmp_path: Any) -> None:
    """sample_rate=0: no root (and so no child) is recorded, and nothing is current."""
    exporter = _sampled_at(0.0, tmp_path)
    try:
        with glmtrace.span("root") as handle:
            assert handle.trace_id is None
            assert not trace.get_current_span().get_span_context().is_valid
            assert DEFAULT.start_span("child") is None
        assert glmtrace.force_flush(5)
        assert exporter.get_finished_spans() == ()
    finally:
        glmtrace.shutdown()


def test_span_contexts_built_as_tuples_equal_the_constructed_ones() -> None:
    """emitter.new_span_context skips SpanContext's checks; it must make the same object."""
    from opentelemetry.trace import TraceFlags, TraceState

    from glmtrace._internal.emitter import new_span_context

    state = TraceState([("vendor", "v1")])
    for flags in (TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)):
        made = new_span_context(2**127 + 5, 2**63 + 7, flags, state)
        expected = trace.SpanContext(2**127 + 5, 2**63 + 7, False, flags, state)
        assert made == expected and type(made) is type(expected)
        assert (made.trace_id, made.span_id, made.is_remote) == (2**127 + 5, 2**63 + 7, False)
        assert made.is_valid and made.trace_flags == flags and made.trace_state == state
    assert new_span_context(1, 2, TraceFlags(1)) == trace.SpanContext(1, 2, False, TraceFlags(1))


@pytest.mark.parametrize("rate", [0.3, 0.7])
def test_a_ratio_sampled_trace_is_kept_or_dropped_whole(tmp_path: Any, rate: float) -> None:
    """With sample_rate between 0 and 1 the decision is the root's: a dropped root's children
    and grandchildren are dropped too, never recorded as roots of traces of their own."""
    exporter = _sampled_at(rate, tmp_path)
    recording: dict[int, bool] = {}  # each root: what is_recording() said of it
    try:
        for _ in range(200):
            with glmtrace.span("root"), glmtrace.span("child"), glmtrace.span("grandchild"):
                root = trace.get_current_span()
                context = root.get_span_context()
                recording[context.trace_id] = root.is_recording()
        assert glmtrace.force_flush(5)
    finally:
        glmtrace.shutdown()
    by_trace: dict[int, list[str]] = {}
    for span in exporter.get_finished_spans():
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span.name)
    assert by_trace  # some were kept at either rate
    assert all(sorted(names) == ["child", "grandchild", "root"] for names in by_trace.values())
    # What is current in a dropped trace says so, as the SDK's non-recording span does.
    assert {tid for tid, on in recording.items() if on} == set(by_trace)


def test_a_forked_child_draws_span_ids_of_its_own() -> None:
    """Span ids are drawn ahead in bulk: a forked child must not take the ones its parent
    drew (parent and child would give their next spans the same id)."""
    script = """
import os
from glmtrace._internal.emitter import span_id
span_id()  # the parent draws a batch ahead
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, str(span_id()).encode())
    os._exit(0)
os.close(write)
child = int(os.read(read, 64))
os.waitpid(pid, 0)
print(child, span_id())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    child, parent = result.stdout.split()
    assert child != parent


def test_opentelemetry_context_api_works_on_what_a_stage_makes_current(traced: Any) -> None:
    """Inside a stage the current context is a plain mapping (cheaper than a Context): every
    OpenTelemetry context, baggage and propagation call still reads and derives from it."""
    from opentelemetry import baggage, context, propagate

    token = context.attach(baggage.set_baggage("tenant", "t1"))
    try:

        @glmtrace.stage
        def work() -> tuple[Any, ...]:
            current = context.get_current()
            derived = context.set_value("k", 1)
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            return (
                trace.get_current_span().get_span_context(),
                baggage.get_baggage("tenant"),
                context.get_value("k", derived),
                type(derived),
                Context(current) == current,
                carrier,
            )

        span_ctx, tenant, value, derived_type, copies, carrier = work()
    finally:
        context.detach(token)
    assert (tenant, value, derived_type, copies) == ("t1", 1, Context, True)
    assert carrier["traceparent"].split("-")[2] == format(span_ctx.span_id, "016x")
    assert carrier["baggage"] == "tenant=t1"
    assert traced.one("stage work")["span_id"] == format(span_ctx.span_id, "016x")


needs_native = pytest.mark.skipif(
    not native_export.available() or native_export.forced_off(),
    reason="native path not built or forced off",
)


@needs_native
def test_native_counters_reach_stats_without_a_flush(
    receiver: tuple[str, list[str]],  # noqa: F811  (the imported fixture)
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thin spans reach the extension without NativeSpanProcessor.submit(): they still read
    its counters into stats() every SYNC_EVERY spans, as submit() does."""
    synced: list[int] = []
    sync = native_export.NativeSpanProcessor.sync_stats

    def counted(self: Any) -> None:
        synced.append(1)
        sync(self)

    monkeypatch.setattr(native_export.NativeSpanProcessor, "sync_stats", counted)
    _init(receiver[0], tmp_path)
    try:

        @glmtrace.stage
        def work() -> None:
            pass

        for _ in range(2 * native_export.SYNC_EVERY):
            work()
        assert len(synced) == 2
    finally:
        glmtrace.shutdown()


@needs_native
def test_processors_that_only_start_or_watch_keep_the_native_route(
    receiver: tuple[str, list[str]],  # noqa: F811  (the imported fixture)
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A processor acting only at start (its on_end the SDK's, a docstring) and a
    SpanObserver (the profiler's timeline) see every span, and spans still go straight into
    the native queue: a DataLoader or a profile() once sent every later span of the process
    down the ReadableSpan path. An observer that raises costs no span."""
    from opentelemetry.sdk.trace import SpanProcessor

    from glmtrace._internal.emitter import SpanObserver

    generic: list[int] = []  # spans that took the ReadableSpan path into the queue
    on_end = native_export.NativeSpanProcessor.on_end

    def counted(self: Any, span: Any) -> None:
        generic.append(1)
        on_end(self, span)

    class Starts(SpanProcessor):
        started = 0

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            Starts.started += 1

    seen: list[str] = []

    class Watches(SpanObserver):
        def observe(self, attributes: Any, start_ns: int, end_ns: int, context: Any) -> None:
            seen.append(format(context.span_id, "016x"))

    class Breaks(SpanObserver):
        def observe(self, attributes: Any, start_ns: int, end_ns: int, context: Any) -> None:
            raise RuntimeError("an observer's bug")

    monkeypatch.setenv("GLMTRACE_STRICT", "0")  # reported, as for a user

    monkeypatch.setattr(native_export.NativeSpanProcessor, "on_end", counted)
    _init(receiver[0], tmp_path)
    try:
        provider = trace.get_tracer_provider()
        provider.add_span_processor(Starts())  # type: ignore[attr-defined]
        provider.add_span_processor(Breaks())  # type: ignore[attr-defined]
        provider.add_span_processor(Watches())  # type: ignore[attr-defined]
        ids = []
        for n in range(100):
            with glmtrace.span(f"span {n}"):
                ids.append(glmtrace.current_span_id())
        assert glmtrace.force_flush(10)
        assert generic == []
        assert sorted(receiver[1]) == sorted(f"span {n}" for n in range(100))
        assert Starts.started == len(ids)
        assert seen == ids
    finally:
        glmtrace.shutdown()


def test_span_ids_never_run_out_between_threads() -> None:
    """Four threads taking span ids while the pool refills: a refill once extended the shared
    list and then popped from it, and another thread had emptied it in between (IndexError,
    reported on the glmtrace logger: the span was lost)."""
    import sys
    import threading

    from glmtrace._internal import ids

    failures: list[BaseException] = []
    taken: list[list[int]] = [[] for _ in range(4)]

    def take(mine: list[int]) -> None:
        for _ in range(300_000):
            try:
                mine.append(ids.span_ids.pop())
            except IndexError:
                try:
                    mine.append(ids.refill_span_ids())
                except IndexError as exc:
                    failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=take, args=(mine,)) for mine in taken]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    every = [i for mine in taken for i in mine]
    assert len(every) == 1_200_000 and 0 not in every
    assert len(set(every)) == len(every)  # no id handed to two spans
