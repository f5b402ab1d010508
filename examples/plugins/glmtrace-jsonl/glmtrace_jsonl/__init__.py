"""Example glmtrace plugin: log records and spans appended as JSON lines to local files."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["JsonlLogSink", "JsonlSpanExporter", "create_log_sink", "create_span_exporter"]


def _directory() -> Path:
    path = Path(os.environ.get("GLMTRACE_JSONL_DIR", ".glmtrace/jsonl"))
    path.mkdir(parents=True, exist_ok=True)
    return path


class JsonlLogSink:
    """A glmtrace LogSink: each batch of ECS documents appended to ``logs.jsonl``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(doc, default=str) + "\n" for doc in batch)
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write(lines)

    def watch_queue(self, fill: Callable[[], float]) -> None:
        """A local file keeps up with any queue: nothing to spill."""

    def close(self, timeout: float = 2.0) -> None:
        """Every batch is written and closed by __call__."""


class JsonlSpanExporter(SpanExporter):
    """An OpenTelemetry span exporter writing ``spans.jsonl`` (OTel's own JSON per span)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(json.loads(s.to_json())) + "\n" for s in spans)
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing held open."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def create_log_sink(options: Any) -> JsonlLogSink:
    """Entry point ``glmtrace.log_sinks: jsonl``."""
    return JsonlLogSink(_directory() / "logs.jsonl")


def create_span_exporter(options: Any) -> JsonlSpanExporter:
    """Entry point ``glmtrace.span_exporters: jsonl``."""
    return JsonlSpanExporter(_directory() / "spans.jsonl")
