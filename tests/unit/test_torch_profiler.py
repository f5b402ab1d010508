"""profile(): profiler events as spans under the right parents, bounded per window."""

from __future__ import annotations

import json
from typing import Any

import pytest

import glmtrace

torch = pytest.importorskip("torch")


def _run(steps: int, **options: Any) -> Any:
    x = torch.randn(64, 64)
    with glmtrace.profile(**options) as prof:
        for i in range(steps):
            with glmtrace.span("step", {"i": i}):
                with glmtrace.span("forward"):
                    y = x @ x
                with glmtrace.span("loss"):
                    (y + 1).sum()
            prof.step()
    return prof


def _glmtrace_parent(span: dict[str, Any], by_id: dict[str, Any]) -> dict[str, Any]:
    """The nearest ancestor of ``span`` that is not a converted op."""
    while span["name"].startswith("aten::"):
        span = by_id[span["parent_span_id"]]
    return span


def test_cpu_ops_under_the_active_span(traced: Any) -> None:
    """aten::mm is a child (via aten::matmul) of 'forward', aten::sum of 'loss'."""
    prof = _run(2, every=2, active=1)
    spans = traced.spans()
    by_id = {s["span_id"]: s for s in spans}
    mms = [s for s in spans if s["name"] == "aten::mm"]
    sums = [s for s in spans if s["name"] == "aten::sum"]
    assert len(mms) == 1  # one active step out of two
    assert prof.windows == 1
    assert _glmtrace_parent(mms[0], by_id)["name"] == "forward"
    assert by_id[mms[0]["parent_span_id"]]["name"] == "aten::matmul"
    assert {_glmtrace_parent(s, by_id)["name"] for s in sums} == {"loss"}
    assert mms[0]["attributes"]["glmtrace.torch.event.kind"] == "cpu_op"


def test_timestamps_fall_inside_the_parent(traced: Any) -> None:
    """Converted events sit on the epoch clock, inside their parent's time range."""
    _run(1, every=1, active=1)
    spans = traced.spans()
    by_id = {s["span_id"]: s for s in spans}
    ops = [s for s in spans if s["name"].startswith("aten::")]
    assert ops
    slack = 200_000  # 0.2 ms: the clock calibration is exact to a few microseconds
    for op in ops:
        parent = by_id[op["parent_span_id"]]
        assert parent["start_ns"] - slack <= op["start_ns"] <= op["end_ns"]
        assert op["end_ns"] <= parent["end_ns"] + slack


def test_schedule_profiles_active_out_of_every(traced: Any) -> None:
    """every=3, active=1 over 6 steps gives two windows, each with a summary span."""
    prof = _run(6, every=3, active=1)
    assert prof.windows == 2
    summaries = [s for s in traced.spans() if s["name"] == "torch.profile"]
    assert sorted(s["attributes"]["glmtrace.torch.profile.window"] for s in summaries) == [0, 1]


def test_bounded_with_summary(traced: Any) -> None:
    """Beyond max_spans the rest is only counted; the summary lists top events."""
    prof = _run(1, every=1, active=1, max_spans=3)
    spans = traced.spans()
    summary = next(
        s
        for s in spans
        if s["name"] == "torch.profile" and s["attributes"]["glmtrace.torch.profile.window"] == 0
    )
    attrs = summary["attributes"]
    assert attrs["glmtrace.torch.profile.spans"] == 3
    assert attrs["glmtrace.torch.profile.aggregated"] == attrs["glmtrace.torch.profile.events"] - 3
    top = json.loads(attrs["glmtrace.torch.profile.top"])
    assert top and {"name", "count", "total_ms", "kind"} <= set(top[0])
    converted = [s for s in spans if s["attributes"].get("glmtrace.torch.event.kind")]
    assert all(r["spans"] <= 3 for r in prof.results)  # the last window closes at exit
    assert len(converted) == sum(r["spans"] for r in prof.results)
    assert prof.results[0]["aggregated"] > 0


def test_bad_schedule_is_a_config_error() -> None:
    """active > every is refused at the call, naming the fix."""
    with pytest.raises(glmtrace.ConfigError, match="active <= every"):
        glmtrace.profile(every=1, active=2)


def test_no_op_before_init() -> None:
    """Before init() profile() runs nothing and step() is free."""
    with glmtrace.profile(every=1, active=1) as prof:
        prof.step()
    assert prof.windows == 0


