"""Where glmtrace's spans go when they end: one hand-off per span.

An :class:`Emitter` belongs to one SDK tracer (a runtime's). It makes span contexts (ids from
:data:`~.ids.IDS`, the provider's sampler for new roots) and hands each finished span over
once: when the native pipeline is the provider's only processor, as the tuple
``glmtrace_native`` reads, straight into its queue (no ``ReadableSpan``); otherwise as one
``ReadableSpan`` to the provider's processors, the pure-Python path. It also re-reads the
processor set when a processor is added (``glmtrace.testing``, the DataLoader batch adopter),
and finds the processors whose ``on_start`` does something, the only ones thin spans call.
A :class:`SpanObserver` (the profiler's timeline) only watches spans end: it does not take
the direct route away from the native queue, and is told of each span there itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from opcode import hasconst
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, Tracer
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .attributes import AttributeValue
from .forks import after_fork_in_child
from .guard import internal_errors
from .ids import IDS, refill_span_ids, span_ids
from .native_export import SYNC_EVERY, NativeSpanProcessor
from .otel_internals import (
    PROCESSORS,
    instrumentation_scope,
    root_sampler,
    span_limits,
    span_processors,
    static_decision,
)

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
UNSET = Status(StatusCode.UNSET)
INTERNAL = SpanKind.INTERNAL
getrandbits = IDS.getrandbits
_tuple_new = tuple.__new__


# (name, context, parent, start_ns, end_ns, attributes): see Emitter.hand_off_children.
ChildSpan = tuple[str, SpanContext, SpanContext, int, int, dict[str, AttributeValue]]


def new_span_context(
    trace_id: int, span_id: int, flags: TraceFlags, state: Any = None
) -> SpanContext:
    """``SpanContext(trace_id, span_id, False, flags, state)`` for ids known valid (non-zero,
    in range), without its constructor's checks: a third of a span's start otherwise."""
    return _tuple_new(
        SpanContext, (trace_id, span_id, False, flags, NO_STATE if state is None else state, True)
    )


NO_STATE = SpanContext(1, 1, False).trace_state


def span_id() -> int:
    """A new span id (drawn ahead in bulk, see :mod:`.ids`)."""
    try:
        return span_ids.pop()
    except IndexError:
        return refill_span_ids()


def new_trace_id() -> int:
    """A new trace id."""
    return getrandbits(128) or 1


def _pass(self: Any, span: Any, parent_context: Any = None) -> None:
    pass


_PASS = _pass.__code__.co_code


def _does_nothing(fn: Any) -> bool:
    """True for a method whose body is ``pass`` (or a docstring): no need to call it."""
    code = getattr(fn, "__code__", None)
    if code is None or code.co_code[::2] != _PASS[::2]:
        return False
    # The instructions of ``pass``; a docstring (the SDK's methods) only moves None's index.
    ops = zip(code.co_code[::2], code.co_code[1::2], strict=True)
    return all(code.co_consts[arg] is None for op, arg in ops if op in hasconst)


def _root_mode(sampler: Sampler) -> str:
    """ "on"/"off" when every new root is sampled / none is; "ask" the sampler otherwise."""
    root = root_sampler(sampler) if isinstance(sampler, ParentBased) else sampler
    if isinstance(root, StaticSampler):
        if root is ALWAYS_ON or static_decision(root) is Decision.RECORD_AND_SAMPLE:
            return "on"
        if root is ALWAYS_OFF or static_decision(root) is Decision.DROP:
            return "off"
    if isinstance(root, TraceIdRatioBased) and root.rate == 0.0:
        return "off"
    return "ask"


class SpanObserver(SpanProcessor):
    """A processor that only needs the context, interval and attributes of finished spans.

    On the direct route to the native queue no ``ReadableSpan`` is made: the emitter calls
    :meth:`observe` instead. On the Python path it is one of the processors, as any other.
    """

    def observe(
        self,
        attributes: Mapping[str, Any],
        start_ns: int,
        end_ns: int,
        context: SpanContext,
    ) -> None:
        raise NotImplementedError

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and span.start_time is not None and span.end_time is not None:
            self.observe(span.attributes or {}, span.start_time, span.end_time, context)


class Emitter:
    """Starts thin spans for one SDK tracer and hands finished spans to its pipeline."""

    __slots__ = (
        "_direct",
        "_resource",
        "_seen",
        "always",
        "max_events",
        "max_links",
        "observers",
        "processor",
        "resource_index",
        "root_mode",
        "sampler",
        "scope",
        "scope_index",
        "starts",
        "submit",
        "submitted",
        "tracer",
    )

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.processor = tracer.span_processor
        self._resource = tracer.resource
        self.sampler = tracer.sampler
        self.scope = instrumentation_scope(tracer)
        limits = span_limits(tracer)  # None: unlimited
        self.max_events, self.max_links = limits.max_events, limits.max_links
        self.root_mode = _root_mode(self.sampler)
        self.always = self.root_mode == "on"  # every new root sampled: no sampler to ask
        self._seen: object = None
        self._route()

    @property
    def resource(self) -> Any:
        return self._resource

    @resource.setter
    def resource(self, resource: Any) -> None:
        """torch.distributed adds the rank to the resource once a process group is up."""
        self._resource = resource
        self._forget()

    def _forget(self) -> None:
        """Route again at the next span: the pipeline or the resource changed."""
        self._seen = None

    def _route(self) -> None:
        """Work out who gets spans from the provider's processors (re-done when they change)
        and, for the native pipeline, the resource and scope indices its tuples start with."""
        processors = span_processors(self.processor)
        self.starts: tuple[Any, ...] = tuple(
            p for p in processors if not _does_nothing(type(p).on_start)
        )
        # Processors that act only at start (the DataLoader batch adopter) or only watch
        # (SpanObserver) leave the native queue the one taker of finished spans.
        exporting = [
            p
            for p in processors
            if not isinstance(p, SpanObserver) and not _does_nothing(type(p).on_end)
        ]
        only = exporting[0] if len(exporting) == 1 else None
        self._direct = only if isinstance(only, NativeSpanProcessor) else None
        # Each guarded: an observer's fault is reported and costs no span its hand-off.
        watch = internal_errors("span observer")
        observers = tuple(watch(p.observe) for p in processors if isinstance(p, SpanObserver))
        self.observers = observers if self._direct is not None else ()
        if self._direct is not None:
            self.resource_index, self.scope_index = self._direct.indices(self._resource, self.scope)
            # The extension's own submit, without NativeSpanProcessor.submit's Python call
            # (a tenth of a stage's cost): thin spans count their tuples here instead, and
            # call its sync_stats() as often as it would.
            self.submit = self._direct.pipeline.submit
            self.submitted = itertools.count(1)
        self._seen = processors

    def new_context(
        self, parent: SpanContext | None, name: str, keep_dropped: bool = False
    ) -> SpanContext | None:
        """A context for a child of ``parent`` (or a new root), None when sampled out.

        ``keep_dropped``: a root the sampler drops gets an unsampled context instead, so that
        its descendants, made current under it, are dropped with it rather than each asking
        the sampler as a root of its own (a sample_rate of 0 needs no such span: every root
        is dropped)."""
        if parent is not None and parent.is_valid:
            if not parent.trace_flags.sampled:
                return None
            return new_span_context(parent.trace_id, span_id(), SAMPLED, parent.trace_state)
        mode = self.root_mode
        if mode == "off":
            return None
        trace_id = new_trace_id()
        if mode == "on":
            return new_span_context(trace_id, span_id(), SAMPLED)
        decision = self.sampler.should_sample(None, trace_id, name).decision
        if decision is Decision.DROP:
            return new_span_context(trace_id, span_id(), _UNSAMPLED) if keep_dropped else None
        flags = SAMPLED if decision is Decision.RECORD_AND_SAMPLE else _UNSAMPLED
        return new_span_context(trace_id, span_id(), flags)

    def hand_off(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link] = (),
        status: Status = UNSET,
        kind: SpanKind = INTERNAL,
        events: Sequence[Event] = (),
    ) -> None:
        """Hand one finished span (its name bounded) over: to the native queue, or to the
        processors."""
        if getattr(self.processor, PROCESSORS) is not self._seen:
            self._route()
        if parent is not None and not parent.is_valid:
            parent = None
        end_ns = end_ns if end_ns > start_ns else start_ns
        native = self._direct
        if native is None:
            self.processor.on_end(
                ReadableSpan(
                    name,
                    context=context,
                    parent=parent,
                    resource=self._resource,
                    attributes=attributes,
                    links=links,
                    events=events,
                    kind=kind,
                    status=status,
                    start_time=start_ns,
                    end_time=end_ns,
                    instrumentation_scope=self.scope,
                )
            )
            return
        for observe in self.observers:
            observe(attributes, start_ns, end_ns, context)
        if not context.trace_flags & SAMPLED:
            return  # recorded, not sampled: no exporter takes it
        state = context.trace_state
        native.submit(
            (
                self.resource_index,
                self.scope_index,
                context.trace_id,
                context.span_id,
                None if parent is None else parent.span_id,
                False if parent is None else parent.is_remote,
                state.to_header() if state else "",
                name,
                0 if kind is INTERNAL else kind.value,
                start_ns,
                end_ns,
                attributes,
                0,
                [(e.name, e.timestamp, e.attributes, e.dropped_attributes) for e in events]
                if events
                else (),
                getattr(events, "dropped", 0),
                [
                    (k.context.trace_id, k.context.span_id, k.context.is_remote, k.attributes, 0)
                    for k in links
                ]
                if links
                else (),
                getattr(links, "dropped", 0),
                *((0, None) if status is UNSET else (status.status_code.value, status.description)),
            )
        )

    def hand_off_children(self, spans: Iterable[ChildSpan]) -> None:
        """:meth:`hand_off` for many spans at once (a profiler window's events): each a
        sampled INTERNAL span with a valid parent and no event, link or status. On the
        native queue's direct route each is one tuple, without hand_off's general checks."""
        if getattr(self.processor, PROCESSORS) is not self._seen:
            self._route()
        native = self._direct
        if native is None:
            for name, context, parent, start_ns, end_ns, attributes in spans:
                self.hand_off(name, context, parent, start_ns, end_ns, attributes)
            return
        submit, observers, submitted = self.submit, self.observers, self.submitted
        resource, scope = self.resource_index, self.scope_index
        for name, context, parent, start_ns, end_ns, attributes in spans:
            for observe in observers:
                observe(attributes, start_ns, end_ns, context)
            state = context.trace_state
            submit(
                (
                    resource,
                    scope,
                    context.trace_id,
                    context.span_id,
                    parent.span_id,
                    parent.is_remote,
                    state.to_header() if state else "",
                    name,
                    0,
                    start_ns,
                    end_ns if end_ns > start_ns else start_ns,
                    attributes,
                    0,
                    (),
                    0,
                    (),
                    0,
                    0,
                    None,
                )
            )
            if not next(submitted) % SYNC_EVERY:
                native.sync_stats()  # the native counters into stats(), as submit() does


_cache: list[Emitter] = []


def _forget_all() -> None:
    # A forked child's native pipeline is a new one, which knows no resource yet.
    for em in _cache:
        em._forget()


after_fork_in_child(_forget_all)


def emitter_for(tracer: trace.Tracer | None) -> Emitter | None:
    """The emitter of ``tracer`` (a runtime's); None before ``init()``."""
    if tracer is None:
        return None
    if _cache and _cache[0].tracer is tracer:
        return _cache[0]
    if not isinstance(tracer, Tracer):
        return None
    made = Emitter(tracer)
    _cache[:] = [made]
    return made
