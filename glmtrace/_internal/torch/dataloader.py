"""DataLoader workers that join the trace of the step that created the iterator.

:func:`worker_init_fn` returns a picklable callable for ``DataLoader(worker_init_fn=...)``.
The trace context it carries is taken when the workers start, which is when the iterator is
created (``iter(loader)``, the first ``for``): with the ``spawn``/``forkserver`` start
methods it is captured while the callable is pickled; with ``fork`` the child inherits the
current context of the thread that forked it. In each worker it opens a
``torch.dataloader.worker`` span that stays current for the worker's life (so spans in
``Dataset.__getitem__`` and ``collate_fn`` nest under it) and ends it, then flushes, when the
worker exits: workers leave through ``os._exit`` and never run ``atexit`` hooks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from ..guard import report
from ..propagation import extract, inject
from ..runtime import DEFAULT
from . import keys
from .fastspans import LiteSpan, start


class TracedWorkerInit:
    """``worker_init_fn`` that continues the parent's trace in a DataLoader worker."""

    def __init__(self, fn: Callable[[int], Any] | None = None) -> None:
        self.fn = fn
        self.carrier: dict[str, str] | None = None
        self.settings: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Pickled by the start method while the iterator is being created: that is the
        # moment whose trace the workers should join.
        carrier: dict[str, str] = {}
        inject(carrier)
        settings = DEFAULT.options.as_arguments() if DEFAULT.options is not None else {}
        return {"fn": self.fn, "carrier": carrier, "settings": settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fn = state["fn"]
        self.carrier = state["carrier"]
        self.settings = state["settings"]

    def __call__(self, worker_id: int) -> None:
        try:
            self._join_trace(worker_id)
        except Exception as exc:
            report("dataloader worker_init_fn", exc)
        if self.fn is not None:
            self.fn(worker_id)

    def _join_trace(self, worker_id: int) -> None:
        if DEFAULT.tracer is None and self.settings:
            DEFAULT.init(**self.settings)  # spawned worker: same settings as the parent
        if self.carrier is not None:
            otel_context.attach(extract(self.carrier))
        if not trace.get_current_span().get_span_context().is_valid:
            return
        info = _worker_info()
        span = start(
            "torch.dataloader.worker",
            {
                keys.WORKER_ID: worker_id,
                keys.WORKER_COUNT: info,
                keys.WORKER_PID: os.getpid(),
            },
        )
        if span is None:
            return
        span.activate()  # current for the rest of the worker's life
        _register_exit(span)


def _worker_info() -> int:
    try:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        return int(info.num_workers) if info is not None else 0
    except Exception:
        return 0


def _register_exit(span: LiteSpan) -> None:
    """End the worker span and flush when the worker process exits."""
    from multiprocessing import util

    def finish() -> None:
        try:
            span.token = None  # the worker's context dies with it; nothing to detach
            span.end()
            DEFAULT.force_flush()
        except Exception as exc:
            report("dataloader worker exit", exc)

    # multiprocessing runs finalizers from Process._bootstrap before os._exit.
    util.Finalize(None, finish, exitpriority=100)


def worker_init_fn(fn: Callable[[int], Any] | None = None) -> TracedWorkerInit:
    """A ``worker_init_fn`` whose workers join the trace of the step that iterates the loader.

    ``fn``, when given, is your own ``worker_init_fn`` and runs after. Each worker gets a
    ``torch.dataloader.worker`` span (worker id, process id) under the span that was current
    when the iterator was created; spans in your dataset and collate code are its children.

    Example::

        loader = DataLoader(dataset, num_workers=4,
                            worker_init_fn=glmtrace.distributed.worker_init_fn())
        with glmtrace.span("epoch"):
            for batch in loader: ...
    """
    return TracedWorkerInit(fn)
