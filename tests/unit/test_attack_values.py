"""Hostile values given to glmtrace's spans through the OpenTelemetry API reach the backend
repaired, and never cost a neighbouring span (both export paths, a real OTLP/HTTP receiver)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

import glmtrace
from glmtrace._internal.export.exporters import MAX_REQUEST_BYTES
from tests.unit.test_attack_forks import Receiver

# Each is something a program may do to the current span, that OTLP cannot carry as given.
HOSTILE: dict[str, Callable[[Any], None]] = {
    "event at time.time()": lambda s: s.add_event("e", {}, timestamp=time.time()),
    "event before 1970": lambda s: s.add_event("e", {}, timestamp=-5),
    "event past 2**64 ns": lambda s: s.add_event("e", {}, timestamp=2**65),
    "link to ids too wide": lambda s: s.add_link(trace.SpanContext(2**130, 2**70, False), {"a": 1}),
}


def _init(receiver: Receiver, tmp_path: Path) -> None:
    glmtrace.init(
        service_name="values",
        traces="otlp",
        endpoint=receiver.url,
        protocol="http/protobuf",
        logs="none",
        store=tmp_path / "g.db",
    )


@pytest.fixture
def sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """Every hostile span, each between two plain ones, sent in one batch."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")  # a counted drop must fail the assertions
    receiver = Receiver()
    _init(receiver, tmp_path)
    try:
        for name, act in HOSTILE.items():
            with glmtrace.span(f"before {name}"):
                pass
            with glmtrace.span(name):
                act(trace.get_current_span())
            with glmtrace.span(f"after {name}"):
                pass
        assert glmtrace.force_flush(5)
    finally:
        glmtrace.shutdown()
    yield receiver
    receiver.close()


def test_a_hostile_timestamp_or_link_costs_no_neighbouring_span(sent: Receiver) -> None:
    """The Python path's encoder failed the whole request on one float timestamp: every span
    of the batch was dropped."""
    names = sent.names()
    assert {n: names[n] for n in names if n.startswith(("before", "after"))} == {
        f"{where} {name}": 1 for name in HOSTILE for where in ("before", "after")
    }


def test_a_span_given_a_hostile_timestamp_or_link_arrives_repaired(sent: Receiver) -> None:
    """Each such span arrives; a float timestamp becomes whole nanoseconds, one out of range is
    clamped, a link to ids no trace can have is left out."""
    spans = {span.name: span for span in sent.spans}
    assert set(HOSTILE) <= set(spans), sorted(set(HOSTILE) - set(spans))
    assert spans["event before 1970"].events[0].time_unix_nano == 0
    assert spans["event past 2**64 ns"].events[0].time_unix_nano == 2**64 - 1
    assert list(spans["link to ids too wide"].links) == []


def test_a_huge_status_description_is_cut_to_the_request_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``set_status(ERROR, message)`` with a 10 MB message (an exception's whole payload),
    on a glmtrace span and on a plain OpenTelemetry one: each arrives within the request
    bound, marked truncated."""
    monkeypatch.setenv("GLMTRACE_STRICT", "0")
    receiver = Receiver()
    _init(receiver, tmp_path)
    try:
        with glmtrace.span("glmtrace span"):
            trace.get_current_span().set_status(trace.StatusCode.ERROR, "x" * 10_000_000)
        with trace.get_tracer("plain").start_as_current_span("sdk span") as span:
            span.set_status(trace.StatusCode.ERROR, "x" * 10_000_000)
        assert glmtrace.force_flush(10)
    finally:
        glmtrace.shutdown()
        receiver.close()
    sizes = {span.name: span.ByteSize() for span in receiver.spans}
    assert set(sizes) == {"glmtrace span", "sdk span"}
    assert all(size <= MAX_REQUEST_BYTES for size in sizes.values()), sizes
    assert all(
        any(a.key == "glmtrace.truncated" for a in span.attributes) for span in receiver.spans
    )


def test_the_local_store_keeps_a_span_given_a_hostile_timestamp_or_link(tmp_path: Path) -> None:
    """The store's writers (native and Python) keep such a span rather than drop it."""
    from glmtrace._internal.store.database import Store

    store = tmp_path / "g.db"
    glmtrace.init(service_name="values", traces="local", logs="none", store=store)
    try:
        for name, act in HOSTILE.items():
            with glmtrace.span(name):
                act(trace.get_current_span())
        assert glmtrace.force_flush(5)
        assert glmtrace.stats()["local"].get("dropped", 0) == 0
    finally:
        glmtrace.shutdown()
    stored = {row["name"] for row in Store(store).all_spans()}
    assert stored == set(HOSTILE)
