"""glmtrace's own spans, made on the calling thread without an OpenTelemetry SDK span.

``tracer.start_span()`` costs ~150k instructions per span (sampler, id generator, bounded
attribute dicts, a lock, two processor calls, a ``ReadableSpan`` copy at the end): more than
the stages and module hooks it would measure. A :class:`ThinSpan` is ids from
:data:`~.ids.IDS`, two clock reads and a plain attribute dict. It is itself the current span
while it runs, so OpenTelemetry instrumentations, ``inject()`` and log correlation see it (and
may set attributes on it), and when it ends it is handed off once: straight to the native
pipeline's queue as the tuple ``glmtrace_native`` reads when that pipeline is the provider's
only processor, else as one ``ReadableSpan`` to the provider's processors (the pure-Python
path, which behaves as before: local store, OTLP, test exporters, ``glmtrace.testing``).

Trade-offs, on purpose: a processor's ``on_start`` sees the :class:`ThinSpan` only when it
defines one (one whose body is not ``pass``); a child follows its parent's sampling decision
(the SDK's default ``ParentBased`` sampler; a root asks the provider's sampler). The SDK
documents ``ReadableSpan`` as created by its pipeline; its constructor is stable since 1.0.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Mapping
from contextvars import Token
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags, TraceState

from .attributes import (
    MAX_NAME_LENGTH,
    AttributeValue,
    Limits,
    bound_name,
    coerce,
    coerce_attributes,
    scrub,
    truncate,
)
from .emitter import (
    INTERNAL,
    NO_STATE,
    SAMPLED,
    UNSET,
    Emitter,
    emitter_for,
    getrandbits,
)
from .emitter import _cache as _emitters
from .forks import after_fork_in_child
from .guard import report
from .ids import refill_span_ids, span_ids
from .keys import BAGGAGE_SESSION_ID, SESSION_ID, THREAD_ID, THREAD_NAME
from .native_export import SYNC_EVERY
from .otel_internals import BAGGAGE_KEY, SPAN_KEY
from .repair import safe_str
from .running import attach, current_context, detach, reset_fast

_time_ns = time.time_ns
_dict_set = dict.__setitem__
_current_thread = threading.current_thread
_tuple_new = tuple.__new__
_new_span = object.__new__
_next_span_id = span_ids.pop  # IndexError when empty: refill_span_ids()
_here = threading.local()  # this thread's Thread and ident, found once
# A forked child's thread may get a new ident: it looks again.
after_fork_in_child(_here.__dict__.clear)


def error_status(exc: BaseException | None, max_length: int = 4096) -> Status:
    """ERROR with the exception's type and message, or UNSET."""
    if exc is None:
        return UNSET
    return Status(StatusCode.ERROR, truncate(scrub(f"{type(exc).__name__}: {exc}"), max_length))


class Source(Protocol):
    """Where glmtrace's spans come from: a runtime's tracer and limits (both change at init)."""

    tracer: trace.Tracer | None
    limits: Limits


