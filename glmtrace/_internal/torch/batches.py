"""The main process's side of DataLoader worker tracing: each batch's spans join its step.

A worker fetches batch *k* while the main process still runs an earlier step (prefetching),
so when the worker records its spans nobody knows the trace they belong to. The worker
therefore records them under a provisional root (see :mod:`.dataloader`) and sends them
with the batch. Here, when the iterator hands the batch to the program, the spans are
*parked* for the thread that took it; they are exported, re-parented, under the first span
that thread opens next at the same level (``for batch in loader: with share_trace("step")``
gives the step: a root span, or a span whose parent is the one current when the batch was
taken). A batch nobody adopts before the next batch is taken, or before ``force_flush()``,
goes under the span that was current when it was taken (or stays its own trace).

Batches the workers made that the program never takes (it left the loop with ``break``, or a
persistent iterator started a new epoch) are discarded by torch; their spans and logs are
exported first, as traces of their own, sampled like new traces.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ..emitter import Emitter, emitter_for
from ..export.rows import trace_id_hex
from ..forks import after_fork_in_child
from ..guard import internal_errors
from ..logs.ecs import TRACE_ID
from ..logs.handler import submit_documents
from ..otel_internals import span_processors
from ..runtime import DEFAULT
from . import keys

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class SpanRecord(NamedTuple):
    """One finished worker span, as plain picklable values."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int  # 0: the worker's batch span, the root of the provisional trace
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    links: list[tuple[int, int, dict[str, Any]]]
    status: tuple[int, str | None]
    kind: int


