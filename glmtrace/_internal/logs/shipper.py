"""A bounded, non-blocking queue drained in batches by one background daemon thread.

The caller's thread only appends to a deque: it never waits on I/O. When the queue is full
new items are dropped and counted. After ``os.fork`` the child gets a fresh lock, an empty
queue (the parent ships its own items) and a new thread on first use.

A sink that can take over what is left (:class:`Spilling`: to disk, or for a last send) is
finished by its shipper at shutdown: half the deadline goes to sending, then what is still
queued is handed to the sink's ``spill`` instead of being dropped, and the sink gets the rest
of the deadline to finish.

glmtrace's own threads run outside the user's traces (:func:`quiet_thread`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from opentelemetry import context as otel_context

from ..forks import after_fork_in_child
from ..guard import internal_errors, report
from ..stats import STATS

T = TypeVar("T")


@runtime_checkable
class Spilling(Protocol):
    """A sink that takes over what is left at shutdown rather than lose it."""

    def spill(self, batch: list[Any]) -> int:
        """Take ``batch`` without waiting on the network; returns how many were kept (the
        sink counts them, and the rest as dropped)."""

    def finish(self, timeout: float) -> bool:
        """Stop within ``timeout``; True only when nothing is left in memory or on disk."""


def quiet_thread() -> None:
    """Detach a glmtrace thread from the user's context, instrumentation suppressed.

    OpenTelemetry's threading instrumentation hands every new thread its starter's context:
    a shipper thread started by the first log line inside a span would put its network
    calls (and any spans instrumented clients make for them) into that user's trace.
    """
    otel_context.attach(
        otel_context.set_value(
            otel_context._SUPPRESS_INSTRUMENTATION_KEY, True, otel_context.Context()
        )
    )


class BackgroundShipper(Generic[T]):
    """Batches items to ``send`` from a daemon thread; drops (counted) when full."""

    def __init__(
        self,
        sink: str,
        send: Callable[[list[T]], None],
        *,
        max_queue: int = 20_000,
        max_batch: int = 1_000,
        interval: float = 0.2,
    ) -> None:
        self.sink = sink
        self._send = send
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._interval = interval
        self._spilling = send if isinstance(send, Spilling) else None
        self._reset()
        after_fork_in_child(self._reset)

    def _reset(self) -> None:
        self._queue: collections.deque[T] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False
        self._in_flight = 0

    def submit(self, item: T) -> None:
        """Queue ``item``; never blocks, never raises."""
        if self._closed:
            STATS.add(self.sink, "dropped")
            return
        if len(self._queue) >= self._max_queue:
            STATS.add(self.sink, "dropped")
            return
        self._queue.append(item)
        if self._thread is None:
            self._start()
        elif len(self._queue) >= self._max_batch:
            with self._cond:
                self._cond.notify()

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"glmtrace-{self.sink}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        quiet_thread()
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    self._cond.wait(self._interval)
                if self._closed and not self._queue:
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))
                ]
                self._in_flight = len(batch)
            if batch:
                self._ship(batch)
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _ship(self, batch: list[T]) -> None:
        try:
            self._send(batch)
        except Exception as exc:
            report(f"shipping to {self.sink}", exc)
            STATS.add(self.sink, "dropped", len(batch))

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is shipped, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._queue or self._in_flight:
                if self._thread is None or not self._thread.is_alive():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
                self._cond.notify_all()
        return not self._queue

    def shutdown(self, timeout: float) -> bool:
        """Flush within ``timeout``, then stop; what is left is spilled (a :class:`Spilling`
        sink, then closed) or counted as dropped. True only when nothing was left behind."""
        deadline = time.monotonic() + timeout
        sink = self._spilling
        done = self.flush(timeout / 2 if sink is not None else timeout)  # the rest: close()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            left = list(self._queue)
            self._queue.clear()
        if sink is None:
            STATS.add(self.sink, "dropped", len(left))
            return done and not left
        with internal_errors(f"closing {self.sink}"):
            kept = sink.spill(left) if left else 0
            return sink.finish(max(0.0, deadline - time.monotonic())) and kept == len(left)
        return False

    @property
    def pending(self) -> int:
        return len(self._queue) + self._in_flight

    def fill(self) -> float:
        """How full the queue is, 0.0 to 1.0: a sink with a spool spills early when high."""
        return len(self._queue) / self._max_queue
