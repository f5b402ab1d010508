"""The native store writer: finished spans go from the native queue into the local store.

With ``glmtrace_native`` built (and ``GLMTRACE_NATIVE`` not 0), ``traces="local"`` hands each
finished span to the extension's bounded queue, as the OTLP path does, and a Rust thread inserts
the rows into the ``spans`` table, in batched transactions and without the GIL: rows equal to
what :class:`~glmtrace._internal.export.exporters.StoreSpanExporter` writes. Logs stay on the
Python writer.

The extension must use the very SQLite library Python's ``sqlite3`` uses: two copies of SQLite
in one process on one file corrupt it (each keeps its own table of the POSIX locks the process
holds, and one closing its descriptor drops the other's locks). So it links the system's
libsqlite3 dynamically, and :func:`unavailable` checks, before the first span, that both
resolve ``sqlite3_libversion`` to the same address; if not, the Python writer does the work.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

from ..guard import report
from ..native_export import NativeSpanProcessor, SpanTuples, extension, forced_off
from . import fork_safety
from .database import WAIT_S, Store
from .rows import json_text, resource_values

_SINK = "local"
_BATCH = 512  # rows per transaction, as the Python path's batch processor
_DELAY_S = 0.5  # how long a partial batch waits


def python_sqlite_address() -> int | None:
    """Where Python's ``_sqlite3`` finds ``sqlite3_libversion``; None if it does not say."""
    import _sqlite3

    try:
        library = ctypes.CDLL(_sqlite3.__file__)
        return ctypes.cast(library.sqlite3_libversion, ctypes.c_void_p).value
    except (AttributeError, OSError):  # built into the interpreter, or its symbols hidden
        return None


def unavailable() -> str | None:
    """Why spans to the local store take the Python writer, or None: the native one can."""
    native = extension()
    if native is None:
        return "glmtrace_native is not built"
    if forced_off():
        return "GLMTRACE_NATIVE=0"
    if not hasattr(native, "StoreWriter"):
        return "this build of glmtrace_native has no store writer"
    return other_sqlite()


@functools.cache
def other_sqlite() -> str | None:
    """Why the extension's SQLite is not Python's, or None when both use the same copy."""
    native = extension()
    assert native is not None
    address, version = native.sqlite_library()
    if address != python_sqlite_address():
        return (
            f"glmtrace_native loads a different copy of SQLite ({version}) than Python's sqlite3;"
            " two copies in one process would corrupt the store"
        )
    return None


def describe() -> str:
    """Which writer puts spans into the local store, and why (for ``glmtrace doctor``)."""
    reason = unavailable()
    if reason is not None:
        return f"Python store writer ({reason})"
    return "native store writer (glmtrace_native): rows written without the GIL"


def start(store: Store, shutdown_timeout: float, max_queue: int) -> NativeStoreProcessor | None:
    """The native writer for ``store``, or None when the Python writer must do the work."""
    if unavailable() is not None:
        return None
    try:
        return NativeStoreProcessor(store, shutdown_timeout, max_queue)
    except Exception as exc:  # the store cannot be created: the Python writer counts its drops
        report("native store writer", exc)
        return None


class NativeStoreProcessor(NativeSpanProcessor):
    """Hands each finished span to the native store writer; counts into ``stats()["local"]``."""

    sink = _SINK

    def __init__(self, store: Store, shutdown_timeout: float, max_queue: int) -> None:
        # Not NativeSpanProcessor.__init__ (OTLP settings, a fork hook of its own): a fork
        # pauses and restarts this writer through fork_safety, with Python's connections.
        store.prepare()  # the file and its tables, as the Python store makes them
        self._store = store
        self._path = os.fsencode(os.path.abspath(store.path))
        self._max_queue = max_queue
        self._shutdown_timeout = shutdown_timeout * 0.8
        self._closed = False
        self._start()
        fork_safety.add_writer(self)

    def _start(self) -> None:
        native = extension()
        assert native is not None
        writer = native.StoreWriter(
            self._path, WAIT_S, self._max_queue, _BATCH, _DELAY_S, json_text
        )

        def add_resource(attributes: Any, schema_url: str | None) -> int:
            # The pid of the process writing, as StoreSpanExporter sets it.
            return int(writer.resource(*resource_values(attributes, os.getpid())))

        self._use(writer, SpanTuples(add_resource, lambda *scope: 0))  # rows have no scope

    def pause(self, timeout: float) -> bool:
        return bool(self.pipeline.pause(timeout))

    def resume(self) -> None:
        self.pipeline.resume()

    def restart_in_child(self, usable: bool) -> None:
        if self._closed:
            return
        self._start()  # the parent's writer and its thread do not exist here
        if not usable:  # forked while the parent's writer was inside SQLite: refuse, count
            self.pipeline.shutdown(0.0)

    def shutdown(self) -> None:
        self._closed = True
        super().shutdown()
        self._store.close()
