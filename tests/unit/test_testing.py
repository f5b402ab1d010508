"""glmtrace.testing.capture: in-memory spans and logs for users' tests."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import glmtrace
import glmtrace.testing
from glmtrace._internal.runtime import DEFAULT
from glmtrace._internal.store.database import Store

log = logging.getLogger("user-code")


@glmtrace.stage("clean")
def clean(text: str) -> str:
    log.warning("cleaning %s", text, extra={"chars": len(text)})
    return text.strip()


def test_capture_without_init_records_spans_and_logs_then_stops() -> None:
    with glmtrace.testing.capture() as cap:
        with glmtrace.span("request", {"user": "ada"}):
            clean(" hi ")
        with pytest.raises(ValueError), glmtrace.span("bad"):
            raise ValueError("nope")
    request, stage = cap.span("request"), cap.span("stage clean")
    assert stage["parent_span_id"] == request["span_id"]
    assert stage["trace_id"] == request["trace_id"]
    assert request["attributes"]["user"] == "ada"
    assert cap.span("bad")["status"] == "ERROR"
    assert [e["name"] for e in cap.span("bad")["events"]] == ["exception"]
    (doc,) = cap.logs
    assert doc["message"] == "cleaning  hi "
    assert doc["log.level"] == "WARNING"
    assert doc["labels.chars"] == 4
    assert (doc["trace.id"], doc["span.id"]) == (stage["trace_id"], stage["span_id"])
    # glmtrace was not running before the block: it is not after it either.
    with glmtrace.span("after") as after:
        log.warning("after")
    assert after.trace_id is None
    assert [s["name"] for s in cap.spans] == ["stage clean", "request", "bad"]
    assert len(cap.logs) == 1


def test_capture_leaves_the_programs_configuration_in_place(tmp_path: Path) -> None:
    options = glmtrace.init(service_name="app", store=tmp_path / "s.db")
    try:
        with glmtrace.testing.capture() as cap, glmtrace.span("inside") as inside:
            log.warning("inside")
        with glmtrace.span("outside") as outside:
            log.warning("outside")
        assert DEFAULT.options is options
        glmtrace.force_flush()
        store = Store(tmp_path / "s.db")
        assert inside.trace_id and outside.trace_id
        assert [s["name"] for s in store.spans(inside.trace_id)] == ["inside"]
        assert [s["name"] for s in store.spans(outside.trace_id)] == ["outside"]
        assert [d["message"] for d in store.all_logs()] == ["inside", "outside"]
    finally:
        glmtrace.shutdown()
    assert [s["name"] for s in cap.spans] == ["inside"]
    assert [d["message"] for d in cap.logs] == ["inside"]
    assert cap.logs[0]["service.name"] == "app"


def test_info_records_are_captured_like_glmtrace_captures_them() -> None:
    """From INFO up, though the root logger (WARNING by default) would drop them."""
    assert logging.getLogger().getEffectiveLevel() == logging.WARNING
    with glmtrace.testing.capture() as cap:
        log.info("detail")
        log.debug("noise")
    assert [d["message"] for d in cap.logs] == ["detail"]
    assert logging.getLogger().getEffectiveLevel() == logging.WARNING


def test_nested_captures_each_see_their_own_block(tmp_path: Path) -> None:
    glmtrace.init(traces="none", logs="none", store=tmp_path / "s.db")
    try:
        with glmtrace.testing.capture() as outer:
            with glmtrace.span("a"), glmtrace.testing.capture() as inner, glmtrace.span("b"):
                pass
            with glmtrace.span("c"):
                pass
        with glmtrace.span("after"):
            pass
        assert [s["name"] for s in inner.spans] == ["b"]
        assert [s["name"] for s in outer.spans] == ["b", "a", "c"]
    finally:
        glmtrace.shutdown()


def test_span_lookup_names_what_it_did_not_find() -> None:
    with glmtrace.testing.capture() as cap:
        pass
    with pytest.raises(AssertionError, match="0 spans named 'x'"):
        cap.span("x")
