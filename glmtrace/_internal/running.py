"""The current OpenTelemetry context, read and set without the context API's own calls.

OpenTelemetry's context API spends two Python calls per operation over one ContextVar; under
its default runtime context glmtrace's spans use that ContextVar directly (the same tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Token

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from .otel_internals import context_var

current_context: Callable[[], Context]
attach: Callable[[Context], Token[Context]]
detach: Callable[[Token[Context]], None]
reset_fast: Callable[[Token[Context]], object]  # may raise: detach() then reports it
_found = context_var()
if _found is not None:
    _var = _found
    current_context, attach, reset_fast = _var.get, _var.set, _var.reset

    def _reset(token: Token[Context]) -> None:
        try:
            _var.reset(token)
        except Exception:
            otel_context.detach(token)  # logs "Failed to detach context", as OpenTelemetry

    detach = _reset
else:
    current_context = otel_context.get_current
    attach = otel_context.attach
    detach = reset_fast = otel_context.detach
