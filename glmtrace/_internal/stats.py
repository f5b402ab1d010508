"""Counters of what glmtrace exported, spooled, replayed and dropped, per sink."""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from typing import Protocol

from .forks import after_fork_in_child
from .guard import internal_errors, warn_once


class Source(Protocol):
    """Something that counts outside these counters (the native pipeline's thread)."""

    def sync_stats(self) -> None:
        """Add what was counted since the last call to :data:`STATS`."""
        ...


class Stats:
    """Thread-safe counters keyed by sink and event (``exported``, ``dropped``, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._sources: weakref.WeakSet[Source] = weakref.WeakSet()

    def add_source(self, source: Source) -> None:
        """Read ``source``'s counts at every snapshot, also after its runtime shut down (a span
        that outlived it still ends there, and nothing else would read that drop)."""
        self._sources.add(source)

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
        for source in list(self._sources):
            with internal_errors("reading native counters"):
                source.sync_stats()
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
