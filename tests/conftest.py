"""Shared fixtures. Internal glmtrace errors re-raise here, so SDK bugs fail the suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import glmtrace
from glmtrace._internal.span_export import span_to_row

# The harness's own settings survive; every SDK setting starts from its default.
_HARNESS = {
    "GLMTRACE_STRICT",
    "GLMTRACE_BACKENDS",
    "GLMTRACE_BACKEND_STARTUP_TIMEOUT",
    "GLMTRACE_NATIVE",  # CI runs the suite once more with 0: the pure-Python path
}
os.environ["GLMTRACE_STRICT"] = "1"
for _name in list(os.environ):
    if (_name.startswith("GLMTRACE_") and _name not in _HARNESS) or _name.startswith("OTEL_"):
        del os.environ[_name]


class Traced:
    """The spans an in-memory exporter received, as plain dicts."""

    def __init__(self, exporter: InMemorySpanExporter, store: Path) -> None:
        self.exporter = exporter
        self.store = store

    def spans(self) -> list[dict[str, Any]]:
        glmtrace.force_flush(5)
        return [span_to_row(s) for s in self.exporter.get_finished_spans()]

    def one(self, name: str) -> dict[str, Any]:
        matches = [s for s in self.spans() if s["name"] == name]
        assert len(matches) == 1, (
            f"expected one span {name!r}, got {[s['name'] for s in self.spans()]}"
        )
        return matches[0]


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Traced]:
    """glmtrace initialised with an in-memory exporter (no local store, no log sinks)."""
    exporter = InMemorySpanExporter()
    store = tmp_path / "glmtrace.db"
    glmtrace.init(service_name="test", traces="none", logs="none", store=store, exporter=exporter)
    yield Traced(exporter, store)
    glmtrace.shutdown()


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Path]:
    """glmtrace initialised on a fresh local store; yields its path."""
    store = tmp_path / "glmtrace.db"
    glmtrace.init(service_name="test", store=store)
    yield store
    glmtrace.shutdown()
