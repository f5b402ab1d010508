"""``cuda_span(name)``: GPU time of a block, measured with CUDA events, without a stall.

At entry and exit a timing event is recorded on the current stream; nothing waits for the
GPU. A background resolver polls ``event.query()`` and, once the end event has completed,
reads the elapsed time and exports the span. An OpenTelemetry span cannot take attributes
after it ends, so the span is *ended by the resolver*: it starts at the CPU entry time (when
the work was queued) and ends at ``max(CPU exit, start + GPU duration)``, so that it covers
both the launch and the GPU work and child spans stay inside it. ``glmtrace.gpu.duration_ms``
holds the GPU measurement and ``glmtrace.clock`` says ``"gpu"``; without CUDA the span is an
ordinary CPU span and says ``"cpu"``. The resolver is a part of the runtime:
``force_flush()`` waits (within its deadline) for pending spans and returns False when some
are still pending; ``shutdown()`` and interpreter exit export what is left after the budget
as unresolved, with CPU time (counted as ``unresolved`` in ``stats()``).
"""

from __future__ import annotations

import atexit
import collections
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..attributes import AttributeValue, coerce_attributes
from ..forks import after_fork_in_child
from ..guard import report
from ..runtime import DEFAULT
from ..stats import STATS
from ..thin import ThinSpan
from . import keys, require_torch
from .profiler import TIMELINE

_MAX_PENDING = 10_000
_POLL_S = 0.001


@dataclass
class _Pending:
    span: ThinSpan
    start_event: Any
    end_event: Any
    cpu_end_ns: int
    error: BaseException | None


class Resolver:
    """One daemon thread that turns completed CUDA event pairs into finished spans."""

    name = "cuda-resolver"

    def __init__(self) -> None:
        self._pending: collections.deque[_Pending] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._atexit = False

    def submit(self, item: _Pending) -> None:
        with self._cond:
            if len(self._pending) >= _MAX_PENDING:
                STATS.add("cuda-resolver", "dropped", 1)
                _finish_unresolved(item)
                return
            self._pending.append(item)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="glmtrace-cuda-resolver", daemon=True
                )
                self._thread.start()
            if not self._atexit:
                atexit.register(self.drain)
                DEFAULT.register(self)  # force_flush/shutdown wait for pending spans
                self._atexit = True
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
            self._poll_once()
            time.sleep(_POLL_S)

    def _poll_once(self) -> None:
        with self._cond:
            items = list(self._pending)
        done: list[_Pending] = []
        for item in items:
            try:
                if item.end_event.query():
                    done.append(item)
            except Exception as exc:  # a broken event must not wedge the queue
                report("cuda event query", exc)
                done.append(item)
        if not done:
            return
        with self._cond:
            finished = {id(item) for item in done}
            self._pending = collections.deque(i for i in self._pending if id(i) not in finished)
            self._cond.notify_all()
        for item in done:
            _finish(item)

    def wait(self, timeout: float) -> bool:
        """Wait (off the hot path) until nothing is pending; True when nothing is."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                self._poll_once()
            time.sleep(_POLL_S)
        return not self.pending()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every pending span is exported; True when all were resolved.

        Spans still pending after ``timeout`` (default: the shutdown budget) are exported
        with CPU time and ``glmtrace.gpu.unresolved=true``.
        """
        options = DEFAULT.options
        budget = timeout if timeout is not None else (options.shutdown_timeout if options else 2.0)
        self.wait(budget)
        with self._cond:
            left, self._pending = list(self._pending), collections.deque()
        for item in left:
            _finish_unresolved(item)
        STATS.add(self.name, "unresolved", len(left))
        return not left

    def flush(self, timeout: float) -> bool:
        """The runtime's flush: wait for pending spans; at shutdown, export the rest unresolved.

        During ``shutdown()`` the runtime has already dropped its tracer, and nothing
        submitted later could be exported: what the budget leaves is exported now, with CPU
        time, rather than lost. Half the budget: the exporters need the rest.
        """
        if DEFAULT.tracer is None:
            return self.drain(timeout / 2)
        return self.wait(timeout / 2)

    def _after_fork(self) -> None:
        # CUDA cannot be used in a forked child; forget the parent's thread and queue.
        self._pending = collections.deque()
        self._cond = threading.Condition()
        self._thread = None
        _available[:] = []  # ask again: a child forked after CUDA started cannot use it


RESOLVER = Resolver()
after_fork_in_child(RESOLVER._after_fork)


