"""Property tests: arbitrary Python values never make glmtrace raise into user code."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import glmtrace
from glmtrace._internal.store.database import Store
from tests.conftest import Traced

MAX = 4096
MARKER = len("...[truncated 9999999999 chars]")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
    st.complex_numbers(),
    st.sampled_from([math.nan, object(), Ellipsis, type, len]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=8),
        st.dictionaries(st.one_of(st.text(), st.integers()), children, max_size=8),
        st.tuples(children, children),
        st.frozensets(st.integers(), max_size=5),
    ),
    max_leaves=40,
)
keys = st.text(min_size=1, max_size=40)
fast = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_bounded(attributes: dict[str, Any]) -> None:
    for value in attributes.values():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, str):
                assert len(item) <= MAX + MARKER


@fast
@given(attributes=st.dictionaries(keys, values, max_size=6), late=values)
def test_span_attributes_accept_anything(
    traced: Traced, attributes: dict[str, Any], late: Any
) -> None:
    """Any mapping of values is accepted by span() and set_attribute, within the size limits."""
    traced.exporter.clear()
    with glmtrace.span("s", attributes) as span:
        span.set_attribute("late", late)
        span.add_event("e", {"v": late})
    (exported,) = traced.spans()
    assert_bounded(exported["attributes"])


@fast
@given(
    args=st.lists(values, max_size=4),
    kwargs=st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), values, max_size=3),
)
def test_stage_arguments_are_passed_through(
    traced: Traced, args: list[Any], kwargs: dict[str, Any]
) -> None:
    """A stage passes arbitrary arguments through untouched."""

    @glmtrace.stage
    def echo(*a: Any, **k: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return a, k

    got_args, got_kwargs = echo(*args, **kwargs)
    # Identity, not equality: the very objects arrive (NaN included), none copied or converted.
    assert len(got_args) == len(args)
    assert all(got is sent for got, sent in zip(got_args, args, strict=True))
    assert got_kwargs.keys() == kwargs.keys()
    assert all(got_kwargs[k] is v for k, v in kwargs.items())


@fast
@given(extra=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), values, max_size=5))
def test_log_extra_fields_accept_anything(local_store: Path, extra: dict[str, Any]) -> None:
    """Log records with arbitrary extra fields are shipped without raising."""
    reserved = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
    safe_extra = {k: v for k, v in extra.items() if k not in reserved}
    store = Store(local_store)
    before = len(store.all_logs()) if local_store.exists() else 0
    with glmtrace.span("s"):
        logging.getLogger("hostile").warning("value %s", "x", extra=safe_extra)
    glmtrace.force_flush()
    docs = store.all_logs()
    assert len(docs) == before + 1  # shipped, not lost to a serialisation error
    assert all(len(json.dumps(d)) < 64 * 1024 for d in docs)


@fast
@given(metadata=st.one_of(values, st.dictionaries(st.text(), values)), session=values)
def test_envelope_metadata_accepts_anything(traced: Traced, metadata: Any, session: Any) -> None:
    """inject/extract/attach on envelopes with arbitrary metadata and session ids never raise."""
    envelope = {"session_id": session, "payload": None, "metadata": metadata}
    with glmtrace.span("producer") as producer:
        glmtrace.inject(envelope)
    with glmtrace.attach(envelope), glmtrace.span("consumer") as consumer:
        pass
    # A header dict (or None, which inject fills) carries the trace; any other metadata cannot,
    # so the consumer starts a trace of its own instead of failing.
    carries = metadata is None or isinstance(metadata, dict)
    assert (consumer.trace_id == producer.trace_id) == carries


@pytest.mark.parametrize("name", [None, 42, b"bytes"])
def test_span_name_that_is_not_a_string_is_stored(local_store: Path, name: Any) -> None:
    """span(None) and other non-string names become strings at creation, so the span is stored."""
    with glmtrace.span(name) as span:  # type: ignore[arg-type]
        pass
    glmtrace.force_flush()
    assert [s["name"] for s in Store(local_store).spans(span.trace_id)] == [str(name)]
    assert "dropped" not in glmtrace.stats().get("local", {})
