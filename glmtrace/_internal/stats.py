"""Counters of what glmtrace exported, spooled, replayed and dropped, per sink."""

from __future__ import annotations

import threading
from collections import defaultdict

from .forks import after_fork_in_child
from .guard import warn_once


class Stats:
    """Thread-safe counters keyed by sink and event (``exported``, ``dropped``, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )

    def add(self, sink: str, event: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._counts[sink][event] += n
        if event == "dropped":
            warn_once(
                f"dropping:{sink}",
                "glmtrace is dropping telemetry for sink %r; see glmtrace.stats()",
                sink,
            )

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {sink: dict(events) for sink, events in self._counts.items()}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may be held by a thread the child lacks
        self._counts.clear()  # a child counts what it does itself (doctor adds up processes)


STATS = Stats()
after_fork_in_child(STATS._after_fork)