def record(span: ReadableSpan) -> SpanRecord:
    """A worker span, ready to travel with its batch."""
    ctx = span.context
    assert ctx is not None
    attributes: dict[str, Any] = dict(span.attributes or {})
    attributes.setdefault(keys.WORKER_PID, os.getpid())
    return SpanRecord(
        span.name,
        ctx.trace_id,
        ctx.span_id,
        span.parent.span_id if span.parent is not None else 0,
        span.start_time or 0,
        span.end_time or 0,
        attributes,
        [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        [(k.context.trace_id, k.context.span_id, dict(k.attributes or {})) for k in span.links],
        (span.status.status_code.value, span.status.description),
        span.kind.value,
    )


Document = dict[str, Any]  # an ECS log document (logs/handler.py)


class WorkerBatch:
    """A batch from a traced worker, with the spans and log documents the worker made for it."""

    __slots__ = ("data", "logs", "spans")

    def __init__(self, data: Any, spans: list[SpanRecord], logs: list[Document]) -> None:
        self.data = data
        self.spans = spans
        self.logs = logs

    def __reduce__(self) -> tuple[Any, ...]:
        return (WorkerBatch, (self.data, self.spans, self.logs))

    def pin_memory(self, *args: Any) -> WorkerBatch:
        """``pin_memory=True``: the pinning thread pins the data, the spans ride along."""
        from torch.utils.data._utils import pin_memory

        pin: Any = pin_memory.pin_memory
        return WorkerBatch(pin(self.data, *args), self.spans, self.logs)


def _provisional(spans: Sequence[SpanRecord]) -> int:
    return next((s.trace_id for s in spans if s.parent_id == 0), spans[0].trace_id)


def ship_logs(spans: Sequence[SpanRecord], logs: Sequence[Document], trace_id: int | None) -> None:
    """Ship a batch's log documents, those of its provisional trace moved to ``trace_id``.

    Logs are kept whether or not the step's spans are sampled, as for any other log line.
    """
    if not logs:
        return
    if spans and trace_id is not None:
        old, new = trace_id_hex(_provisional(spans)), trace_id_hex(trace_id)
        for doc in logs:
            if doc.get(TRACE_ID) == old:
                doc[TRACE_ID] = new
    submit_documents(logs)


def export(em: Emitter, spans: Sequence[SpanRecord], parent: SpanContext | None) -> None:
    """Export a batch's spans, its provisional root re-parented under ``parent``."""
    if not spans or (parent is not None and not parent.trace_flags.sampled):
        return  # the step was sampled out: so is its batch
    provisional = _provisional(spans)
    target = parent.trace_id if parent is not None else provisional
    if parent is None and not _sampled(em, provisional, spans[0].name):
        return  # a trace of its own: sampled like any new trace
    for s in spans:
        trace_id = target if s.trace_id == provisional else s.trace_id
        up = parent if s.parent_id == 0 else SpanContext(trace_id, s.parent_id, False, _SAMPLED)
        code, description = s.status
        em.hand_off(  # names were bounded in the worker
            s.name,
            SpanContext(trace_id, s.span_id, False, _SAMPLED),
            up,
            s.start_ns,
            s.end_ns,
            s.attributes,
            [Link(SpanContext(t, i, True, _SAMPLED), a) for t, i, a in s.links],
            Status(StatusCode(code), description),
            SpanKind(s.kind),
            [Event(n, a, ts) for n, ts, a in s.events],
        )


def _sampled(em: Emitter, trace_id: int, name: str) -> bool:
    decision = em.sampler.should_sample(None, trace_id, name).decision
    return decision in (Decision.RECORD_AND_SAMPLE, Decision.RECORD_ONLY)


class _Parked(NamedTuple):
    spans: list[SpanRecord]
    logs: list[Document]
    taken_under: SpanContext | None  # the span current when the program took the batch
    # Kept for flush(): shutdown clears the runtime's tracer before it flushes the parts.
    emitter: Emitter


class Batches:
    """Parked batches per thread, the span processor that adopts them, and a runtime part."""

    name = "dataloader-batches"

    def __init__(self) -> None:
        self._parked: dict[int, _Parked] = {}
        self._lock = threading.Lock()

    def take(self, spans: list[SpanRecord], logs: list[Document]) -> None:
        """The program took a batch: park its spans and logs until the step that uses it
        opens."""
        em = emitter_for(DEFAULT.tracer)
        if em is None or not spans:
            ship_logs(spans, logs, None)
            return
        self._install(em)
        current = trace.get_current_span().get_span_context()
        parked = _Parked(spans, logs, current if current.is_valid else None, em)
        with self._lock:
            previous = self._parked.pop(threading.get_ident(), None)
            self._parked[threading.get_ident()] = parked
        if previous is not None:  # no step opened for it: under what was current then
            _release(previous, previous.taken_under)

    def _install(self, em: Emitter) -> None:
        # Asked of the processor itself: a set of ids would match a new runtime's processor
        # that reuses a dead one's address, and its steps would never adopt their batches.
        if not any(isinstance(p, _Adopter) for p in span_processors(em.processor)):
            em.processor.add_span_processor(_Adopter(self))
            DEFAULT.register(self)

    def adopt(self, span: SdkSpan) -> None:
        """A span opens: the batch parked on this thread becomes its child when it fits."""
        ident = threading.get_ident()
        parked = self._parked.get(ident)
        if parked is None:
            return
        parent, before = span.parent, parked.taken_under
        if not (
            parent is None
            or parent.is_remote
            or (before is not None and parent.span_id == before.span_id)
        ):
            return
        with self._lock:
            if self._parked.get(ident) is not parked:
                return
            del self._parked[ident]
        _release(parked, span.get_span_context(), emitter_for(DEFAULT.tracer))

    def settle(self, step: SpanContext) -> None:
        """``share_trace`` opened a step that is sampled out: its batch's spans are, too."""
        if step.is_valid and not step.trace_flags.sampled:
            with self._lock:
                parked = self._parked.pop(threading.get_ident(), None)
            if parked is not None:
                ship_logs(parked.spans, parked.logs, step.trace_id)

    def unclaimed(self, batch: WorkerBatch) -> None:
        """A batch no step will take: its spans go out as a trace of their own."""
        em = emitter_for(DEFAULT.tracer)
        if em is None or not batch.spans:
            ship_logs(batch.spans, batch.logs, None)
            return
        _release(_Parked(batch.spans, batch.logs, None, em), None)

    def flush(self, timeout: float) -> bool:
        """The runtime's flush: batches still parked go under the span current when taken."""
        with self._lock:
            parked, self._parked = list(self._parked.values()), {}
        for item in parked:
            _release(item, item.taken_under)
        return True

    def _after_fork(self) -> None:
        # The parent's batches are the parent's to export.
        self._parked = {}
        self._lock = threading.Lock()


def _release(parked: _Parked, parent: SpanContext | None, em: Emitter | None = None) -> None:
    """A parked batch's spans and logs go out under ``parent`` (or their own trace), through
    ``em`` (the runtime's emitter now) or the one current when the batch was taken."""
    try:
        export(em or parked.emitter, parked.spans, parent)
    finally:
        ship_logs(parked.spans, parked.logs, parent.trace_id if parent is not None else None)


class _Adopter(SpanProcessor):
    def __init__(self, batches: Batches) -> None:
        self._batches = batches

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        if self._batches._parked:  # cheap: nothing parked is the usual case
            with internal_errors("dataloader batch adoption"):
                self._batches.adopt(span)


BATCHES = Batches()
after_fork_in_child(BATCHES._after_fork)

_creating = threading.local()


def creating_iterator() -> bool:
    """True while this thread builds a DataLoader iterator whose batches we unwrap."""
    return bool(getattr(_creating, "depth", 0))


def install_consumer() -> None:
    """Unwrap :class:`WorkerBatch` in torch's multiprocessing iterator (idempotent).

    Workers wrap their batches only when started by this iterator class (see
    :func:`creating_iterator`), so an iterator that is not unwrapped never sees a wrapper.
    """
    from torch.utils.data import dataloader

    cls = dataloader._MultiProcessingDataLoaderIter
    if getattr(cls._next_data, "__glmtrace_original__", None) is not None:
        return
    setattr(cls, "__init__", _creating_workers(cls.__init__))  # noqa: B010 (mypy: method)
    setattr(cls, "_next_data", _unwrapping(cls._next_data))  # noqa: B010
    setattr(cls, "_shutdown_workers", _exporting_unconsumed(cls._shutdown_workers))  # noqa: B010
    setattr(cls, "_reset", _exporting_stale(cls._reset))  # noqa: B010


def _creating_workers(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        _creating.depth = getattr(_creating, "depth", 0) + 1
        try:
            init(self, *args, **kwargs)
        finally:
            _creating.depth -= 1

    wrapper.__glmtrace_original__ = init  # type: ignore[attr-defined]
    return wrapper


def _unwrapping(next_data: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(next_data)
    def wrapper(self: Any) -> Any:
        data = next_data(self)
        if isinstance(data, WorkerBatch):
            with internal_errors("dataloader batch spans"):
                BATCHES.take(data.spans, data.logs)
            return data.data
        return data

    wrapper.__glmtrace_original__ = next_data  # type: ignore[attr-defined]
    return wrapper


# How long an iterator shut down with batches in flight waits for each of them (and in all):
# a worker that already made its batch delivers it in microseconds; one still loading is not
# waited for, and what it was loading is lost with the worker.
_DRAIN_EACH_S = 0.25
_DRAIN_TOTAL_S = 1.0


def _exporting_unconsumed(shutdown: Callable[[Any], None]) -> Callable[[Any], None]:
    """Export the batches made for an iterator that shuts down before taking them."""

    @functools.wraps(shutdown)
    def wrapper(self: Any) -> None:
        if not getattr(self, "_shutdown", True):
            with internal_errors("dataloader unconsumed batches"):
                _drain(self)
        shutdown(self)

    wrapper.__glmtrace_original__ = shutdown  # type: ignore[attr-defined]
    return wrapper


def _unclaim_out_of_order(it: Any) -> None:
    """Batches that arrived ahead of their turn wait in the iterator's task table."""
    for info in list(getattr(it, "_task_info", {}).values()):
        if len(info) == 2 and isinstance(info[1], WorkerBatch):
            BATCHES.unclaimed(info[1])


def _unclaim(got: Any) -> None:
    """``got``, an ``(index, data)`` pair from the data queue, when its data is a batch."""
    if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], WorkerBatch):
        BATCHES.unclaimed(got[1])


def _drain(it: Any) -> None:
    _unclaim_out_of_order(it)
    deadline = time.monotonic() + _DRAIN_TOTAL_S
    for _ in range(max(0, getattr(it, "_tasks_outstanding", 0))):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            got = it._data_queue.get(timeout=min(_DRAIN_EACH_S, left))
        except (queue.Empty, OSError, EOFError, ValueError):
            return
        _unclaim(got)


def _exporting_stale(reset: Callable[..., None]) -> Callable[..., None]:
    """A persistent iterator's new epoch discards the last epoch's batches: export them.
    (Its ``_get_data`` keeps them for that call only: every batch fetch would pay on the class.)
    """

    @functools.wraps(reset)
    def wrapper(self: Any, loader: Any, first_iter: bool = False) -> None:
        if first_iter:
            reset(self, loader, first_iter)
            return
        get_data = self._get_data

        def keeping() -> Any:
            got = get_data()
            with internal_errors("dataloader unconsumed batches"):
                _unclaim(got)
            return got

        with internal_errors("dataloader unconsumed batches"):
            _unclaim_out_of_order(self)
        self._get_data = keeping
        try:
            reset(self, loader, first_iter)
        finally:
            del self._get_data  # the class's again

    wrapper.__glmtrace_original__ = reset  # type: ignore[attr-defined]
    return wrapper
