"""``inference()`` spans with the OpenTelemetry GenAI conventions, and dynamic-batching links.

A batch that serves several requests is one span linked to each request's span; each request
span that is still open gets a link back to the batch and the batch's ids as attributes, so
Jaeger can follow either side. Requests from other processes (a carrier or an envelope)
can only be linked from the batch. Nothing here needs torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext

from .attributes import Limits
from .carriers import extract
from .guard import report
from .keys import (
    BATCH_NAME,
    BATCH_PREFIX,
    BATCH_REQUESTS,
    BATCH_SIZE,
    BATCH_SPAN_ID,
    BATCH_TRACE_ID,
    EXTRA_PREFIX,
    FIRST_TOKEN_EVENT,
    GEN_AI_FINISH_REASONS,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_PROVIDER,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    LINK_ROLE,
    TIME_TO_FIRST_TOKEN_MS,
)
from .runtime import DEFAULT
from .spans import Scope, SpanHandle
from .thin import Source, ThinSpan

# Short keyword names accepted by inference() and batch(), and the convention key each sets.
_ALIASES = {
    "model": GEN_AI_REQUEST_MODEL,
    "operation": GEN_AI_OPERATION,
    "provider": GEN_AI_PROVIDER,
    "system": GEN_AI_PROVIDER,
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "stop_sequences": "gen_ai.request.stop_sequences",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "conversation_id": "gen_ai.conversation.id",
    "input_tokens": GEN_AI_INPUT_TOKENS,
    "output_tokens": GEN_AI_OUTPUT_TOKENS,
    "response_model": GEN_AI_RESPONSE_MODEL,
    "response_id": GEN_AI_RESPONSE_ID,
    "finish_reasons": GEN_AI_FINISH_REASONS,
    "batch_size": BATCH_SIZE,
}


def _attributes(attrs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keywords as attributes: aliases to the conventions, dotted keys as given, else ``prefix``."""
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if name in _ALIASES:
            out[_ALIASES[name]] = value
        else:
            out[name if "." in name else prefix + name] = value
    return out


class InferenceCall(SpanHandle):
    """What ``with glmtrace.inference(...) as call`` yields: usage, first token, response."""

    __slots__ = ("_first", "_start")

    def __init__(self, span: ThinSpan | Span, limits: Limits) -> None:
        super().__init__(span, limits)
        self._start = time.perf_counter()
        self._first: float | None = None

    @property
    def span_context(self) -> SpanContext:
        """The span's context, for links."""
        return self._span.get_span_context()

    def first_token(self) -> float | None:
        """Mark the first streamed token: sets time to first token (ms) once; returns it."""
        if self._first is None:
            self._first = (time.perf_counter() - self._start) * 1000.0
            self.set_attribute(TIME_TO_FIRST_TOKEN_MS, self._first)
            self.add_event(FIRST_TOKEN_EVENT)
        return self._first

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        """Token counts (``gen_ai.usage.*``)."""
        self.set_attributes(
            {GEN_AI_INPUT_TOKENS: input_tokens, GEN_AI_OUTPUT_TOKENS: output_tokens}
        )

    def response(
        self,
        model: str | None = None,
        id: str | None = None,
        finish_reasons: str | Iterable[str] | None = None,
    ) -> None:
        """What the model answered with (``gen_ai.response.*``); one reason may be a str."""
        # A str is iterable too: "stop" is one reason, not four letters.
        if isinstance(finish_reasons, str):
            finish_reasons = (finish_reasons,)
        reasons = tuple(finish_reasons) if finish_reasons is not None else None
        self.set_attributes(
            {GEN_AI_RESPONSE_MODEL: model, GEN_AI_RESPONSE_ID: id, GEN_AI_FINISH_REASONS: reasons}
        )


class InferenceScope(Scope[InferenceCall]):
    """``glmtrace.inference(...)``: a context manager yielding an :class:`InferenceCall`."""

    def _handle(self, span: ThinSpan | None) -> InferenceCall:
        if span is None:
            return InferenceCall(trace.INVALID_SPAN, Limits())
        return InferenceCall(span, span.limits)


