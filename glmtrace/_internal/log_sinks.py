"""Remote log sinks (Elasticsearch, Fluent forward): batch senders for the log shipper.

Each sink is a callable ``sink(batch: list[dict]) -> None`` run on the shipper's background
thread. Besides being callable, the sinks returned here have:

- ``counts_itself = True``: they add ``exported``/``spooled``/``replayed``/``dropped`` to
  ``glmtrace.stats()`` under ``logs-<sink>`` themselves (a batch that goes to the spool is
  not exported yet), so the runtime must not count their batches again;
- ``close(timeout)``: stop background work and release sockets; call it after the shipper
  has flushed, at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from .config import Options

log = logging.getLogger("glmtrace")


class LogSink(Protocol):
    """What :func:`create_log_sink` returns."""

    counts_itself: bool

    def __call__(self, batch: list[dict[str, Any]]) -> None: ...

    def close(self, timeout: float = 2.0) -> None: ...


def create_log_sink(sink: str, options: Options) -> Callable[[list[dict[str, Any]]], None] | None:
    """A function that ships one batch of ECS documents to ``sink``, or None if unavailable.

    Raises :class:`~glmtrace.MissingDependencyError` when the sink's extra is not installed.
    """
    if sink == "elasticsearch":
        from .es_sink import create as create_es

        return create_es(options)
    if sink == "fluent":
        from .fluent_sink import create as create_fluent

        return create_fluent(options)
    log.warning("log sink %r is not available; its records are not shipped", sink)
    return None
