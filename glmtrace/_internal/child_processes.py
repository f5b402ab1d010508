"""Carrying a trace into other processes (ProcessPoolExecutor, multiprocessing).

Threads need nothing: ``init()`` instruments ``threading`` and ``ThreadPoolExecutor``.
Processes need the context shipped by value, which :func:`propagate` does.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from .carriers import attach, inject
from .guard import internal_errors
from .runtime import DEFAULT
from .signals import defer_sigterm_while_exiting, sigterm_held

P = ParamSpec("P")
R = TypeVar("R")


class Propagated(Generic[P, R]):
    """A picklable callable that runs ``fn`` inside the trace it was created in.

    In the child process it initialises glmtrace with the parent's settings when needed
    (spawn start method). The task returns without waiting for any backend: the worker
    flushes once, when it exits (see :func:`_shutdown_at_worker_exit`).
    """

    def __init__(self, fn: Callable[P, R], carrier: dict[str, str], settings: dict[str, Any]):
        self.fn = fn
        self.carrier = carrier
        self.settings = settings
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if DEFAULT.tracer is None and self.settings:
            with internal_errors("init in child process"):
                DEFAULT.init(**self.settings)
        _shutdown_at_worker_exit()
        with attach(self.carrier):
            return self.fn(*args, **kwargs)


_hooked_pid: int | None = None


def _shutdown_at_worker_exit() -> None:
    """Flush (bounded, counting what is left) when this worker process ends.

    Pool workers leave through ``os._exit``, which skips ``atexit``; multiprocessing runs its
    own finalizers first, in every process it starts, so glmtrace's shutdown is one of them.
    The main process keeps its ``atexit`` hook.
    """
    global _hooked_pid
    if _hooked_pid == os.getpid() or multiprocessing.parent_process() is None:
        return
    _hooked_pid = os.getpid()
    multiprocessing.util.Finalize(None, _flush_at_worker_exit, exitpriority=10)
    defer_sigterm_while_exiting()


def _flush_at_worker_exit() -> None:
    # ``with Pool()`` ends in terminate(): SIGTERM to the workers still alive, which are the
    # ones flushing here. Without glmtrace they would have nothing left to do.
    with sigterm_held():
        DEFAULT.shutdown_at_exit()


def _after_multiprocessing_fork(runtime: Any) -> None:
    # A fork-started multiprocessing.Process ends through os._exit as well: when glmtrace is
    # running in it (inherited from the parent), its spans are flushed at that exit too.
    if runtime.tracer is not None:
        _shutdown_at_worker_exit()


# Run by multiprocessing in each child it starts, after it clears the inherited finalizers.
multiprocessing.util.register_after_fork(DEFAULT, _after_multiprocessing_fork)


def propagate(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn`` so that, run in another process, its spans join the current trace.

    Example::

        with glmtrace.span("fan-out"):
            with ProcessPoolExecutor() as pool:
                list(pool.map(glmtrace.propagate(work), items))
    """
    carrier: dict[str, str] = {}
    inject(carrier)
    settings = DEFAULT.options.as_arguments() if DEFAULT.options is not None else {}
    return Propagated(fn, carrier, settings)