def start(
    tracer: trace.Tracer | None,
    name: str,
    attributes: Mapping[str, AttributeValue] | None,
    limits: Limits,
    active: bool = False,
) -> ThinSpan | None:
    """Start a thin child of the current span, made current when ``active`` (else see
    :meth:`ThinSpan.activate`) until it ends; None before init or when sampled out.
    ``attributes`` are coerced already."""
    em = _emitters[0] if _emitters and _emitters[0].tracer is tracer else emitter_for(tracer)
    if em is None:
        return None
    if not isinstance(name, str):
        name = safe_str(name)  # span(None) must still be stored
    current = current_context()
    # The private key trace.get_current_span() reads, without its two calls.
    holder: Any = current.get(SPAN_KEY)
    if holder is None:
        parent: SpanContext | None = None
    elif type(holder) is ThinSpan:
        parent = holder._context or holder.context
    else:
        parent = holder.get_span_context()
    span = _new_span(ThinSpan)
    # A SpanContext is the tuple (trace_id, span_id, is_remote, flags, state, is_valid): read
    # by index, its properties would be a tenth of a span's cost.
    if parent is not None and parent[5]:
        if not parent[3] & SAMPLED:
            return None  # the children of a sampled-out span are sampled out
        span.trace_id, span.flags, span.state = parent[0], SAMPLED, parent[4]
    elif em.always:  # every new root sampled: no sampler to ask
        parent = None
        span.trace_id, span.flags, span.state = getrandbits(128) or 1, SAMPLED, NO_STATE
    else:
        parent = None
        root = em.new_context(None, name, keep_dropped=True)
        if root is None:
            return None
        span.trace_id, span.flags, span.state = root[0], root[3], root[4]
    try:
        span.span_id = _next_span_id()
    except IndexError:
        span.span_id = refill_span_ids()
    span._context = None
    # Stamped on every glmtrace span: the thread, and the envelope's session id (W3C baggage).
    stamped: dict[str, AttributeValue] = attributes.copy() if attributes else {}  # type: ignore[attr-defined]
    try:
        thread, ident = _here.thread
    except AttributeError:
        thread = _current_thread()
        ident = thread.ident or 0
        _here.thread = (thread, ident)
    stamped[THREAD_ID] = ident
    # Read each time (a thread may be renamed): the attribute behind Thread.name, without
    # the property's Python call.
    stamped[THREAD_NAME] = thread._name
    entries = current.get(BAGGAGE_KEY)
    if entries:
        session = entries.get(BAGGAGE_SESSION_ID) if isinstance(entries, dict) else None
        if session is not None:
            stamped[SESSION_ID] = str(session)
    # Set here rather than in an __init__: a third less than calling the class.
    span.emitter = em
    span.name = name if len(name) <= MAX_NAME_LENGTH else bound_name(name)
    span.parent = parent
    span.attributes = stamped
    span.limits = limits
    span.parent_context = current  # what was current at start
    span.end_ns = None
    span.start_ns = _time_ns()
    # otel_internals.PROCESSORS, read as an attribute: getattr() costs 300 instructions more.
    if em.processor._span_processors is not em._seen:
        em._route()
    if em.starts and span.flags & SAMPLED:  # a dropped root only carries its decision down
        for processor in em.starts:
            processor.on_start(span, parent_context=current)
    if active:
        # A plain dict, not a Context: the same mapping to every OpenTelemetry API (which only
        # reads it and copies it into a new Context to change it), at half the cost of making
        # and freeing a dict subclass (1,400 instructions, 4% of a stage).
        span.token = attach({**current, SPAN_KEY: span})  # type: ignore[arg-type]
    else:
        span.token = None
    return span


