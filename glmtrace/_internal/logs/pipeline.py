"""The logs side of one ``init()``: a shipper per sink and the handler records reach them by.

The runtime starts one :class:`LogPipeline` per initialisation and owns only its lifecycle:
flush, and shutdown within the budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..attributes import Limits
from ..config import Options
from ..stats import STATS
from . import capture
from .handler import DocumentHandler
from .shipper import BackgroundShipper
from .sinks import create_log_sink

if TYPE_CHECKING:
    from ..store.database import Store


class LogPipeline:
    """Shippers for ``options.logs`` (the local store, Elasticsearch, Fluent, plugins) and the
    :class:`DocumentHandler` that turns captured records into their documents."""

    def __init__(self) -> None:
        self._shippers: list[BackgroundShipper[dict[str, Any]]] = []
        self._closers: list[Callable[[float], None]] = []
        self._handler: DocumentHandler | None = None

    def start(
        self,
        options: Options,
        store: Store | None,
        service_name: str,
        limits: Limits,
        strict: bool,
    ) -> None:
        """Start a shipper per sink and capture records from ``options.log_level`` up.

        ``strict``: an unknown plugin sink was named by the caller (raise) rather than found in
        the environment (warn).
        """
        for sink in options.logs:
            if sink == "none":
                continue
            shipper: BackgroundShipper[dict[str, Any]]
            if sink == "local" and store is not None:  # the store exists when it is a sink
                shipper = BackgroundShipper("logs-local", _counting(sink, store.write_logs))
            else:
                remote = create_log_sink(sink, options, strict)
                if remote is None:
                    continue
                shipper = BackgroundShipper(f"logs-{sink}", remote)  # it counts itself
                remote.watch_queue(shipper.fill)
                self._closers.append(remote.close)
            self._shippers.append(shipper)
        if self._shippers:
            self._handler = DocumentHandler(
                [s.submit for s in self._shippers], service_name, limits
            )
            self._handler.setLevel(logging.getLevelName(options.log_level))
            capture.capture(self._handler)

    def release(self) -> None:
        """Stop capturing records (what was captured still ships)."""
        if self._handler is not None:
            capture.release(self._handler)

    def flush(self, budget: float) -> bool:
        ok = True
        for shipper in self._shippers:
            ok = shipper.flush(budget) and ok
        return ok

    def shutdown(self, budget: float) -> bool:
        """Ship what is queued within ``budget`` (or spool it), then close the sinks."""
        ok = all([s.shutdown(budget) for s in self._shippers])
        for close in self._closers:
            close(budget)
        return ok


def _counting(
    sink: str, send: Callable[[list[dict[str, Any]]], int]
) -> Callable[[list[dict[str, Any]]], None]:
    def counted(batch: list[dict[str, Any]]) -> None:
        lost = send(batch)  # the store says how many records it could not keep
        STATS.add(f"logs-{sink}", "exported", len(batch) - lost)
        STATS.add(f"logs-{sink}", "dropped", lost)

    return counted
