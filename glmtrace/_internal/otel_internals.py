"""Every read of an OpenTelemetry SDK private, in one place.

Each reaches something the SDK has no public accessor for, and each has a test in
``tests/unit/test_otel_internals.py`` that fails loudly when an SDK release renames or
reshapes it (the pin in ``constraints.txt`` is what CI runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from opentelemetry.baggage import _BAGGAGE_KEY
from opentelemetry.context import _RUNTIME_CONTEXT, Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, Tracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, StaticSampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link
from opentelemetry.trace.propagation import _SPAN_KEY

# The keys under which a Context holds the current span and the baggage: glmtrace's thin spans
# read and write them without the API's two calls per access.
SPAN_KEY: str = _SPAN_KEY
BAGGAGE_KEY: str = _BAGGAGE_KEY

# The SDK's multi-span-processor keeps its processors here; the thin path reads it at every
# span start and end as a plain attribute (getattr() costs 300 instructions more), spelled
# in thin.py: tests/unit/test_otel_internals.py keeps that spelling and this name together.
PROCESSORS = "_span_processors"


def context_var() -> ContextVar[Context] | None:
    """The ContextVar behind OpenTelemetry's context, under its default runtime context."""
    if type(_RUNTIME_CONTEXT) is ContextVarsRuntimeContext:
        var: ContextVar[Context] = _RUNTIME_CONTEXT._current_context
        return var
    return None


def span_processors(processor: SpanProcessor) -> tuple[SpanProcessor, ...]:
    """The processors a provider's multi-span-processor calls, in order."""
    found: tuple[SpanProcessor, ...] = getattr(processor, PROCESSORS)
    return found


def span_limits(tracer: Tracer) -> SpanLimits:
    """The span limits an SDK tracer applies."""
    limits: SpanLimits = tracer._span_limits
    return limits


def root_sampler(sampler: ParentBased) -> Sampler:
    """The sampler a ``ParentBased`` sampler applies to root spans."""
    root: Sampler = sampler._root
    return root


def static_decision(sampler: StaticSampler) -> Decision:
    """The decision an ``ALWAYS_ON``/``ALWAYS_OFF``-style sampler always makes."""
    decision: Decision = sampler._decision
    return decision


def queued(processor: BatchSpanProcessor) -> int:
    """Spans waiting in a batch processor's queue."""
    return len(processor._batch_processor._queue)


def instrumentation_scope(tracer: Tracer) -> InstrumentationScope:
    """The scope an SDK tracer stamps on its spans."""
    scope: InstrumentationScope = tracer._instrumentation_scope
    return scope


def span_fields(
    span: ReadableSpan,
) -> tuple[Mapping[str, Any] | None, Sequence[Event], Sequence[Link]]:
    """A finished span's attributes, events and links as the SDK holds them.

    The public properties copy them (a mapping proxy, tuples) on every read: a cost paid for
    each span on the thread that ends it.
    """
    return span._attributes, span._events, span._links


def attribute_dict(attributes: Any) -> Any:
    """The plain dict inside the SDK's ``BoundedAttributes`` (others are returned as given):
    the native extension iterates it without calling back into Python."""
    return getattr(attributes, "_dict", attributes)