class ThinSpan(trace.Span):
    """A started glmtrace span: an OpenTelemetry API span, exported once by :meth:`end`.

    Made by :func:`start` only. Values set through the API are coerced, redacted and bounded
    like every glmtrace attribute; events and links are capped by the provider's span limits.
    """

    __slots__ = (
        "_context",
        "attributes",
        "emitter",
        "end_ns",
        "flags",
        "limits",
        "name",
        "parent",
        "parent_context",
        "span_id",
        "start_ns",
        "state",
        "token",
        "trace_id",
    )
    _context: SpanContext | None
    attributes: dict[str, AttributeValue]
    emitter: Emitter
    end_ns: int | None
    flags: TraceFlags
    limits: Limits
    name: str
    parent: SpanContext | None
    parent_context: Context
    span_id: int
    start_ns: int
    state: TraceState
    token: Token[Context] | None
    trace_id: int
    # Most spans never change these: class defaults, set on the instance when they do.
    events: BoundedList[Event] | None = None
    links: BoundedList[Link] | None = None
    status = UNSET

    @property
    def context(self) -> SpanContext:
        """This span's SpanContext, made when first asked for: most spans are never asked
        (a SpanContext is a tuple subclass, whose making and freeing cost 3% of a span)."""
        made = self._context
        if made is None:
            made = self._context = _tuple_new(  # as new_span_context(), without the call
                SpanContext, (self.trace_id, self.span_id, False, self.flags, self.state, True)
            )
        return made

    # ---------------------------------------------------------------- glmtrace's own use
    def in_context(self) -> Context:
        """The context current at start with this span current in it."""
        made = Context(self.parent_context)
        _dict_set(made, SPAN_KEY, self)  # a new Context, seen by no one yet
        return made

    def activate(self) -> None:
        """Make this span the current one (children nest under it) until :meth:`end`."""
        self.token = attach(self.in_context())

    def deactivate(self) -> None:
        token, self.token = self.token, None
        if token is not None:
            detach(token)

    def event(
        self, name: str, attributes: dict[str, AttributeValue], timestamp: int | None = None
    ) -> None:
        """Add an event whose name and attributes are bounded already."""
        if self.end_ns is not None:
            return
        if self.events is None:
            self.events = BoundedList(self.emitter.max_events)  # the SDK's: drops the oldest
        self.events.append(Event(name, attributes, _time_ns() if timestamp is None else timestamp))

    # ---------------------------------------------------------------- the API span
    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        # A root the sampler dropped is current only to carry that decision down: nothing
        # set on it is ever exported (the SDK's NonRecordingSpan says the same).
        return self.end_ns is None and bool(self.flags & SAMPLED)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_ns is None:
            self.attributes.update(coerce_attributes(attributes, self.limits, self.attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if self.end_ns is not None:
            return
        self.event(
            bound_name(str(coerce(name, self.limits))),
            coerce_attributes(attributes or {}, self.limits),
            timestamp,
        )

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self.end_ns is not None or not (context.is_valid or attributes):
            return
        if self.links is None:
            self.links = BoundedList(self.emitter.max_links)
        self.links.append(Link(context, coerce_attributes(attributes or {}, self.limits)))

    def update_name(self, name: str) -> None:
        if self.end_ns is None:
            self.name = bound_name(name if isinstance(name, str) else safe_str(name))

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: OK is final, UNSET is ignored."""
        if self.end_ns is not None or self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self.status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event, as the SDK records it (the status is left alone)."""
        stack = "".join(traceback.format_exception(exception))
        kind = type(exception)
        module = kind.__module__
        values: dict[str, Any] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": scrub(safe_str(exception)),
            "exception.stacktrace": scrub(stack),
            "exception.escaped": str(escaped),
            **(attributes or {}),
        }
        self.add_event("exception", values, timestamp)

    def end(self, end_time: int | None = None, error: BaseException | None = None) -> None:
        """Deactivate (when active) and hand the span over; ``error`` sets an ERROR status."""
        if self.end_ns is not None:
            return
        self.end_ns = end = _time_ns() if end_time is None else end_time
        token = self.token
        if token is not None:
            self.token = None
            try:
                reset_fast(token)  # detach() without its Python call
            except Exception:
                detach(token)  # reports it, as OpenTelemetry does
        if error is not None:
            self.status = error_status(error)
        em = self.emitter
        try:
            if em.processor._span_processors is not em._seen:  # as in start()
                em._route()
            native = em._direct
            if (
                native is None
                or self.status is not UNSET
                or self.events is not None
                or self.links is not None
            ):
                em.hand_off(
                    self.name,
                    self.context,
                    self.parent,
                    self.start_ns,
                    end,
                    self.attributes,
                    self.links or (),
                    self.status,
                    INTERNAL,
                    self.events or (),
                )
                return
            # The usual span (no event, link or status) straight to the native queue: the
            # tuple of NativeSpanProcessor.submit, built here (hand_off's general form costs
            # a quarter of the span).
            for observe in em.observers:
                observe(self.attributes, self.start_ns, end, self.context)
            if not self.flags & SAMPLED:
                return
            parent, start, state = self.parent, self.start_ns, self.state
            em.submit(
                (
                    em.resource_index,
                    em.scope_index,
                    self.trace_id,
                    self.span_id,
                    None if parent is None else parent[1],
                    False if parent is None else parent[2],
                    "" if state is NO_STATE or not state else state.to_header(),
                    self.name,
                    0,
                    start,
                    end if end > start else start,
                    self.attributes,
                    0,
                    (),
                    0,
                    (),
                    0,
                    0,
                    None,
                )
            )
            if not next(em.submitted) % SYNC_EVERY:
                native.sync_stats()  # the native counters into stats(), as submit() does
        except Exception as exc:  # an exporter's fault never reaches the traced code
            report("span end", exc)
