"""Starting and ending spans: the span handle, ``span()`` and exception recording."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, Status, StatusCode

from .attributes import (
    AttributeValue,
    Limits,
    bound_name,
    coerce,
    coerce_attributes,
    scrub,
    truncate,
)
from .export.rows import span_id_hex, trace_id_hex
from .guard import report
from .keys import BAGGAGE_SESSION_ID, INTERRUPTED, SESSION_ID, SIGNAL, THREAD_ID, THREAD_NAME
from .repair import safe_str
from .signals import interrupting_signal

if TYPE_CHECKING:
    from .runtime import Runtime


def stamp_context(attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    """Add the thread and the envelope's session id (W3C baggage) to a new span's attributes.

    Passed at span creation rather than set by a SpanProcessor: one attribute dict costs far
    less than three locked ``set_attribute`` calls.
    """
    thread = threading.current_thread()
    attributes[THREAD_ID] = thread.ident or 0
    attributes[THREAD_NAME] = thread.name
    session = baggage.get_baggage(BAGGAGE_SESSION_ID)
    if session is not None:
        attributes[SESSION_ID] = str(session)
    return attributes


def record_error(span: Span, exc: BaseException, limits: Limits) -> None:
    """Mark ``span`` as failed by ``exc``: status ERROR and an ``exception`` event."""
    try:
        message = truncate(scrub(safe_str(exc)), limits.max_length)
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        span.add_event(
            "exception",
            {
                "exception.type": type(exc).__qualname__,
                "exception.message": message,
                "exception.stacktrace": truncate(scrub(stack), limits.max_length * 4),
                "exception.escaped": True,
            },
        )
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
    except Exception as internal:
        report("record_error", internal)


def record_end(span: Span, exc: BaseException, limits: Limits) -> None:
    """Record how ``exc`` ended ``span``: an error, an interrupting signal, or nothing
    (``sys.exit()``, ``GeneratorExit`` and the like are no failure)."""
    if isinstance(exc, Exception):
        record_error(span, exc, limits)
        return
    name = interrupting_signal(exc)
    if name is not None:
        try:
            span.add_event(INTERRUPTED, {SIGNAL: name})
            span.set_status(Status(StatusCode.ERROR, f"interrupted by {name}"))
        except Exception as internal:
            report("record_end", internal)


class SpanHandle:
    """What ``with glmtrace.span(...) as s`` yields: set attributes, add events.

    Before ``init()`` (or when sampled out) every method is a no-op.
    """

    __slots__ = ("_limits", "_span")

    def __init__(self, span: Span, limits: Limits) -> None:
        self._span = span
        self._limits = limits

    @property
    def trace_id(self) -> str | None:
        """32 lowercase hex characters, or None for a no-op span."""
        ctx = self._span.get_span_context()
        return trace_id_hex(ctx.trace_id) if ctx.is_valid else None

    @property
    def span_id(self) -> str | None:
        """16 lowercase hex characters, or None for a no-op span."""
        ctx = self._span.get_span_context()
        return span_id_hex(ctx.span_id) if ctx.is_valid else None

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute; the value is coerced and redacted like every other."""
        try:
            if self._span.is_recording():
                self._span.set_attributes(
                    coerce_attributes({key: value}, self._limits, _present(self._span))
                )
        except Exception as exc:
            report("SpanHandle.set_attribute", exc)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        try:
            if self._span.is_recording():
                self._span.set_attributes(
                    coerce_attributes(attributes, self._limits, _present(self._span))
                )
        except Exception as exc:
            report("SpanHandle.set_attributes", exc)

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Add a timestamped event to the span."""
        try:
            if self._span.is_recording():
                self._span.add_event(
                    bound_name(str(coerce(name, self._limits))),
                    coerce_attributes(attributes or {}, self._limits),
                )
        except Exception as exc:
            report("SpanHandle.add_event", exc)

    def record_exception(self, exc: BaseException) -> None:
        """Mark the span as failed by ``exc`` without raising it."""
        if self._span.is_recording():
            record_error(self._span, exc, self._limits)


def _present(span: Span) -> Mapping[str, Any]:
    """The attributes ``span`` has so far (an SDK span's), to keep within its count limit."""
    attributes = getattr(span, "attributes", None)
    return attributes if isinstance(attributes, Mapping) else {}


NOOP_HANDLE = SpanHandle(trace.INVALID_SPAN, Limits())
H = TypeVar("H", bound=SpanHandle)


class Scope(Generic[H]):
    """A span made current for a ``with`` (or ``async with``) block.

    Subclasses choose the handle the block gets (:meth:`_handle`) and may add last
    attributes before the span ends (:meth:`_before_end`).
    """

    def __init__(self, runtime: Runtime, name: str, attributes: Mapping[str, Any] | None) -> None:
        self._runtime = runtime
        self._name = name if isinstance(name, str) else safe_str(name)
        self._attributes = attributes
        self._span: Span | None = None
        self._token: object | None = None

    def _handle(self, span: Span | None) -> H:
        raise NotImplementedError

    def _before_end(self, span: Span) -> None:
        """Hook: last attributes before the span ends."""

    def _open(self) -> Span | None:
        rt = self._runtime
        if rt.tracer is None:
            return None
        try:
            attributes = (
                coerce_attributes(self._attributes, rt.limits) if self._attributes else None
            )
            span = rt.start_span(self._name, attributes)
            if span is not None:
                self._span = span
                self._token = otel_context.attach(trace.set_span_in_context(span))
            return span
        except Exception as exc:
            report(f"span {self._name.split(' ')[0]}", exc)
            return None

    def __enter__(self) -> H:
        return self._handle(self._open())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        try:
            self._before_end(span)
            if exc is not None:
                record_end(span, exc, self._runtime.limits)
        except Exception as internal:
            report("span exit", internal)
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            span.end()

    async def __aenter__(self) -> H:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class SpanScope(Scope[SpanHandle]):
    """``glmtrace.span(name)``: a sync and async context manager yielding a :class:`SpanHandle`."""

    def _handle(self, span: Span | None) -> SpanHandle:
        return NOOP_HANDLE if span is None else SpanHandle(span, self._runtime.limits)