def inference(model: str, operation: str = "chat", **attrs: Any) -> InferenceScope:
    """A span for one model call, named ``<operation> <model>`` (GenAI conventions).

    Short keywords map to the conventions: ``input_tokens``/``output_tokens`` to
    ``gen_ai.usage.*``, ``max_tokens``, ``temperature``, ``top_p``... to ``gen_ai.request.*``,
    ``provider`` to ``gen_ai.provider.name``, ``batch_size`` to ``glmtrace.batch.size``;
    dotted keys are kept as given, anything else lands under ``glmtrace.inference.``.
    The yielded :class:`InferenceCall` marks the first streamed token and sets usage.

    Example::

        with glmtrace.inference("chatglm3", batch_size=8, max_tokens=256) as call:
            for i, token in enumerate(generate(prompt)):
                if i == 0:
                    call.first_token()
            call.usage(input_tokens=12, output_tokens=i + 1)
    """
    attributes: dict[str, Any] = {GEN_AI_OPERATION: operation, GEN_AI_REQUEST_MODEL: model}
    attributes.update(_attributes(attrs, EXTRA_PREFIX))
    return InferenceScope(DEFAULT, f"{operation} {model}", attributes)


def _request_context(request: Any) -> tuple[SpanContext | None, Span | None]:
    """The span context a request stands for, and its live span when this process has it."""
    if isinstance(request, SpanHandle):
        span = request._span
        return span.get_span_context(), span
    if isinstance(request, SpanContext):
        return request, None
    if isinstance(request, Span):
        return request.get_span_context(), request
    # A carrier or an envelope from another process.
    ctx = trace.get_current_span(extract(request)).get_span_context()
    return ctx, None


class BatchHandle(SpanHandle):
    """What ``with glmtrace.batch(...) as b`` yields; :meth:`add` links one more request."""

    __slots__ = ("_count",)

    def __init__(self, span: ThinSpan | Span, limits: Limits) -> None:
        super().__init__(span, limits)
        self._count = 0

    @property
    def size(self) -> int:
        """How many requests the batch serves."""
        return self._count

    def add(self, request: Any) -> None:
        """Link a request (an :class:`InferenceCall`, a span handle, span context or carrier)."""
        self._count += 1
        try:
            ctx, live = _request_context(request)
            if ctx is None or not ctx.is_valid or not self._span.is_recording():
                return
            self._span.add_link(ctx, {LINK_ROLE: "request"})
            mine = self._span.get_span_context()
            if live is not None and live.is_recording():
                live.add_link(mine, {LINK_ROLE: "batch"})
                live.set_attributes(
                    {
                        BATCH_TRACE_ID: format(mine.trace_id, "032x"),
                        BATCH_SPAN_ID: format(mine.span_id, "016x"),
                    }
                )
        except Exception as exc:
            report("batch.add", exc)


class BatchScope(Scope[BatchHandle]):
    """``glmtrace.batch(...)``: a context manager yielding a :class:`BatchHandle`."""

    def __init__(
        self, source: Source, name: str, attributes: Mapping[str, Any], requests: Iterable[Any]
    ) -> None:
        super().__init__(source, f"batch {name}", attributes)
        self._requests = list(requests)
        self._batch: BatchHandle | None = None

    def _handle(self, span: ThinSpan | None) -> BatchHandle:
        handle = (
            BatchHandle(trace.INVALID_SPAN, Limits())
            if span is None
            else BatchHandle(span, span.limits)
        )
        self._batch = handle
        for request in self._requests:
            handle.add(request)
        return handle

    def _before_end(self, span: ThinSpan) -> None:
        if self._batch is not None:
            span.set_attribute(BATCH_REQUESTS, self._batch.size)
            if BATCH_SIZE not in (self._attributes or {}):  # an explicit batch_size wins
                span.set_attribute(BATCH_SIZE, self._batch.size)


def batch(requests: Iterable[Any] = (), name: str = "inference", **attrs: Any) -> BatchScope:
    """A span for one dynamic batch, linked both ways with the requests it serves.

    ``requests`` are :class:`InferenceCall` handles, span handles, span contexts, or carriers
    and envelopes from other processes; more can be added with ``.add()``. The batch span
    links to each request span; each request span still open in this process links back
    and records ``glmtrace.batch.trace_id``/``glmtrace.batch.span_id``.

    Keywords map as in :func:`inference` (``model``, ``operation``, ``max_tokens``,
    ``temperature``... to ``gen_ai.*``, ``batch_size`` to ``glmtrace.batch.size``); other
    short names land under ``glmtrace.batch.``. ``glmtrace.batch.requests`` counts the linked
    requests, and is also the size when no ``batch_size`` is given.

    Example::

        with glmtrace.batch([call_a, call_b], model="chatglm3", max_tokens=256, priority=1):
            outputs = model(collate(inputs))
    """
    attributes: dict[str, Any] = {BATCH_NAME: name}
    attributes.update(_attributes(attrs, BATCH_PREFIX))
    return BatchScope(DEFAULT, name, attributes, requests)
