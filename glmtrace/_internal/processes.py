"""Carrying a trace into other processes (ProcessPoolExecutor, multiprocessing).

Threads need nothing: ``init()`` instruments ``threading`` and ``ThreadPoolExecutor``.
Processes need the context shipped by value, which :func:`propagate` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from .guard import report
from .propagation import attach, inject
from .runtime import DEFAULT

P = ParamSpec("P")
R = TypeVar("R")


class Propagated(Generic[P, R]):
    """A picklable callable that runs ``fn`` inside the trace it was created in.

    In the child process it initialises glmtrace with the parent's settings when needed
    (spawn start method) and flushes after each call, because worker processes exit through
    ``os._exit`` and never run ``atexit`` hooks.
    """

    def __init__(self, fn: Callable[P, R], carrier: dict[str, str], settings: dict[str, Any]):
        self.fn = fn
        self.carrier = carrier
        self.settings = settings
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if DEFAULT.tracer is None and self.settings:
            try:
                DEFAULT.init(**self.settings)
            except Exception as exc:
                report("init in child process", exc)
        try:
            with attach(self.carrier):
                return self.fn(*args, **kwargs)
        finally:
            DEFAULT.force_flush()


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
