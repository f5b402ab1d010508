"""``profile(every=N, active=K)``: torch.profiler on a schedule, its events as spans.

The profiler runs K steps out of every N (one warm-up step before each window when there is
room). At the end of each window torch hands over the events; they are converted on a
background thread (:mod:`.kineto`), so the training thread only pays for torch's own
collection. While a session is open a span processor records every glmtrace span that ends
(thread, start, end), which is how each event finds the span that was active when it ran.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span as SdkSpan

from ..emitter import Emitter, SpanObserver, emitter_for
from ..errors import ConfigError
from ..forks import after_fork_in_child
from ..guard import internal_errors, report
from ..runtime import DEFAULT
from ..stats import STATS
from . import keys, require_torch
from .kineto import MARKER, TimelineEntry, Window, convert

_TIMELINE_MAX = 200_000
_MARKS = 3  # markers per window start: one preempted bracket would misalign the window


class Timeline(SpanObserver):
    """Remembers finished spans while a profiling session is open; idle otherwise."""

    def __init__(self) -> None:
        self.sessions = 0
        self.entries: collections.deque[TimelineEntry] = collections.deque(maxlen=_TIMELINE_MAX)

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        pass

    def observe(
        self,
        attributes: Mapping[str, Any],
        start_ns: int,
        end_ns: int,
        context: trace.SpanContext,
    ) -> None:
        if not self.sessions:
            return
        if keys.GPU_DURATION_MS in attributes:
            return  # a cuda_span: noted with its CPU interval at exit (see note())
        if attributes.get(keys.WORKER_PID, os.getpid()) != os.getpid():
            return  # a DataLoader worker's span, exported here: its thread ids are not ours
        ident = attributes.get("thread.id")
        if isinstance(ident, int):
            self.entries.append((ident, start_ns, end_ns, context))

    def note(self, start_ns: int, end_ns: int, ctx: trace.SpanContext) -> None:
        """Record a span of the calling thread now, before it is exported (cuda_span)."""
        if self.sessions:
            self.entries.append((threading.get_ident(), start_ns, end_ns, ctx))

    def snapshot(self, since_ns: int) -> list[TimelineEntry]:
        """Entries that may contain events after ``since_ns``; older ones are forgotten."""
        entries = list(self.entries)
        kept = [e for e in entries if e[2] >= since_ns]
        if len(kept) < len(entries):
            self.entries = collections.deque(kept, maxlen=_TIMELINE_MAX)
        return kept


TIMELINE = Timeline()
_installed: weakref.WeakSet[Any] = weakref.WeakSet()


def _install_timeline(em: Emitter) -> None:
    multi = em.processor
    if multi not in _installed:
        multi.add_span_processor(TIMELINE)
        _installed.add(multi)


class Converts(Protocol):
    """What the converter thread calls for one window (a :class:`Profile`)."""

    def convert_window(self, window: Window) -> None: ...


class _Converter:
    """One background thread converting windows; at most two windows wait.

    A part of the runtime: ``force_flush()`` and ``shutdown()`` wait for the windows handed
    over so far; at shutdown the events of windows still waiting after the budget are
    counted as dropped.
    """

    name = "torch-profiler"

    def __init__(self) -> None:
        self.jobs: queue.Queue[tuple[Window, Converts] | None] = queue.Queue(maxsize=2)
        self.thread: threading.Thread | None = None
        self._registered = False

    def submit(self, window: Window, session: Converts) -> bool:
        if not self._registered:
            DEFAULT.register(self)
            self._registered = True
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._run, name="glmtrace-profiler", daemon=True)
            self.thread.start()
        try:
            self.jobs.put_nowait((window, session))
        except queue.Full:
            STATS.add(self.name, "dropped", len(window.events))
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """Wait until the windows handed over so far are converted; True when they are."""
        deadline = time.monotonic() + timeout
        while self.jobs.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self.jobs.unfinished_tasks

    def flush(self, timeout: float) -> bool:
        """The runtime's flush; at shutdown, windows not converted in time are counted dropped.

        Half the budget: the exporters need the rest.
        """
        done = self.wait(timeout / 2)
        if not done and DEFAULT.tracer is None:
            while True:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    STATS.add(self.name, "dropped", len(job[0].events))
                self.jobs.task_done()
        return done

    def _after_fork(self) -> None:
        # The parent's thread is gone and its queue's lock may be held: start empty.
        self.jobs = queue.Queue(maxsize=2)
        self.thread = None

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                with internal_errors("profiler conversion"):
                    if job is not None:
                        job[1].convert_window(job[0])
            finally:
                self.jobs.task_done()


CONVERTER = _Converter()
after_fork_in_child(CONVERTER._after_fork)


def _timeline_after_fork() -> None:
    # A forked child is in none of the parent's profiling sessions.
    TIMELINE.sessions = 0
    TIMELINE.entries = collections.deque(maxlen=_TIMELINE_MAX)


after_fork_in_child(_timeline_after_fork)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's notices about what profile() asks for on purpose.

    Each cycle clearing the last one's events is what we want; no warm-up is what
    ``every == active`` means.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Profiler clears events", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*won't be using warmup", category=UserWarning)
        yield


class Profile:
    """A profiling session: use as a context manager and call :meth:`step` once per step."""

    def __init__(
        self, every: int, active: int, record_shapes: bool, max_spans: int, top: int
    ) -> None:
        if every < 1 or active < 1 or active > every:
            raise ConfigError(
                f"profile(every={every}, active={active}): need 1 <= active <= every, "
                "e.g. profile(every=100, active=2)"
            )
        if max_spans < 0:
            raise ConfigError(f"profile(max_spans={max_spans}) must be >= 0, e.g. 2000")
        self.every, self.active = every, active
        self.record_shapes, self.max_spans, self.top = record_shapes, max_spans, top
        self.windows = 0
        self.results: list[dict[str, Any]] = []
        self._prof: Any = None
        self._torch: Any = None
        self._markers: list[tuple[int, int, int]] = []
        self._fallback: trace.SpanContext | None = None
        self._window_start = 0
        self._em: Emitter | None = None

    # ------------------------------------------------------------- training thread
    def __enter__(self) -> Profile:
        torch = require_torch()
        self._torch = torch
        em = emitter_for(DEFAULT.tracer)
        if em is None:
            return self  # before init(): profiling would produce nothing
        try:
            self._em = em
            _install_timeline(em)
            prof = torch.profiler
            activities = [prof.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(prof.ProfilerActivity.CUDA)
            warmup = 1 if self.every - self.active >= 1 else 0
            with _quiet():
                schedule = prof.schedule(
                    wait=self.every - self.active - warmup, warmup=warmup, active=self.active
                )
            self._prof = prof.profile(
                activities=activities,
                schedule=schedule,
                on_trace_ready=self._ready,
                record_shapes=self.record_shapes,
            )
            TIMELINE.sessions += 1
            with _quiet():
                self._prof.__enter__()
            self._window_begins()
        except Exception as exc:
            report("profile start", exc)
            self._prof = None
        return self

    def step(self) -> None:
        """Mark the end of a step (like ``torch.profiler.profile.step``)."""
        if self._prof is None:
            return
        with internal_errors("profile step"), _quiet():
            self._prof.step()
            self._window_begins()

    def _recording(self) -> bool:
        action = getattr(self._prof, "current_action", None)
        return action is not None and "RECORD" in action.name

    def _window_begins(self) -> None:
        """While recording: a clock marker for this thread, and the fallback parent."""
        if not self._recording():
            return
        if not self._markers:
            self._fallback = trace.get_current_span().get_span_context()
            self._window_start = time.time_ns()
        self._mark()

    def _mark(self) -> None:
        """Clock markers: the converter aligns the clocks on the narrowest of them."""
        ident = threading.get_ident()
        name = f"{MARKER}{ident}"
        for _ in range(_MARKS):
            before = time.time_ns()
            with self._torch.profiler.record_function(name):
                pass
            self._markers.append((ident, before, time.time_ns()))

    def _ready(self, prof: Any) -> None:
        """torch's on_trace_ready: hand the window over to the converter thread."""
        try:
            events = prof.profiler.kineto_results.events()
            window = Window(
                index=self.windows,
                events=events,
                markers=self._markers,
                timeline=[],
                fallback=self._fallback,
                max_spans=self.max_spans,
                top=self.top,
                record_shapes=self.record_shapes,
                start_ns=self._window_start,
                end_ns=time.time_ns(),
            )
            self.windows += 1
            self._markers = []
            window.timeline = TIMELINE.snapshot(window.start_ns)
            CONVERTER.submit(window, self)
        except Exception as exc:
            report("profile window", exc)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        prof, self._prof = self._prof, None
        if prof is None:
            return
        try:
            with internal_errors("profile stop"):
                prof.__exit__(exc_type, exc, tb)
        finally:
            TIMELINE.sessions -= 1
        self.wait()

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until the windows handed over so far are converted; True when they are."""
        return CONVERTER.wait(timeout)

    # ------------------------------------------------------------- converter thread
    def convert_window(self, window: Window) -> None:
        em = self._em
        if em is None:
            return
        parent = window.fallback
        ctx = em.new_context(parent, "torch.profile")
        if ctx is None:
            return
        started = time.perf_counter()
        result = convert(window, em, ctx)
        elapsed = time.perf_counter() - started
        summary = {
            "window": window.index,
            "events": result.events,
            "spans": result.spans,
            "aggregated": result.aggregated,
            "counts": result.counts,
            "top": result.top,
            "convert_s": elapsed,
        }
        self.results.append(summary)
        STATS.add("torch-profiler", "spans", result.spans)
        STATS.add("torch-profiler", "aggregated", result.aggregated)
        em.hand_off(
            "torch.profile",
            ctx,
            parent,
            window.start_ns or window.end_ns,
            window.end_ns,
            {
                keys.PROFILE_WINDOW: window.index,
                keys.PROFILE_EVENTS: result.events,
                keys.PROFILE_SPANS: result.spans,
                keys.PROFILE_AGGREGATED: result.aggregated,
                keys.PROFILE_COUNTS: json.dumps(result.counts, sort_keys=True),
                keys.PROFILE_TOP: json.dumps(result.top)[:4096],
            },
        )


def profile(
    every: int = 100,
    active: int = 1,
    record_shapes: bool = False,
    max_spans: int = 2000,
    top: int = 10,
) -> Profile:
    """Run torch.profiler on ``active`` steps out of every ``every``; its events become spans.

    CPU ops, CUDA kernels (device, stream, grid, block), memcpy/memset and collectives become
    child spans of the span that was active when they ran (kernels: when they were launched),
    on the epoch clock of every other span. At most ``max_spans`` events per window (the
    longest) become spans; every window also gets a ``torch.profile`` summary span with
    counts per kind and the ``top`` events by total time. Conversion runs on a background
    thread; leaving the ``with`` block waits for it. Nothing runs before ``init()``.

    Raises :class:`~glmtrace.ConfigError` for a bad schedule and
    :class:`~glmtrace.MissingDependencyError` when torch is not installed.

    Example::

        with glmtrace.profile(every=50, active=2) as prof:
            for batch in loader:
                with glmtrace.span("step"):
                    train_step(batch)
                prof.step()
    """
    return Profile(every, active, record_shapes, max_spans, top)
