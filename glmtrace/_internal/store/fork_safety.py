"""SQLite connections that never cross a ``fork()``.

SQLite keeps, per process, a table of the locks it believes the process holds on each file
(and on the WAL's shared memory). ``fork()`` copies that table but not the POSIX locks behind
it: a child that opens the store again finds the parent's entries, believes the file locked by
a connection of its own, and waits for a lock nobody will release (and, were it to write,
would do so without the locks that protect the WAL from a checkpoint in another process).

So every SQLite call of the process runs under one lock, and a fork hook takes that lock and
closes every store connection before the fork: the child starts with no SQLite state for the
store at all and opens its own. A fork that cannot get the lock in time (a stalled disk) goes
ahead without it; that child is marked unusable and its writes are refused and counted as
dropped, never left to hang.

A writer outside Python's ``sqlite3`` (the native store writer, same SQLite library) cannot take
that lock; it is paused instead: the fork waits until its thread is between transactions with
its connection closed. The parent resumes it; the child starts a writer of its own.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Protocol

from ..guard import internal_errors

# The longest a fork waits for a store call in another thread to finish.
FORK_WAIT_S = 5.0
# SQLite's own busy wait, per try; the caller retries with the lock let go in between.
_BUSY_MS = 50


class Holder(Protocol):
    """What owns a connection made here (a :class:`~glmtrace._internal.store.database.Store`)."""

    def forget_connection(self) -> sqlite3.Connection | None:
        """Give up the open connection (the process lock is held) without closing it."""
        ...


class Writer(Protocol):
    """A store writer with its own thread and connection (the native one)."""

    def pause(self, timeout: float) -> bool:
        """Be between transactions with the connection closed within ``timeout`` s; True if so."""
        ...

    def resume(self) -> None:
        """After the fork, in the parent: go on writing."""
        ...

    def restart_in_child(self, usable: bool) -> None:
        """In the child: a writer of its own (refusing and counting every span if not usable)."""
        ...


_lock = threading.Lock()
_holders: weakref.WeakSet[Holder] = weakref.WeakSet()
_writers: weakref.WeakSet[Writer] = weakref.WeakSet()
_forking = threading.local()  # per thread: two threads may fork at once
_unusable = False
# Connections a child inherited open: closing them would act on the parent's transactions and
# locks, so they are kept, unused, for the life of the process.
_inherited: list[sqlite3.Connection] = []


def lock() -> threading.Lock:
    """The lock every SQLite call of this process runs under."""
    return _lock


def unusable() -> bool:
    """True in a child forked while a store call was in progress: it must not open SQLite."""
    return _unusable


def connect(holder: Holder, path: Path) -> sqlite3.Connection:
    """A new connection to ``path`` for ``holder``; call with the process lock held."""
    conn = sqlite3.connect(
        path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
    )
    _holders.add(holder)
    return conn


def add_writer(writer: Writer) -> None:
    """Pause ``writer`` around every fork from now on (held weakly)."""
    _writers.add(writer)


def _before_fork() -> None:
    deadline = time.monotonic() + FORK_WAIT_S
    _forking.held = _lock.acquire(timeout=FORK_WAIT_S)
    _forking.writers = list(_writers) if _forking.held else []
    # Every writer is asked, even after one fails: each is resumed after the fork.
    paused = [w.pause(max(0.0, deadline - time.monotonic())) for w in _forking.writers]
    _forking.clean = _forking.held and all(paused)
    if not _forking.held:
        return
    for holder in list(_holders):
        conn = holder.forget_connection()
        if conn is None:
            continue
        with internal_errors("closing the store before fork"):
            conn.close()


def _after_fork_in_parent() -> None:
    writers, _forking.writers = getattr(_forking, "writers", []), []
    for writer in writers:
        with internal_errors("resuming a store writer after fork"):
            writer.resume()
    if getattr(_forking, "held", False):
        _lock.release()


def _after_fork_in_child() -> None:
    global _lock, _unusable
    _forking.writers = []
    if getattr(_forking, "held", False):
        _lock.release()
    else:
        _lock = threading.Lock()  # held by a parent thread the child does not have
        for holder in list(_holders):
            conn = holder.forget_connection()
            if conn is not None:
                _inherited.append(conn)
    # A writer that did not pause may have been inside SQLite: the child must not use it.
    _unusable = _unusable or not getattr(_forking, "clean", False)
    for writer in list(_writers):
        with internal_errors("restarting a store writer after fork"):
            writer.restart_in_child(not _unusable)


# The one hook glmtrace registers outside forks.after_fork_in_child: holding the lock across
# the fork takes a hook on each side of it, and the child's half must release what the
# parent's took, whatever other hooks do.
os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
