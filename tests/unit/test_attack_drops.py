"""Spans the export paths cannot take are counted, never lost silently, even when a span
outlives the runtime that started it (``init()`` again while it runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import glmtrace
from tests.unit.test_attack_forks import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def test_a_span_open_across_reinit_is_exported_or_counted(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A span entered, ``init()`` called again with other settings (a notebook, a library
    that configures glmtrace itself), then the span ends: it reaches the backend or
    ``stats()`` counts it dropped."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")  # the drop warning is an acceptable outcome
    settings: dict[str, Any] = dict(
        traces="otlp",
        endpoint=receiver.url,
        protocol="http/protobuf",
        logs="none",
        store=tmp_path / "g.db",
    )
    glmtrace.init(service_name="first", **settings)
    try:
        scope = glmtrace.span("across")
        scope.__enter__()
        glmtrace.init(service_name="second", **settings)
        scope.__exit__(None, None, None)
        with glmtrace.span("after"):
            pass
        assert glmtrace.force_flush(5)
    finally:
        glmtrace.shutdown()
    otlp = glmtrace.stats()["otlp"]
    arrived = receiver.names()
    assert arrived["after"] == 1
    assert arrived["across"] + otlp.get("dropped", 0) == 1, (arrived, otlp)
