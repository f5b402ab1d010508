"""Signals that end the program: SIGTERM turned into ``SystemExit``, and the spans they cut.

By default SIGTERM kills the interpreter without running ``finally`` blocks or ``atexit``
hooks, losing the spans still open and everything queued. While glmtrace runs (and the
program leaves SIGTERM at its default) it raises :class:`SignalExit` instead, so open spans
end, marked interrupted, and the exit-time shutdown flushes.

``SystemExit`` alone does not always end a process: the interpreter waits for non-daemon
threads before it runs ``atexit`` (a server loop never ends), and the program may swallow
it. So the handler also starts a watchdog that, when the process outlives the flush budget
(or at once when only non-daemon threads keep it alive), flushes within that budget and
re-sends SIGTERM, now at its default: the process dies by the signal, as without glmtrace.
A main thread blocked in C code (a hung collective) never runs the Python handler at all:
there SIGTERM waits for the C call to return, as with any Python-level handler.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable


class SignalExit(SystemExit):
    """``SystemExit(128 + signum)`` raised by glmtrace's SIGTERM handler."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _nothing() -> None:
    return None


class _Exit:
    """What the watchdog runs once the handler ran: the runtime's flush, and its budget."""

    def __init__(self) -> None:
        self.flush: Callable[[], object] = _nothing
        self.budget = 2.0


_EXIT = _Exit()


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    with contextlib.suppress(Exception):  # no thread to be had: the SystemExit path remains
        threading.Thread(
            target=_watchdog,
            args=(signum, _EXIT.flush, _EXIT.budget),
            name="glmtrace-sigterm-watchdog",
            daemon=True,
        ).start()
    raise SignalExit(signum)


def _watchdog(signum: int, flush: Callable[[], object], budget: float) -> None:
    # The exit-time shutdown takes at most `budget`; a second on top for the unwinding.
    deadline = time.monotonic() + budget + 1.0
    main = threading.main_thread()
    main.join(budget + 1.0)
    if main.is_alive() or not _waited_on():
        # Still in the program, or exiting normally (atexit flushes): intervene only late.
        time.sleep(max(0.0, deadline - time.monotonic()))
    # The main thread is done but a non-daemon thread holds the process, so atexit (and its
    # flush) would never run; or the deadline passed. Flush here, bounded, then die by it.
    done = threading.Thread(target=flush, name="glmtrace-sigterm-flush", daemon=True)
    done.start()
    done.join(budget + 0.5)
    if signal.getsignal(signum) is signal.SIG_DFL:  # a handler the program set since wins
        os.kill(os.getpid(), signum)


def _waited_on() -> bool:
    """True when a non-daemon thread other than the main one is alive (exit waits for it)."""
    main = threading.main_thread()
    return any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())


def sigterm_handler(
    install: bool, flush: Callable[[], object] | None = None, budget: float = 2.0
) -> None:
    """Install (or remove) the SIGTERM handler; a handler the program set itself wins.

    ``flush`` is what the watchdog runs when the exit-time shutdown cannot (``budget`` is
    its time limit).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if flush is not None:
        _EXIT.flush, _EXIT.budget = flush, budget
    current = signal.getsignal(signal.SIGTERM)
    if install and current is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    elif not install and current is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interrupting_signal(exc: BaseException) -> str | None:
    """The name of the signal ``exc`` stands for (SIGTERM, SIGINT), or None."""
    if isinstance(exc, SignalExit):
        return signal.Signals(exc.signum).name
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT.name
    return None
