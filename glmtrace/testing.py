"""Helpers for testing code that glmtrace instruments (like ``structlog.testing``).

Example::

    import glmtrace.testing

    def test_clean_is_traced():
        with glmtrace.testing.capture() as cap:
            clean("  hi  ")
        assert [s["name"] for s in cap.spans] == ["stage clean"]
        assert cap.logs == []

:func:`capture` records, in memory, the spans that end and the log records emitted inside
its block, whatever glmtrace's configuration:

- glmtrace already initialised: the block's spans and logs still go wherever they were
  configured to go; the capture only listens, and stops listening on exit.
- not initialised: the block runs with glmtrace started with nothing but the capture
  (``traces="none"``, ``logs="none"``), and glmtrace is shut down again on exit.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from ._internal import provider as _provider
from ._internal.export.exporters import span_to_row
from ._internal.logs import capture as _capture
from ._internal.logs.handler import DocumentHandler
from ._internal.runtime import DEFAULT as _DEFAULT

__all__ = ["Capture", "capture"]


@dataclass
class Capture:
    """What a :func:`capture` block recorded (filled while the block runs).

    ``spans``: each span that ended, in the order they ended, as a dict with ``name``,
    ``trace_id``, ``span_id``, ``parent_span_id`` (hex text or None), ``attributes``,
    ``status`` (``"UNSET"``, ``"OK"`` or ``"ERROR"``), ``status_message``, ``kind`` and
    ``events`` (each ``{"name", "timestamp_ns", "attributes"}``).
    ``logs``: each log record as the flat ECS document glmtrace ships (``message``,
    ``log.level``, ``trace.id``, ``span.id``, extras under ``labels.*``, ...).
    """

    spans: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    def span(self, name: str) -> dict[str, Any]:
        """The one captured span called ``name``; AssertionError if none or several."""
        found = [s for s in self.spans if s["name"] == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.spans!r}"
        return found[0]


_SPAN_KEYS = (
    "name",
    "trace_id",
    "span_id",
    "parent_span_id",
    "kind",
    "attributes",
    "status",
    "status_message",
    "events",
)


class _Listener(SpanProcessor):
    """Copies each ended span into the open captures. One per provider, added the first time a
    capture runs on it (a provider cannot drop a processor): with no capture open, it idles."""

    def __init__(self) -> None:
        self.into: tuple[Capture, ...] = ()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self.into:
            row: Mapping[str, Any] = span_to_row(span)
            for capture in self.into:
                capture.spans.append({k: row[k] for k in _SPAN_KEYS})


_LISTENER = _Listener()
_listened: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


@contextmanager
def capture() -> Iterator[Capture]:
    """Record the spans and logs of the ``with`` block in memory; see :class:`Capture`.

    Log records are captured as glmtrace captures them: from ``log_level`` (INFO) up, even
    where the program's logging lets only WARNING through, without changing what it prints.
    Captures may nest; each sees everything of its own block.
    """
    started_here = _DEFAULT.options is None or not isinstance(
        _provider.GLOBAL.provider, TracerProvider
    )
    if started_here:
        _DEFAULT.init(traces="none", logs="none")
    result = Capture()
    tracer_provider = _provider.GLOBAL.provider
    if isinstance(tracer_provider, TracerProvider) and tracer_provider not in _listened:
        tracer_provider.add_span_processor(_LISTENER)
        _listened.add(tracer_provider)
    _LISTENER.into = (*_LISTENER.into, result)
    handler = DocumentHandler([result.logs.append], _DEFAULT.service_name, _DEFAULT.limits)
    options = _DEFAULT.options
    handler.setLevel(logging.getLevelName(options.log_level if options else "INFO"))
    _capture.capture(handler)
    try:
        yield result
    finally:
        _capture.release(handler)
        _LISTENER.into = tuple(c for c in _LISTENER.into if c is not result)
        if started_here:
            _DEFAULT.shutdown()
