"""How log records reach glmtrace without changing what the program's logging prints.

glmtrace captures records from ``log_level`` (INFO) up, also where the program's logging lets
only WARNING through. A record below a logger's effective level is never created, so the root
logger's level is lowered; the records that exist only because of that go to glmtrace's
handlers alone. Those handlers are not in the logger tree: every handler of the program sees
exactly the records it saw before ``init()``, and logging's last-resort printer still prints
the warnings no handler of the program handles (glmtrace's own among them).

This is done where logging dispatches records, ``Logger.callHandlers`` (sentry-python's
logging integration hooks the same place); uninstalled at shutdown unless another library
wrapped it since, in which case ours stays in its chain as a pass-through.
"""

from __future__ import annotations

import logging
import threading

from ..forks import after_fork_in_child

_lock = threading.Lock()
_handlers: tuple[logging.Handler, ...] = ()
_saved_root_level: int | None = None  # the program's root level, while glmtrace lowers it
_lowered_to: int | None = None
_previous = logging.Logger.callHandlers


def _program_level(logger: logging.Logger) -> tuple[int, bool]:
    """The effective level ``logger`` would have without glmtrace, and whether its records
    propagate up to the root logger (where glmtrace captures them)."""
    level = 0
    reaches_root = True
    node: logging.Logger | None = logger
    root = logging.root
    while node is not None and node is not root:
        if not level and node.level:
            level = node.level
        if not node.propagate:
            reaches_root = False
        node = node.parent
    if not level:
        saved = _saved_root_level
        # A program that set the root level itself since init() has the last word.
        level = saved if saved is not None and root.level == _lowered_to else root.level
    return level, reaches_root


def _call_handlers(self: logging.Logger, record: logging.LogRecord) -> None:
    handlers = _handlers
    if not handlers:
        _previous(self, record)
        return
    level, reaches_root = _program_level(self)
    if reaches_root:
        for handler in handlers:
            if record.levelno >= handler.level:
                handler.handle(record)
    if record.levelno >= level:
        _previous(self, record)


def capture(handler: logging.Handler) -> None:
    """Hand every record from ``handler.level`` up to ``handler`` (idempotent)."""
    global _handlers, _saved_root_level, _lowered_to, _previous
    with _lock:
        if handler in _handlers:
            return
        _handlers = (*_handlers, handler)
        if logging.Logger.callHandlers is not _call_handlers:
            _previous = logging.Logger.callHandlers
            logging.Logger.callHandlers = _call_handlers  # type: ignore[method-assign]
        root = logging.getLogger()
        # One below the level wanted: no program sets such a level, so a root level that
        # differs from it later (``basicConfig(level=INFO)`` after init()) is the program's.
        wanted = min(h.level for h in _handlers) - 1
        if root.level > wanted:
            if _saved_root_level is None or root.level != _lowered_to:
                _saved_root_level = root.level
            _lowered_to = wanted
            root.setLevel(wanted)


def installed() -> tuple[logging.Handler, ...]:
    """The handlers records are handed to now."""
    return _handlers


def release(handler: logging.Handler) -> None:
    """Stop handing records to ``handler``; restore the root level after the last one."""
    global _handlers, _saved_root_level, _lowered_to
    with _lock:
        _handlers = tuple(h for h in _handlers if h is not handler)
        if _handlers:
            return
        root = logging.getLogger()
        if _saved_root_level is not None and root.level == _lowered_to:
            root.setLevel(_saved_root_level)
        _saved_root_level = _lowered_to = None
        if logging.Logger.callHandlers is _call_handlers:
            logging.Logger.callHandlers = _previous  # type: ignore[method-assign]


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may be held by a thread the child lacks


after_fork_in_child(_after_fork)
