"""W3C trace context and baggage through carriers and envelopes."""

from __future__ import annotations

from typing import Any

import pytest

import glmtrace
from tests.conftest import Traced


def test_inject_then_attach_continues_the_trace(traced: Traced) -> None:
    """A carrier written by inject() makes attach() continue the same trace."""
    carrier: dict[str, str] = {}
    with glmtrace.span("producer") as producer:
        glmtrace.inject(carrier)
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", producer.trace_id, producer.span_id)
    assert int(flags, 16) & 1  # sampled
    with glmtrace.attach(carrier), glmtrace.span("consumer") as consumer:
        assert consumer.trace_id == producer.trace_id
    assert traced.one("consumer")["parent_span_id"] == producer.span_id


def test_envelope_carries_traceparent_and_session(traced: Traced) -> None:
    """An envelope's metadata holds traceparent; its session_id lands on downstream spans."""
    envelope: dict[str, Any] = {"session_id": "sess-42", "payload": "hi", "metadata": {}}
    with glmtrace.span("stage a") as a:
        glmtrace.inject(envelope)
    assert "traceparent" in envelope["metadata"]
    assert "session.id=sess-42" in envelope["metadata"]["baggage"]
    with glmtrace.attach(envelope), glmtrace.span("stage b"), glmtrace.span("stage b inner"):
        pass
    b, inner = traced.one("stage b"), traced.one("stage b inner")
    assert b["parent_span_id"] == a.span_id
    assert b["attributes"]["session.id"] == "sess-42"
    assert inner["attributes"]["session.id"] == "sess-42"


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
        {"traceparent": 42},
        {"traceparent": "00-" + "a" * 10_000},
        {"baggage": "=;=;===,,,"},
        {"session_id": None, "payload": 1, "metadata": "not a dict"},
        None,
        "a string",
        {b"bytes": b"\xff"},
    ],
)
def test_malformed_carrier_starts_a_new_trace(traced: Traced, carrier: Any) -> None:
    """Malformed carriers never raise and the next span is a new root."""
    with glmtrace.span("outer") as outer, glmtrace.attach(carrier), glmtrace.span("after") as after:
        assert after.trace_id is not None
        assert after.trace_id != outer.trace_id
    assert traced.one("after")["parent_span_id"] is None


@pytest.mark.parametrize("carrier", [None, "text", 3, {"metadata": None, "session_id": "s"}, []])
def test_inject_into_anything_never_raises(traced: Traced, carrier: Any) -> None:
    """inject() into a non-carrier returns it unchanged instead of raising."""
    with glmtrace.span("s"):
        assert glmtrace.inject(carrier) is carrier


def test_extract_without_span_has_no_parent(traced: Traced) -> None:
    """inject() outside any span writes no traceparent."""
    carrier: dict[str, str] = {}
    glmtrace.inject(carrier)
    assert "traceparent" not in carrier
