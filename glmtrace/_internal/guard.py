"""The one guard between user code and glmtrace internals.

Anything that goes wrong inside glmtrace is logged once on the ``glmtrace`` logger and the
caller carries on; under glmtrace's own test suite (``GLMTRACE_STRICT=1``) the error is
re-raised so that SDK bugs fail tests instead of hiding.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("glmtrace")

_seen: set[str] = set()
_seen_lock = threading.Lock()


def _after_fork() -> None:
    global _seen_lock
    _seen_lock = threading.Lock()  # the parent's may be held by a thread the child lacks


os.register_at_fork(after_in_child=_after_fork)


def strict() -> bool:
    """True when internal errors must propagate (glmtrace's own tests)."""
    return os.environ.get("GLMTRACE_STRICT") == "1"


def report(where: str, exc: BaseException) -> None:
    """Log an internal error once per (place, exception type); re-raise when strict."""
    if strict():
        raise exc
    key = f"{where}:{type(exc).__name__}"
    with _seen_lock:
        first = key not in _seen
        _seen.add(key)
    if first:
        log.warning("glmtrace internal error in %s (user code continues)", where, exc_info=exc)


def warn_once(key: str, message: str, *args: object) -> None:
    """Warn on the glmtrace logger the first time ``key`` is seen."""
    with _seen_lock:
        if key in _seen:
            return
        _seen.add(key)
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
