"""Starting and ending spans: the span handle, ``span()`` and exception recording."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from .attributes import Limits, coerce_attributes, scrub, truncate
from .export.rows import span_id_hex, trace_id_hex
from .guard import report
from .keys import INTERRUPTED, SIGNAL
from .repair import safe_str
from .running import attach, detach
from .signals import interrupting_signal
from .thin import Source, ThinSpan, start


def record_error(span: ThinSpan, exc: BaseException, limits: Limits) -> None:
    """Mark ``span`` as failed by ``exc``: status ERROR and an ``exception`` event."""
    try:
        message = truncate(scrub(safe_str(exc)), limits.max_length)
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        span.event(
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


def record_end(span: ThinSpan, exc: BaseException, limits: Limits) -> None:
    """Record how ``exc`` ended ``span``: an error, an interrupting signal, or nothing
    (``sys.exit()``, ``GeneratorExit`` and the like are no failure)."""
    if isinstance(exc, Exception):
        record_error(span, exc, limits)
        return
    name = interrupting_signal(exc)
    if name is not None:
        try:
            span.event(INTERRUPTED, {SIGNAL: name})
            span.set_status(Status(StatusCode.ERROR, f"interrupted by {name}"))
        except Exception as internal:
            report("record_end", internal)


class SpanHandle:
    """What ``with glmtrace.span(...) as s`` yields: set attributes, add events.

    Before ``init()`` (or when sampled out) every method is a no-op.
    """

    __slots__ = ("_limits", "_span")

    def __init__(self, span: ThinSpan | Span, limits: Limits) -> None:
        self._span = span  # a ThinSpan, or INVALID_SPAN: it coerces what it is given
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
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        try:
            self._span.set_attributes(attributes)
        except Exception as exc:
            report("SpanHandle.set_attributes", exc)

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Add a timestamped event to the span."""
        try:
            self._span.add_event(name, attributes)
        except Exception as exc:
            report("SpanHandle.add_event", exc)

    def record_exception(self, exc: BaseException) -> None:
        """Mark the span as failed by ``exc`` without raising it."""
        span = self._span
        if isinstance(span, ThinSpan) and span.is_recording():
            record_error(span, exc, self._limits)


NOOP_HANDLE = SpanHandle(trace.INVALID_SPAN, Limits())
H = TypeVar("H", bound=SpanHandle)


class Scope(Generic[H]):
    """A span made current for a ``with`` (or ``async with``) block.

    Subclasses choose the handle the block gets (:meth:`_handle`) and may add last
    attributes before the span ends (:meth:`_before_end`).
    """

    def __init__(self, source: Source, name: str, attributes: Mapping[str, Any] | None) -> None:
        self._source = source
        self._name = name if isinstance(name, str) else safe_str(name)
        self._attributes = attributes
        self._span: ThinSpan | None = None
        self._token: object | None = None

    def _handle(self, span: ThinSpan | None) -> H:
        raise NotImplementedError

    def _before_end(self, span: ThinSpan) -> None:
        """Hook: last attributes before the span ends."""

    def _open(self) -> ThinSpan | None:
        source = self._source
        tracer = source.tracer
        if tracer is None:
            return None
        try:
            limits = source.limits
            attributes = coerce_attributes(self._attributes, limits) if self._attributes else None
            span = start(tracer, self._name, attributes, limits)
            if span is not None:
                self._span = span
                self._token = attach(span.in_context())
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
                record_end(span, exc, span.limits)
        except Exception as internal:
            report("span exit", internal)
        finally:
            detach(self._token)  # type: ignore[arg-type]
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

    def _handle(self, span: ThinSpan | None) -> SpanHandle:
        return NOOP_HANDLE if span is None else SpanHandle(span, span.limits)
