"""Spans emitted as finished records: the fast path for hooks that fire thousands of times.

``tracer.start_span()`` costs tens of microseconds on a small CPU (sampler, attribute
cleaning, two processor calls), so module hooks, profiler events and CUDA spans built on it
would dominate what they measure. Here a span is a :class:`~opentelemetry.trace.SpanContext`
made current while it runs (children nest under it as usual, through the normal API) and, once
it ends, one ``ReadableSpan`` handed to the provider's processors: about 5 microseconds.

Trade-offs, on purpose: on-start processors never see these spans (thread and session are
stamped here as for every glmtrace span), and while such a span runs
``trace.get_current_span()`` is a non-recording span carrying its context. The OpenTelemetry
SDK documents ``ReadableSpan`` as created by its pipeline; its constructor is stable since 1.0.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, Tracer
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from ..attributes import AttributeValue, bound_name, scrub, truncate
from ..ids import IDS
from ..runtime import DEFAULT, Runtime
from ..spans import stamp_context

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


_getrandbits = IDS.getrandbits


class Emitter:
    """Hands finished spans to the processors of one SDK tracer."""

    __slots__ = ("processor", "resource", "sampler", "scope", "tracer")

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.processor = tracer.span_processor
        self.resource = tracer.resource
        self.sampler = tracer.sampler
        self.scope = tracer._instrumentation_scope

    def new_context(self, parent: SpanContext | None, name: str) -> SpanContext | None:
        """A context for a child of ``parent`` (or a new root), None when sampled out."""
        if parent is not None and parent.is_valid:
            if not parent.trace_flags.sampled:
                return None
            return SpanContext(parent.trace_id, _span_id(), False, _SAMPLED, parent.trace_state)
        trace_id = _getrandbits(128) or 1
        decision = self.sampler.should_sample(None, trace_id, name).decision
        if decision not in (Decision.RECORD_AND_SAMPLE, Decision.RECORD_ONLY):
            return None
        return SpanContext(trace_id, _span_id(), False, _SAMPLED)

    def emit(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, AttributeValue],
        links: Sequence[Link] = (),
        status: Status = _UNSET,
        kind: SpanKind = SpanKind.INTERNAL,
        events: Sequence[Event] = (),
    ) -> None:
        """Export one finished span."""
        span = ReadableSpan(
            bound_name(name),
            context=context,
            parent=parent if parent is not None and parent.is_valid else None,
            resource=self.resource,
            attributes=attributes,
            links=links,
            events=events,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=max(end_ns, start_ns),
            instrumentation_scope=self.scope,
        )
        self.processor.on_end(span)


_cache: list[Emitter] = []


def emitter(runtime: Runtime = DEFAULT) -> Emitter | None:
    """The emitter of the runtime's current tracer; None before ``init()``."""
    tracer = runtime.tracer
    if tracer is None:
        return None
    if _cache and _cache[0].tracer is tracer:
        return _cache[0]
    if not isinstance(tracer, Tracer):
        return None
    made = Emitter(tracer)
    _cache[:] = [made]
    return made


def _span_id() -> int:
    return _getrandbits(64) or 1


def error_status(exc: BaseException | None, max_length: int = 4096) -> Status:
    """ERROR with the exception's type and message, or UNSET."""
    if exc is None:
        return _UNSET
    return Status(StatusCode.ERROR, truncate(scrub(f"{type(exc).__name__}: {exc}"), max_length))


class LiteSpan:
    """A started fast-path span: current for its block, exported once at :meth:`end`."""

    __slots__ = ("attributes", "context", "emitter", "name", "parent", "start_ns", "token")

    def __init__(
        self,
        em: Emitter,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, AttributeValue],
    ) -> None:
        self.emitter = em
        self.name = name
        self.context = context
        self.parent = parent
        self.attributes = attributes
        self.start_ns = time.time_ns()
        self.token: object | None = None

    def activate(self) -> None:
        """Make this span the current one (children nest under it)."""
        self.token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(self.context)))

    def deactivate(self) -> None:
        token, self.token = self.token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def end(
        self,
        end_ns: int | None = None,
        error: BaseException | None = None,
        links: Sequence[Link] = (),
    ) -> None:
        """Deactivate (when active) and export."""
        self.deactivate()
        self.emitter.emit(
            self.name,
            self.context,
            self.parent,
            self.start_ns,
            time.time_ns() if end_ns is None else end_ns,
            self.attributes,
            links,
            error_status(error),
        )


def start(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, runtime: Runtime = DEFAULT
) -> LiteSpan | None:
    """Start a fast-path child of the current span; None before init or when sampled out."""
    em = emitter(runtime)
    if em is None:
        return None
    parent = trace.get_current_span().get_span_context()
    context = em.new_context(parent, name)
    if context is None:
        return None
    attrs: dict[str, AttributeValue] = dict(attributes) if attributes else {}
    parent_or_none = parent if parent.is_valid else None
    return LiteSpan(em, name, context, parent_or_none, stamp_context(attrs))


def summary_json(value: Any, named: Mapping[str, Any] | None = None) -> str | None:
    """Compact JSON of tensor summaries in ``value`` (a tensor or a shallow container).

    With ``named`` (a call's keyword arguments) holding tensors, an object instead: positional
    inputs under their index, keyword inputs under their name (``{"0":..., "input_ids":...}``).
    """
    if named:
        return _summaries.summarize_call(value, named)
    return _summaries.summarize(value)


class _Summaries:
    """Tensor summaries, cached by (shape, dtype, device): hooks see the same few shapes."""

    def __init__(self) -> None:
        self._cache: dict[Any, str] = {}

    def one(self, tensor: Any) -> str:
        key = (tuple(tensor.shape), tensor.dtype, tensor.device)
        text = self._cache.get(key)
        if text is None:
            shape = ",".join(str(d) for d in key[0])
            text = f'{{"shape":[{shape}],"dtype":"{key[1]}","device":"{key[2]}"}}'
            if len(self._cache) < 4096:
                self._cache[key] = text
        return text

    def summarize(self, value: Any, limit: int = 8) -> str | None:
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        tensor = torch.Tensor
        if isinstance(value, tensor):
            return self.one(value)
        items: Any
        if isinstance(value, tuple | list):
            items = value
        elif isinstance(value, Mapping):
            items = value.values()
        else:
            return None
        parts = [self.one(v) for v in items if isinstance(v, tensor)][:limit]
        if not parts:
            return None
        return "[" + ",".join(parts) + "]"

    def summarize_call(self, args: Any, kwargs: Mapping[str, Any], limit: int = 8) -> str | None:
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        tensor = torch.Tensor
        if not any(isinstance(v, tensor) for v in kwargs.values()):
            return self.summarize(args, limit)  # model(x, use_cache=True): the usual list
        named = [(str(i), v) for i, v in enumerate(args)] + list(kwargs.items())
        parts = [f"{json.dumps(name)}:{self.one(v)}" for name, v in named if isinstance(v, tensor)][
            :limit
        ]
        if not parts:
            return None
        return "{" + ",".join(parts) + "}"


_summaries = _Summaries()
