"""Fork safety in one place: hooks that reset a module's state in a forked child.

A child forked while another thread held a lock, ran an export or had a socket open inherits
all of that without the thread: a lock stays held forever, counts cover work the parent does.
Every module that keeps such state registers a hook here, run right after ``os.fork()`` in the
child (multiprocessing's fork start method and DataLoader workers included).

The Elasticsearch and Fluent sinks, which own a connection and a thread, compare
``os.getpid()`` on their next use instead: a child that never ships a log then opens nothing.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Callable
from types import MethodType

from .guard import internal_errors

Hook = Callable[[], object]

# Insertion-ordered; a dict rather than a list so a collected object's entry can leave on its
# own (dict.pop is one atomic step) while another thread registers.
_hooks: dict[int, Callable[[], Hook | None]] = {}
_keys = itertools.count()


def after_fork_in_child(hook: Hook) -> None:
    """Run ``hook`` in every child this process forks from now on, in registration order.

    A bound method is held through a weak reference: registering never keeps its object
    alive, and the hook is forgotten once the object is collected. Any other callable (a
    module function) is held for the life of the process.
    """
    key = next(_keys)
    if isinstance(hook, MethodType):
        _hooks[key] = weakref.WeakMethod(hook, lambda _: _hooks.pop(key, None))
    else:
        _hooks[key] = lambda: hook


def _run_in_child() -> None:
    for resolve in list(_hooks.values()):
        hook = resolve()
        if hook is not None:
            # One hook's bug must not leave the next one's lock held.
            with internal_errors(f"{getattr(hook, '__qualname__', hook)} after fork"):
                hook()


os.register_at_fork(after_in_child=_run_in_child)
