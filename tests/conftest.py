"""Shared fixtures. Internal glmtrace errors re-raise here, so SDK bugs fail the suite."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import glmtrace
from glmtrace._internal.export.exporters import span_to_row
from glmtrace._internal.stats import STATS

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


_INTEGRATION = Path(__file__).parent / "integration"


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything: every selection checks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test under tests/integration/ without the ``integration`` marker is an error: it would
    run in ``-m "not integration"`` selections that are meant to start no backend."""
    unmarked = [
        item.nodeid
        for item in items
        if item.path.is_relative_to(_INTEGRATION) and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests/integration/ tests need pytestmark = pytest.mark.integration: "
            + ", ".join(unmarked)
        )


@pytest.fixture(autouse=True)
def _fresh_stats() -> None:
    """stats() is process-wide: each test starts from zero, so "nothing dropped" checks do not
    depend on which tests ran before."""
    STATS.reset()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections and that nobody else can take meanwhile.

    The socket stays bound without listening, so a connect gets RST (refused) and the port
    is not free for another process to grab, as a bound-then-closed port would be.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


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