def _finish(item: _Pending) -> None:
    try:
        gpu_ms = float(item.start_event.elapsed_time(item.end_event))
    except Exception as exc:
        report("cuda elapsed_time", exc)
        _finish_unresolved(item)
        return
    span = item.span
    cpu_ns = item.cpu_end_ns - span.start_ns
    span.attributes[keys.CLOCK] = "gpu"
    span.attributes[keys.GPU_DURATION_MS] = gpu_ms
    span.attributes[keys.CPU_DURATION_MS] = cpu_ns / 1e6
    end_ns = max(item.cpu_end_ns, span.start_ns + int(gpu_ms * 1e6))
    span.end(end_time=end_ns, error=item.error)
    STATS.add("cuda-resolver", "resolved", 1)


def _finish_unresolved(item: _Pending) -> None:
    span = item.span
    span.attributes[keys.CLOCK] = "cpu"
    span.attributes[keys.GPU_UNRESOLVED] = True
    span.attributes[keys.CPU_DURATION_MS] = (item.cpu_end_ns - span.start_ns) / 1e6
    span.end(end_time=item.cpu_end_ns, error=item.error)


class CudaSpan:
    """The context manager :func:`cuda_span` returns."""

    __slots__ = ("_attributes", "_device", "_events", "_name", "_span", "_stream", "_torch")

    def __init__(self, torch: Any, name: str, attributes: dict[str, AttributeValue], device: Any):
        self._torch = torch
        self._name = name
        self._attributes = attributes
        self._device = device
        self._span: ThinSpan | None = None
        self._events: Any = None
        self._stream: Any = None

    def __enter__(self) -> CudaSpan:
        if DEFAULT.tracer is None:
            return self
        try:
            span = DEFAULT.start_span(self._name, self._attributes)
            if span is None:
                return self
            torch = self._torch
            if _cuda_available(torch):
                stream = torch.cuda.current_stream(self._device)
                begin = torch.cuda.Event(enable_timing=True)
                begin.record(stream)
                self._stream, self._events = stream, begin
                span.attributes[keys.GPU_DEVICE] = str(stream.device)
                span.attributes[keys.GPU_STREAM] = int(stream.stream_id)
            span.start_ns = time.time_ns()
            span.activate()
            self._span = span
        except Exception as exc:
            report("cuda_span enter", exc)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        try:
            span.deactivate()
            cpu_end = time.time_ns()
            if self._events is None:
                span.attributes[keys.CLOCK] = "cpu"
                span.attributes[keys.CPU_DURATION_MS] = (cpu_end - span.start_ns) / 1e6
                span.end(end_time=cpu_end, error=exc)
                return
            end = self._torch.cuda.Event(enable_timing=True)
            end.record(self._stream)
            # Kernels launched inside must find this span before the resolver exports it.
            TIMELINE.note(span.start_ns, cpu_end, span.context)
            RESOLVER.submit(_Pending(span, self._events, end, cpu_end, exc))
        except Exception as internal:
            report("cuda_span exit", internal)


_available: list[bool] = []


def _cuda_available(torch: Any) -> bool:
    if not _available:
        # A child forked after the parent started CUDA sees a device it cannot use: every
        # call raises "Cannot re-initialize CUDA in forked subprocess". Time on the CPU there.
        bad_fork = getattr(torch.cuda, "_is_in_bad_fork", None)
        usable = bool(torch.cuda.is_available()) and not (bad_fork is not None and bad_fork())
        _available.append(usable)
    return _available[0]


def cuda_span(name: str, attributes: dict[str, Any] | None = None, device: Any = None) -> CudaSpan:
    """A span whose duration is measured on the GPU, with no synchronisation on the hot path.

    CUDA events are recorded on the current stream of ``device`` at entry and exit; the span
    is exported once a background thread sees the end event complete, with
    ``glmtrace.gpu.duration_ms``, the device and stream, and ``glmtrace.clock="gpu"``.
    It starts at the CPU entry time and ends at ``max(CPU exit, start + GPU time)``. Without
    CUDA it is a CPU span with ``glmtrace.clock="cpu"``. Spans opened inside it are its
    children.

    Raises :class:`~glmtrace.MissingDependencyError` when torch is not installed.

    Example::

        with glmtrace.cuda_span("forward"):
            logits = model(batch)
    """
    torch = require_torch()
    limits = DEFAULT.limits
    return CudaSpan(torch, name, coerce_attributes(attributes or {}, limits), device)


def resolve_pending(timeout: float = 5.0) -> bool:
    """Wait until every finished ``cuda_span`` has been exported (tests, flush points)."""
    return RESOLVER.drain(timeout)
