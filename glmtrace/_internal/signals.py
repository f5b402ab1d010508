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
A main thread blocked in C code (a hung collective, a long kernel wait) runs no Python handler
until the call returns, where without glmtrace SIGTERM would have killed it at once. So a
thread of glmtrace's learns of the signal through the interpreter's signal wakeup fd, written
the moment the signal arrives; if the handler has not run a second later it flushes within the
budget and the process dies by SIGTERM, as it would have without glmtrace. The wakeup fd is
one per process: when the program (an asyncio loop's signal handlers) holds it, glmtrace
leaves it alone and such a process waits for the C call, as with any Python-level handler.
"""

from __future__ import annotations

import contextlib
import multiprocessing.util
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator

from .forks import after_fork_in_child


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


_HANDLED = threading.Event()  # the Python-level handler ran
_GRACE_S = 1.0  # how long the handler may take to run before the main thread counts as stuck


class _AtExit:
    """SIGTERM reaching a worker process already on its way out, flushing its spans.

    ``with Pool()`` ends in ``terminate()``: SIGTERM to workers that may have just taken their
    stop sentinel and be running multiprocessing's exit finalizers, glmtrace's flush among
    them. Raised there, ``SignalExit`` would abort the finalizers and lose the spans, so once
    the exit has begun the signal is only noted; the worker dies by it after the flush.
    """

    def __init__(self) -> None:
        self.armed = False  # this process's exit flushes glmtrace (child_processes)
        self.came = False

    def defers(self) -> bool:
        return self.armed and multiprocessing.util.is_exiting()

    def after_fork(self) -> None:
        self.armed = self.came = False


_AT_EXIT = _AtExit()
after_fork_in_child(_AT_EXIT.after_fork)


def defer_sigterm_while_exiting() -> None:
    """Note SIGTERM instead of raising it once multiprocessing's exit sequence has begun."""
    _AT_EXIT.armed = True


def _on_sigterm(signum: int, frame: object) -> None:
    _HANDLED.set()
    if _AT_EXIT.defers():
        _AT_EXIT.came = True
        return
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
    _flush_within(flush, budget)
    if signal.getsignal(signum) is signal.SIG_DFL:  # a handler the program set since wins
        os.kill(os.getpid(), signum)


def _flush_within(flush: Callable[[], object], budget: float) -> None:
    done = threading.Thread(target=flush, name="glmtrace-sigterm-flush", daemon=True)
    done.start()
    done.join(budget + 0.5)


class _Listener:
    """A thread reading the signal wakeup fd: it sees SIGTERM when the main thread cannot."""

    STOP = b"\0"  # no signal has number 0

    def __init__(self) -> None:
        self.fds: tuple[int, int] | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the wakeup fd if nobody holds it (main thread only)."""
        if self.fds is not None:
            return
        read, write = os.pipe()
        try:
            os.set_blocking(write, False)  # the interpreter requires it
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except (ValueError, OSError):
            previous = None
        if previous != -1:  # the program's (or failed): leave it as it was
            if previous is not None:
                signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
            return
        self.fds = (read, write)
        self.thread = threading.Thread(
            target=self._run, args=(read, write), name="glmtrace-signal-listener", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        """Give the wakeup fd back, if it is still glmtrace's (main thread only)."""
        if self.fds is None:
            return
        write = self.fds[1]
        self.fds = None
        current = signal.set_wakeup_fd(-1)
        if current != write:  # taken over since: not ours to clear
            signal.set_wakeup_fd(current)
        with contextlib.suppress(OSError):
            os.write(write, self.STOP)  # the thread closes both ends
        if self.thread is not None:
            self.thread.join(1.0)  # shutdown leaves no glmtrace thread behind
            self.thread = None

    def _run(self, read: int, write: int) -> None:
        try:
            while True:
                select.select([read], [], [])
                data = os.read(read, 512)
                if not data or self.STOP in data:
                    return
                if bytes([signal.SIGTERM]) in data and signal.getsignal(signal.SIGTERM) is (
                    _on_sigterm
                ):
                    _unhandled_sigterm()
        except OSError:
            return
        finally:
            for fd in (read, write):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def after_fork(self) -> None:
        # The child shares the parent's pipe: its signals must not wake the parent's thread.
        # It needs a listener of its own as much as the parent: a pool worker waiting for its
        # next task sits in a semaphore wait that SIGTERM (``Pool.terminate()``) does not always
        # interrupt, and without one, glmtrace's inherited handler would never run there.
        global _HANDLED
        _HANDLED = threading.Event()  # the parent's may be mid-update by a thread gone here
        if self.fds is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(-1)
            for fd in self.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.fds = self.thread = None
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                self.start()


def _unhandled_sigterm() -> None:
    """SIGTERM arrived: if the main thread does not run the handler soon, it is stuck in C."""
    if _HANDLED.wait(_GRACE_S):
        return  # the handler ran: SignalExit and the watchdog take it from here
    _flush_within(_EXIT.flush, _EXIT.budget)
    if _HANDLED.is_set():
        return  # the C call returned meanwhile: the program unwinds as usual
    _die_by(signal.SIGTERM)


def _die_by(signum: int) -> None:
    """End the process by ``signum`` at its default action, from any thread.

    ``signal.signal`` works on the main thread only, and the main thread is stuck: reset the
    disposition in libc directly. Without ctypes, exit with the status a shell reports for it.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.signal.restype = ctypes.c_void_p
        libc.signal(ctypes.c_int(signum), ctypes.c_void_p(0))  # SIG_DFL
        os.kill(os.getpid(), signum)
        time.sleep(1.0)  # delivery is asynchronous
    finally:
        os._exit(128 + signum)


_LISTENER = _Listener()
after_fork_in_child(_LISTENER.after_fork)


class _ForkMask:
    """SIGTERM held back in a forked child until its fork hooks have run.

    A child is often told to stop the moment it is born (``with Pool()`` around a quick
    ``map`` terminates workers still starting). With glmtrace's handler inherited, SIGTERM in
    a fork hook (the SDK's re-reads the resource on a thread pool) raises ``SignalExit`` there,
    which the interpreter prints and swallows: the child lives on, its signal lost. So fork()
    blocks SIGTERM in the forking thread; the parent unblocks it at once, the child after the
    tracer provider's hook, dying by the signal if it came meanwhile (it has made no span).
    Threads the hooks start inherit the block and never take the signal from the main thread.
    """

    def __init__(self) -> None:
        # Per forking thread (two threads may fork at once); a child keeps its forker's.
        self.forking = threading.local()
        self.latest = 0

    def before(self) -> None:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            self.forking.blocked = signal.SIGTERM not in held

    def after_in_parent(self) -> None:
        if getattr(self.forking, "blocked", False):
            self.forking.blocked = False
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    def after_in_child(self, number: int) -> None:
        if not getattr(self.forking, "blocked", False) or number != self.latest:
            return  # an older provider's turn: a newer one's hook runs after this
        self.forking.blocked = False
        try:
            if signal.SIGTERM in signal.sigpending():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        except SignalExit:  # it came right now: the handler ran (and left the default)
            os.kill(os.getpid(), signal.SIGTERM)

    def follow_provider(self) -> None:
        """Unblock after the hooks registered so far (each ``init()``'s new provider has
        one): fork hooks run in the order they were registered, and none can be removed."""
        self.latest += 1
        number = self.latest
        os.register_at_fork(after_in_child=lambda: self.after_in_child(number))


_FORK_MASK = _ForkMask()
os.register_at_fork(before=_FORK_MASK.before, after_in_parent=_FORK_MASK.after_in_parent)


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
        _HANDLED.clear()
        signal.signal(signal.SIGTERM, _on_sigterm)
        _LISTENER.start()
        _FORK_MASK.follow_provider()
    elif not install and current is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _LISTENER.stop()


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """Hold SIGTERM back for the block, then die by it if it came (main thread only).

    For a flush that is the last thing a process does, where SIGTERM is the usual way it is
    told to stop, not an emergency: ``multiprocessing.Pool``'s ``terminate()`` (the end of
    every ``with Pool()``) sends it to workers that are flushing their spans at exit, and
    would lose them. The flush is bounded by its own deadline. A handler the program set
    itself is left alone.
    """
    came: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous not in (
        signal.SIG_DFL,
        _on_sigterm,
    ):
        yield
        return

    def hold(signum: int, frame: object) -> None:
        came.append(signum)
        # Handled: the listener thread, which sees every SIGTERM on the wakeup fd, must not
        # take it for one the main thread cannot run and kill the process mid-flush.
        _HANDLED.set()

    signal.signal(signal.SIGTERM, hold)
    try:
        yield
    finally:
        # glmtrace's own handler has nothing left to do once the exit-time flush ran.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if came or _AT_EXIT.came:
            os.kill(os.getpid(), signal.SIGTERM)


def interrupting_signal(exc: BaseException) -> str | None:
    """The name of the signal ``exc`` stands for (SIGTERM, SIGINT), or None."""
    if isinstance(exc, SignalExit):
        return signal.Signals(exc.signum).name
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT.name
    return None
