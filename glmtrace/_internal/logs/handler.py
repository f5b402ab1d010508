"""Stdlib logging integration: trace ids on every record, ECS documents for the sinks.

After ``init()`` every ``logging.LogRecord`` carries ``trace.id`` and ``span.id`` (ECS names)
and ``otelTraceID``/``otelSpanID`` (the OpenTelemetry names): the ids inside a span, empty
strings outside one, so a format naming them works everywhere. Handlers turn records into one
flat ECS document (:func:`ecs_document`) shared by the local store, Elasticsearch and Fluent
sinks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from opentelemetry import baggage, trace

from ..attributes import Limits, jsonable, scrub, short_repr, truncate
from ..export.rows import context_ids
from ..forks import after_fork_in_child
from ..keys import BAGGAGE_SESSION_ID
from ..repair import safe_str
from . import capture, ecs
from .ecs import SPAN_ID, TRACE_ID, EcsDocument

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    TRACE_ID,
    SPAN_ID,
    "otelTraceID",
    "otelSpanID",
}

_previous_factory: Callable[..., logging.LogRecord] | None = None
_active = False


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _previous_factory is not None
    record = _previous_factory(*args, **kwargs)
    if _active:
        ids = context_ids(trace.get_current_span().get_span_context())
        trace_id, span_id = ids or ("", "")
        record.__dict__[TRACE_ID] = record.otelTraceID = trace_id
        record.__dict__[SPAN_ID] = record.otelSpanID = span_id
    return record


def install_record_factory() -> None:
    """Put trace ids on every new record (idempotent)."""
    global _previous_factory, _active
    if _previous_factory is None:
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_factory)
    _active = True


def uninstall_record_factory() -> None:
    """Stop adding trace ids; restore the previous factory when nobody wrapped ours since.

    When another library wrapped the factory after glmtrace, ours stays in its chain as a
    pass-through: unwinding it would break that library's wrapper.
    """
    global _previous_factory, _active
    _active = False
    if _previous_factory is not None and logging.getLogRecordFactory() is _factory:
        logging.setLogRecordFactory(_previous_factory)
        _previous_factory = None


class _Ids:
    """Cheap unique log ids: a random per-process prefix and a counter (reset after fork)."""

    def __init__(self) -> None:
        self._reset()
        after_fork_in_child(self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


_ids = _Ids()
_HOST = socket.gethostname()


def ecs_document(record: logging.LogRecord, service_name: str, limits: Limits) -> EcsDocument:
    """One flat ECS document for ``record`` (dotted keys; extras under ``labels.*``).

    ``log.level`` is the level's name as logging gives it ("WARNING"): ECS keeps the
    source's own spelling. ``stack_info=True`` goes to ``glmtrace.stack_info``.
    """
    doc: dict[str, Any] = {
        ecs.TIMESTAMP: dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
            timespec="microseconds"
        ),
        ecs.TIMESTAMP_NS: int(record.created * 1e9),
        ecs.LOG_ID: _ids.next(),
        ecs.ECS_VERSION_KEY: ecs.ECS_VERSION,
        ecs.MESSAGE: _message(record, limits),
        ecs.LOG_LEVEL: record.levelname,
        ecs.LOG_LOGGER: record.name,
        ecs.SERVICE_NAME: service_name,
        ecs.PROCESS_PID: record.process,
        ecs.THREAD_NAME: record.threadName,
        ecs.THREAD_ID: record.thread,
        ecs.HOST_HOSTNAME: _HOST,
        ecs.LOG_FUNCTION: record.funcName,
        ecs.LOG_FILE_NAME: record.filename,
        ecs.LOG_LINE: record.lineno,
    }
    trace_id = record.__dict__.get(TRACE_ID)
    if trace_id:  # empty outside a span: the document leaves the fields out
        doc[TRACE_ID] = trace_id
        doc[SPAN_ID] = record.__dict__[SPAN_ID]
    session = baggage.get_baggage(BAGGAGE_SESSION_ID)
    if session is not None:
        doc[ecs.LABEL_SESSION_ID] = str(session)
    if record.exc_info and record.exc_info[0] is not None:
        exc_type, exc, tb = record.exc_info
        doc[ecs.ERROR_TYPE] = exc_type.__name__
        doc[ecs.ERROR_MESSAGE] = limits_text(safe_str(exc), limits)
        doc[ecs.ERROR_STACK_TRACE] = limits_text(
            "".join(traceback.format_exception(exc_type, exc, tb)), limits
        )
    if record.stack_info:
        doc[ecs.STACK_INFO] = _stack_tail(scrub(record.stack_info), limits.max_length)
    for key, value in record.__dict__.items():
        if key not in _STANDARD:
            name = key if isinstance(key, str) else safe_str(key)  # extra={1: ...} is legal
            label = name if name.startswith(ecs.LABELS) else f"{ecs.LABELS}{name}"
            doc[label] = "[REDACTED]" if limits.is_secret(name) else jsonable(value, limits)
    return cast(EcsDocument, doc)


def limits_text(text: str, limits: Limits) -> str:
    """``text`` with credentials scrubbed, truncated to the attribute limit."""
    return truncate(scrub(text), limits.max_length)


def _stack_tail(stack: str, max_length: int) -> str:
    # The innermost frames, where the record was logged, are the stack's end.
    if len(stack) <= max_length:
        return stack
    return f"[truncated {len(stack) - max_length} chars]...{stack[-max_length:]}"


def _message(record: logging.LogRecord, limits: Limits) -> str:
    try:
        message = record.getMessage()
    except Exception:  # a bad %-format or a raising __str__ must not lose the record
        message = f"{short_repr(record.msg)} % {short_repr(record.args)}"
    return limits_text(message, limits)


class DocumentHandler(logging.Handler):
    """Turns each record into one ECS document on the caller's thread and hands it to every
    sink's ``submit`` (sinks only read documents, so they share it).

    ``submit`` must not block (a :class:`~glmtrace._internal.logs.shipper.BackgroundShipper`).
    Records from glmtrace's own loggers and from the shipping threads are skipped, so a
    failing sink cannot feed on its own error messages.
    """

    def __init__(
        self,
        submits: Sequence[Callable[[dict[str, Any]], None]],
        service_name: str,
        limits: Limits,
    ) -> None:
        super().__init__()
        self._submits = tuple(submits)
        self._service_name = service_name
        self._limits = limits

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "glmtrace" or record.name.startswith(("glmtrace.", "elastic_transport")):
            return
        if threading.current_thread().name.startswith("glmtrace-"):
            return
        try:
            document = cast(dict[str, Any], ecs_document(record, self._service_name, self._limits))
            kept = _diverted.into
            if kept is not None and len(kept) < MAX_DIVERTED:
                kept.append(document)
                return
            self.submit(document)
        except Exception:
            self.handleError(record)

    def submit(self, document: dict[str, Any]) -> None:
        for submit in self._submits:
            submit(document)

    def handleError(self, record: logging.LogRecord) -> None:
        import sys

        from ..guard import report

        exc = sys.exc_info()[1]
        if exc is not None:
            report("log handler", exc)


class _Diversion(threading.local):
    # A class default: every log call reads it, and a missing thread-local attribute would
    # cost a raised and caught AttributeError each time.
    into: list[dict[str, Any]] | None = None


_diverted = _Diversion()
# Documents one diversion keeps (one DataLoader batch); later ones are shipped at once, under
# the provisional trace, so a dataset that logs without end neither grows the batch nor loses
# lines.
MAX_DIVERTED = 1_000


@contextlib.contextmanager
def diverted() -> Iterator[list[dict[str, Any]]]:
    """Documents made on this thread are kept in the yielded list instead of being shipped.

    A DataLoader worker logs under a provisional trace; its documents travel with the batch
    and are shipped by the process that learns the real trace (:func:`submit_documents`).
    """
    previous = _diverted.into
    kept: list[dict[str, Any]] = []
    _diverted.into = kept
    try:
        yield kept
    finally:
        _diverted.into = previous


def submit_documents(documents: Sequence[dict[str, Any]]) -> None:
    """Ship documents made elsewhere through every handler glmtrace has installed here."""
    for handler in capture.installed():
        if isinstance(handler, DocumentHandler):
            for document in documents:
                handler.submit(document)