def test_cuda_span_falls_back_to_cpu(traced: Any) -> None:
    """Without CUDA, cuda_span is a CPU span that says so; children nest under it."""
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: scripts/gpu_check.py covers the GPU path")
    with (
        glmtrace.span("step"),
        glmtrace.cuda_span("forward", {"layer": 1}),
        glmtrace.span("inner"),
    ):
        torch.ones(2) * 2
    spans = {s["name"]: s for s in traced.spans()}
    forward = spans["forward"]
    assert forward["attributes"]["glmtrace.clock"] == "cpu"
    assert "glmtrace.gpu.duration_ms" not in forward["attributes"]
    assert forward["attributes"]["glmtrace.cpu.duration_ms"] >= 0
    assert forward["attributes"]["layer"] == 1
    assert forward["parent_span_id"] == spans["step"]["span_id"]
    assert spans["inner"]["parent_span_id"] == forward["span_id"]


def test_cuda_resolver_resolves_later(traced: Any) -> None:
    """The resolver ends a span once its end event completes, with the GPU duration."""
    from glmtrace._internal.runtime import DEFAULT
    from glmtrace._internal.torch import cuda

    class FakeEvent:
        def __init__(self) -> None:
            self.done = False

        def query(self) -> bool:
            return self.done

        def elapsed_time(self, other: Any) -> float:
            return 5.0

    with glmtrace.span("step"):
        span = DEFAULT.start_span("gpu work")
    assert span is not None
    begin, end = FakeEvent(), FakeEvent()
    cpu_end = span.start_ns + 1_000
    cuda.RESOLVER.submit(cuda._Pending(span, begin, end, cpu_end, None))
    assert [s["name"] for s in traced.spans()] == ["step"]  # not complete yet: not exported
    end.done = True
    assert cuda.resolve_pending(timeout=5)
    gpu = traced.one("gpu work")
    assert gpu["attributes"]["glmtrace.clock"] == "gpu"
    assert gpu["attributes"]["glmtrace.gpu.duration_ms"] == 5.0
    assert gpu["end_ns"] - gpu["start_ns"] == 5_000_000  # max(CPU, GPU time)


class _Event:
    """A fake CUDA event: complete when ``done`` says so, 5 ms long."""

    def __init__(self, done: bool = False) -> None:
        self.done = done

    def query(self) -> bool:
        return self.done

    def elapsed_time(self, other: Any) -> float:
        return 5.0


def _pending_cuda_span() -> Any:
    from glmtrace._internal.runtime import DEFAULT
    from glmtrace._internal.torch import cuda

    with glmtrace.span("step"):
        span = DEFAULT.start_span("gpu work")
    assert span is not None
    end = _Event()
    cuda.RESOLVER.submit(cuda._Pending(span, _Event(True), end, span.start_ns + 1_000, None))
    return end


def test_force_flush_waits_for_pending_cuda_spans(traced: Any) -> None:
    """force_flush reports False while a cuda_span waits for its event; True once exported."""
    end = _pending_cuda_span()
    assert glmtrace.force_flush(0.2) is False
    end.done = True
    assert glmtrace.force_flush(5) is True
    assert traced.one("gpu work")["attributes"]["glmtrace.gpu.duration_ms"] == 5.0


def test_shutdown_exports_pending_cuda_spans_unresolved(traced: Any) -> None:
    """A span whose event never completes is exported at shutdown with CPU time, and counted."""
    _pending_cuda_span()
    before = glmtrace.stats().get("cuda-resolver", {}).get("unresolved", 0)
    glmtrace.shutdown(0.3)
    spans = [s for s in traced.exporter.get_finished_spans() if s.name == "gpu work"]
    assert len(spans) == 1
    assert spans[0].attributes["glmtrace.gpu.unresolved"] is True
    assert glmtrace.stats()["cuda-resolver"]["unresolved"] == before + 1


def test_force_flush_waits_for_profiler_windows(traced: Any) -> None:
    """force_flush waits for windows the converter has not converted yet."""
    import threading

    from glmtrace._internal.torch.kineto import Window
    from glmtrace._internal.torch.profiler import CONVERTER

    release = threading.Event()

    class Slow:
        def convert_window(self, window: Window) -> None:
            release.wait(10)
            with glmtrace.span("converted"):
                pass

    CONVERTER.submit(
        Window(index=0, events=[], markers=[], timeline=[], fallback=None, max_spans=1), Slow()
    )
    assert glmtrace.force_flush(0.2) is False
    release.set()
    assert glmtrace.force_flush(5) is True
    assert traced.one("converted")


