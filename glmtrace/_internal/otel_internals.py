"""Every read of an OpenTelemetry SDK private, in one place.

Each reaches something the SDK has no public accessor for, and each has a test in
``tests/unit/test_otel_internals.py`` that fails loudly when an SDK release renames or
reshapes it (the pin in ``constraints.txt`` is what CI runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan, Tracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, StaticSampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link


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
