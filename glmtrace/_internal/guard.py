"""The one guard between user code and glmtrace internals.

Anything that goes wrong inside glmtrace is logged once on the ``glmtrace`` logger and the
caller carries on; under glmtrace's own test suite (``GLMTRACE_STRICT=1``) the error is
re-raised so that SDK bugs fail tests instead of hiding.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("glmtrace")

_seen: set[str] = set()
_seen_lock = threading.Lock()


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


def guarded(default: R) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an internal function so that it returns ``default`` instead of raising."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        where = fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                report(where, exc)
                return default

        return wrapper

    return decorate