def test_cuda_span_in_a_child_forked_after_cuda_started_times_on_the_cpu(traced: Any) -> None:
    """Where CUDA cannot be used (a bad fork), cuda_span is a CPU span instead of failing."""
    import types

    from glmtrace._internal.torch import cuda

    class BadForkCuda:
        def is_available(self) -> bool:
            return True  # torch says so in a bad fork: it counts devices without CUDA

        def _is_in_bad_fork(self) -> bool:
            return True

        def current_stream(self, device: Any = None) -> Any:
            raise RuntimeError("Cannot re-initialize CUDA in forked subprocess")

    saved = list(cuda._available)
    cuda._available[:] = []
    try:
        with (
            glmtrace.span("step"),
            cuda.CudaSpan(types.SimpleNamespace(cuda=BadForkCuda()), "forward", {}, None),
        ):
            pass
    finally:
        cuda._available[:] = saved
    assert traced.one("forward")["attributes"]["glmtrace.clock"] == "cpu"


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: threads and fork
def test_a_forked_child_forgets_the_parents_pending_work() -> None:
    """After fork the child holds none of the parent's CUDA spans or profiler windows."""
    import os

    from glmtrace._internal.torch import cuda, profiler

    read, write = os.pipe()
    cuda.RESOLVER._pending.append(object())  # type: ignore[arg-type]
    profiler.TIMELINE.sessions += 1
    try:
        pid = os.fork()
        if pid == 0:  # the child: report and leave at once
            state = (cuda.RESOLVER.pending(), profiler.TIMELINE.sessions, cuda._available)
            os.write(write, repr(state).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 100).decode() == "(0, 0, [])"
    finally:
        cuda.RESOLVER._pending.clear()
        profiler.TIMELINE.sessions -= 1
        os.close(read)
        os.close(write)


def test_shutdown_counts_profiler_windows_left_unconverted(traced: Any) -> None:
    """Windows still queued when shutdown's budget runs out are counted as dropped events."""
    import threading

    from glmtrace._internal.torch.kineto import Window
    from glmtrace._internal.torch.profiler import CONVERTER

    release = threading.Event()

    class Stuck:
        def convert_window(self, window: Window) -> None:
            release.wait(10)

    def window(events: int) -> Window:
        return Window(
            index=0, events=[None] * events, markers=[], timeline=[], fallback=None, max_spans=1
        )

    before = glmtrace.stats().get("torch-profiler", {}).get("dropped", 0)
    try:
        CONVERTER.submit(window(1), Stuck())  # being converted
        CONVERTER.submit(window(7), Stuck())  # waiting
        glmtrace.shutdown(0.3)
        assert glmtrace.stats()["torch-profiler"]["dropped"] == before + 7
    finally:
        release.set()
        CONVERTER.wait(5)


def test_clocks_align_on_the_narrowest_marker() -> None:
    """A marker bracket stretched by the scheduler does not shift the window's events: each
    marker event pairs with its own bracket, and the narrowest one sets the offset."""
    from glmtrace._internal.torch.kineto import MARKER, _Ev, _offset

    name = f"{MARKER}7"
    events = [
        _Ev("cpu_op", name, 0, 10, 1, None, False),  # at epoch 1,000-1,010
        _Ev("cpu_op", name, 4_100, 4_110, 1, None, False),  # preempted around: 5,000-9,000
    ]
    offset, threads = _offset(events, [(7, 1_000, 1_010), (7, 5_000, 9_000)])
    assert offset == 1_000
    assert threads == {1: 7}


def test_every_event_of_a_profiled_step_is_exported_none_dropped(traced: Any) -> None:
    """Under max_spans, each converted event of a training-like step (forward, loss,
    backward, optimizer) arrives as one span with its own id, and nothing is counted dropped."""
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 32)
    with glmtrace.profile(every=1, active=1, max_spans=100_000) as prof:
        with glmtrace.span("step"):
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
        prof.step()
    assert glmtrace.force_flush(10)
    events = sum(r["events"] for r in prof.results)
    assert events > 20 and sum(r["aggregated"] for r in prof.results) == 0
    converted = [s for s in traced.spans() if s["attributes"].get("glmtrace.torch.event.kind")]
    assert len(converted) == events == sum(r["spans"] for r in prof.results)
    assert len({s["span_id"] for s in converted}) == events
    stats = glmtrace.stats()
    assert not any(counts.get("dropped") for counts in stats.values()), stats


def test_ops_find_their_spans_in_the_local_store(tmp_path: Any) -> None:
    """The embedded default, as a user runs it (on the native queue when the extension is
    built): each op is stored under the glmtrace span it ran in, and the spans made after the
    profiler closed are stored too."""
    from glmtrace._internal.store.database import Store

    store = tmp_path / "g.db"
    glmtrace.init(service_name="profiled", traces="local", logs="none", store=store)
    try:
        _run(2, every=2, active=1)
        with glmtrace.span("after"):
            pass
        assert glmtrace.force_flush(10)
    finally:
        glmtrace.shutdown()
    spans: list[Any] = Store(store).all_spans()
    by_id = {s["span_id"]: s for s in spans}
    mms = [s for s in spans if s["name"] == "aten::mm"]
    assert len(mms) == 1
    assert _glmtrace_parent(mms[0], by_id)["name"] == "forward"
    sums = [s for s in spans if s["name"] == "aten::sum"]
    assert {_glmtrace_parent(s, by_id)["name"] for s in sums} == {"loss"}
    assert [s["name"] for s in spans].count("after") == 1
