"""Signals that end the program: SIGTERM turned into ``SystemExit``, and the spans they cut.

By default SIGTERM kills the interpreter without running ``finally`` blocks or ``atexit``
hooks, losing the spans still open and everything queued. While glmtrace runs (and the
program leaves SIGTERM at its default) it raises :class:`SignalExit` instead, so open spans
end, marked interrupted, and the exit-time shutdown flushes.
"""

from __future__ import annotations

import signal
import threading


class SignalExit(SystemExit):
    """``SystemExit(128 + signum)`` raised by glmtrace's SIGTERM handler."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise SignalExit(signum)


def sigterm_handler(install: bool) -> None:
    """Install (or remove) the SIGTERM handler; a handler the program set itself wins."""
    if threading.current_thread() is not threading.main_thread():
        return
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
