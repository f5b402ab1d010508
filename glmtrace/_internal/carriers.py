"""W3C trace context + baggage in and out of carriers and message envelopes.

A carrier is a ``dict`` of string headers. An envelope is the pipeline message
``{session_id, payload, metadata}`` (a mapping or an object with those attributes): its trace
context travels in ``metadata`` and its ``session_id`` as W3C baggage, so the id lands on every
span downstream. Malformed input starts a new trace; nothing here ever raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .guard import internal_errors
from .keys import BAGGAGE_SESSION_ID

_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
_MAX_HEADER = 8192


def _field(message: Any, name: str) -> Any:
    if isinstance(message, MutableMapping):
        return message.get(name)
    return getattr(message, name, None)


def _is_envelope(message: Any) -> bool:
    return _field(message, "metadata") is not None and (
        not isinstance(message, MutableMapping) or "session_id" in message
    )


def _carrier_of(message: Any, create: bool) -> MutableMapping[str, Any] | None:
    """The header dict of an envelope (its ``metadata``) or the carrier itself."""
    if _is_envelope(message):
        metadata = _field(message, "metadata")
        return metadata if isinstance(metadata, MutableMapping) else None
    if isinstance(message, MutableMapping):
        if create and "metadata" in message and message["metadata"] is None:
            message["metadata"] = {}
            return message["metadata"]
        return message
    return None


def inject(carrier: Any) -> Any:
    """Write the current trace context (``traceparent``, ``baggage``) into ``carrier``.

    ``carrier`` is a dict of headers or an envelope; returns it for chaining.
    """
    with internal_errors("inject"):
        target = _carrier_of(carrier, create=True)
        if target is None:
            return carrier
        ctx = None
        session = _field(carrier, "session_id") if _is_envelope(carrier) else None
        if session is not None:
            ctx = baggage.set_baggage(BAGGAGE_SESSION_ID, str(session))
        _PROPAGATOR.inject(target, context=ctx)
    return carrier


def extract(carrier: Any) -> Context:
    """The context described by ``carrier`` (a header dict or an envelope).

    A missing or malformed ``traceparent`` yields a context without a parent, so the next
    span starts a new trace.
    """
    with internal_errors("extract"):
        source = _carrier_of(carrier, create=False)
        headers = {}
        if source is not None:
            headers = {
                str(k).lower(): v[:_MAX_HEADER]
                for k, v in source.items()
                if isinstance(v, str) and str(k).lower() in ("traceparent", "tracestate", "baggage")
            }
        ctx = _PROPAGATOR.extract(headers, context=Context())
        session = _field(carrier, "session_id") if _is_envelope(carrier) else None
        if session is not None:
            ctx = baggage.set_baggage(BAGGAGE_SESSION_ID, str(session), context=ctx)
        return ctx
    return Context()


@contextlib.contextmanager
def attach(carrier: Any) -> Iterator[Context]:
    """Continue the trace described by ``carrier`` inside the ``with`` block."""
    ctx = extract(carrier)
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)
