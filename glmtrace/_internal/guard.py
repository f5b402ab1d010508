"""The one guard between user code and glmtrace internals.

Anything that goes wrong inside glmtrace is logged once on the ``glmtrace`` logger and the
caller carries on; under glmtrace's own test suite (``GLMTRACE_STRICT=1``) the error is
re-raised so that SDK bugs fail tests instead of hiding.

:func:`internal_errors` is the guard, as a ``with`` block or a decorator. A hand-written
``try``/``except`` with :func:`report` remains where the ``except`` branch does more (counts a
drop, falls back) and on the per-span path (starting, ending, annotating spans; module hooks),
where a ``try`` block costs nothing until it fails and a ``with`` block costs an object and two
calls per span.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("glmtrace")

# Keys already logged. dict.setdefault is one atomic step (str keys), so no lock is needed:
# a lock here would be one more that a forked child could inherit held.
_seen: dict[str, object] = {}


def _first(key: str) -> bool:
    mark = object()
    return _seen.setdefault(key, mark) is mark


def strict() -> bool:
    """True when internal errors must propagate (glmtrace's own tests)."""
    return os.environ.get("GLMTRACE_STRICT") == "1"


def _handled(where: str, exc: BaseException) -> bool:
    """Log ``exc`` once per (place, type) and return True; False when it must propagate:
    under strict mode, and for what is no error (KeyboardInterrupt, SystemExit, ...)."""
    if not isinstance(exc, Exception) or strict():
        return False
    if _first(f"{where}:{type(exc).__name__}"):
        log.warning("glmtrace internal error in %s (user code continues)", where, exc_info=exc)
    return True


def report(where: str, exc: BaseException) -> None:
    """Log an internal error once per (place, exception type); re-raise when strict.

    For an ``except`` branch that does more than report (a drop to count, a back-off);
    otherwise use :class:`internal_errors`.
    """
    if not _handled(where, exc):
        raise exc


class internal_errors:  # lower case: it reads as a verb phrase, like contextlib.suppress
    """Report, and swallow, an internal error raised in a block or a function.

    ``with internal_errors("shipping to es"): ...`` goes on after the block;
    ``@internal_errors("red metrics")`` makes the function return None. Either way the error is
    logged once per (place, type) on the ``glmtrace`` logger, re-raised when strict, and a
    BaseException that is no error (KeyboardInterrupt, SystemExit, GeneratorExit) passes
    through untouched. An instance holds no state, so one may be shared between threads.
    """

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:  # bool, not None: type checkers then know the block may be cut short
        return exc is not None and _handled(self.where, exc)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R | None]:
        where = self.where

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:  # not ``with self``: a try costs nothing on the hot paths this wraps
                return fn(*args, **kwargs)
            except Exception as exc:
                if _handled(where, exc):
                    return None
                raise

        return guarded


def warn_once(key: str, message: str, *args: object) -> None:
    """Warn on the glmtrace logger the first time ``key`` is seen."""
    if _first(key):
        log.warning(message, *args)


class RepeatFilter(logging.Filter):
    """Lets each distinct message through once per ``interval`` seconds.

    OpenTelemetry's exporters log every failed attempt; with a collector down for an hour
    that would be thousands of identical lines in the user's logs. Drops are counted in
    ``glmtrace.stats()`` instead.
    """

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self._interval = interval
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        self._last[key] = now
        return True


_REPEAT_FILTER = RepeatFilter()
NOISY_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.sdk._shared_internal",
    # "Attributes dict is full" for every attribute over the count limit: glmtrace keeps
    # within it and counts the rest (glmtrace.attributes.dropped); once a minute is enough.
    "opentelemetry.attributes",
)


def quiet_exporter_logs() -> None:
    """Rate-limit OpenTelemetry's per-attempt export errors (idempotent)."""
    for name in NOISY_LOGGERS:
        target = logging.getLogger(name)
        if _REPEAT_FILTER not in target.filters:
            target.addFilter(_REPEAT_FILTER)
