"""The local store takes writers from several processes at once, from the very first write."""

from __future__ import annotations

import decimal
import multiprocessing
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

import glmtrace
from glmtrace._internal.export.exporters import CountingExporter, StoreSpanExporter
from glmtrace._internal.stats import STATS
from glmtrace._internal.store import fork_safety
from glmtrace._internal.store.database import Store, StoreError


def _write(path: Path, worker: int) -> None:
    store = Store(path)
    for i in range(20):
        store.write_logs(
            [
                {
                    "log.id": f"{worker}-{i}",
                    "timestamp_ns": i,
                    "log.level": "INFO",
                    "log.logger": "w",
                    "message": f"worker {worker} line {i}",
                }
            ]
        )


def test_concurrent_first_writers_lose_nothing(tmp_path: Path) -> None:
    """Six processes creating and writing one new store together: every record lands."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = tmp_path / f"store-{attempt}.db"
        workers = [ctx.Process(target=_write, args=(path, w)) for w in range(6)]
        for proc in workers:
            proc.start()
        for proc in workers:
            proc.join(60)
        assert [proc.exitcode for proc in workers] == [0] * 6
        assert len(Store(path).all_logs()) == 6 * 20


def _span(i: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "trace_id": "ab" * 16,
        "span_id": f"{i:016x}",
        "parent_span_id": None,
        "name": f"span {i}",
        "kind": "INTERNAL",
        "start_ns": i,
        "end_ns": i + 1,
        "status": "UNSET",
        "status_message": None,
        "service_name": "test",
        "attributes": {"i": i},
        "events": [],
        "links": [],
        "resource": {"service.name": "test"},
    }
    return {**row, **changes}


def _log(i: int, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "log.id": f"log-{i}",
        "timestamp_ns": i,
        "trace.id": "ab" * 16,
        "log.level": "INFO",
        "log.logger": "test",
        "message": f"record {i}",
    }
    return {**doc, **changes}


def test_unencodable_span_values_are_repaired_in_their_batch(tmp_path: Path) -> None:
    """Lone surrogates in one span: all 101 stored, the bad one with replacement characters."""
    store = Store(tmp_path / "s.db")
    bad = _span(
        100,
        name="open \udcff.txt",
        status="ERROR",
        status_message="No such file: '\udcff.txt'",
        attributes={"path": "\udcff", "ok": "caf\u00e9"},
        events=[{"name": "exception", "timestamp_ns": 1, "attributes": {"msg": "\ud800"}}],
    )
    lost = store.write_spans([_span(i) for i in range(100)] + [bad])
    spans = {s["span_id"]: s for s in store.all_spans()}
    assert (len(spans), lost) == (101, 0)
    stored = spans[f"{100:016x}"]
    assert stored["name"] == "open \ufffd.txt"
    assert stored["status_message"] == "No such file: '\ufffd.txt'"
    assert stored["attributes"]["path"] == "\ufffd"
    assert stored["attributes"]["ok"] == "caf\u00e9"
    assert stored["events"][0]["attributes"]["msg"] == "\ufffd"


def test_surrogate_log_message_is_repaired_in_its_batch(tmp_path: Path) -> None:
    """A record whose message or key holds a lone surrogate costs none of the other records."""
    store = Store(tmp_path / "s.db")
    docs = [_log(i) for i in range(60)]
    docs += [_log(60, message="bad \udcff name"), _log(61, **{"\udc80key": 1})]
    lost = store.write_logs(docs)
    logs = {d["log.id"]: d for d in store.all_logs()}
    assert (len(logs), lost) == (62, 0)
    assert logs["log-60"]["message"] == "bad \ufffd name"
    assert logs["log-61"]["\ufffdkey"] == 1


def test_huge_integers_are_stored_as_strings_in_their_batch(tmp_path: Path) -> None:
    """A 5000-digit integer in a span attribute or a log ``extra`` becomes its decimal string."""
    store = Store(tmp_path / "s.db")
    digits = str(decimal.Decimal(10**5000))
    lost_spans = store.write_spans([_span(0), _span(1, attributes={"big": 10**5000})])
    lost_logs = store.write_logs([_log(0), _log(1, big=-(10**5000))])
    assert [s["attributes"].get("big") for s in store.all_spans()] == [None, digits]
    assert [d.get("big") for d in store.all_logs()] == [None, "-" + digits]
    assert (lost_spans, lost_logs) == (0, 0)


def test_a_row_the_database_refuses_costs_only_itself(tmp_path: Path) -> None:
    """A start time no SQLite integer holds: that span is counted lost, its batch is stored."""
    store = Store(tmp_path / "s.db")
    rows = [_span(i) for i in range(10)] + [_span(10, start_ns=2**70)]
    lost = store.write_spans(rows)
    assert (len(store.all_spans()), lost) == (10, 1)


def test_nameless_span_and_message_are_stored(tmp_path: Path) -> None:
    """A span named None and a record without a message are kept (empty text), not ignored."""
    store = Store(tmp_path / "s.db")
    lost = store.write_spans([_span(1, name=None)]), store.write_logs([_log(1, message=None)])
    assert [s["name"] for s in store.all_spans()] == [""]
    assert len(store.all_logs()) == 1
    assert lost == (0, 0)


def test_store_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    """GLMTRACE_STORE naming a directory: a StoreError that says so, for reads and writes."""
    for call in (lambda s: s.recent(5), lambda s: s.write_spans([_span(1)])):
        with pytest.raises(StoreError, match="is a directory; GLMTRACE_STORE must name a file"):
            call(Store(tmp_path))


def test_store_files_are_private(tmp_path: Path) -> None:
    """A new store's directory is 0700 and its database, WAL and shared-memory files 0600."""
    path = tmp_path / "new" / "glmtrace.db"
    store = Store(path)
    store.write_spans([_span(1)])
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert modes == {"glmtrace.db": 0o600, "glmtrace.db-wal": 0o600, "glmtrace.db-shm": 0o600}


def _exported(run: tuple[int, int, str, dict[str, dict[str, int]]]) -> int:
    return run[3].get("local", {}).get("exported", 0)


def test_each_run_records_only_its_own_counts(tmp_path: Path) -> None:
    """Two init/shutdown cycles in one process: doctor's rows show 3 and 2 spans, not 3 and 5."""
    path = tmp_path / "s.db"
    Store(tmp_path / "earlier.db").record_run("earlier", STATS.snapshot())  # earlier tests' counts
    for service, count in (("first", 3), ("second", 2)):
        glmtrace.init(service_name=service, store=path, logs="none")
        for i in range(count):
            with glmtrace.span("work", {"i": i}):
                pass
        glmtrace.shutdown()
    runs = Store(path).recent_runs()
    assert [(r[2], _exported(r)) for r in runs] == [("second", 2), ("first", 3)]


def _child_traces(path: Path) -> None:
    with glmtrace.span("child"):
        pass
    glmtrace.shutdown()


def test_forked_child_records_only_its_own_counts(tmp_path: Path) -> None:
    """A child forked after its parent exported 4 spans records its 1 span, not 5."""
    path = tmp_path / "s.db"
    glmtrace.init(service_name="parent", store=path, logs="none")
    try:
        for i in range(4):
            with glmtrace.span("parent", {"i": i}):
                pass
        glmtrace.force_flush()
        child = multiprocessing.get_context("fork").Process(target=_child_traces, args=(path,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        (run,) = Store(path).recent_runs()
        assert (run[1], _exported(run)) == (child.pid, 1)
    finally:
        glmtrace.shutdown()


def test_child_forked_while_the_store_is_busy_is_refused_not_hung(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork that cannot wait for a store call to end: the child's spans fail at once, counted."""
    monkeypatch.setattr(fork_safety, "FORK_WAIT_S", 0.1)
    store = Store(tmp_path / "s.db")
    store.write_spans([_span(1)])
    with fork_safety.lock():  # a store call in progress for the whole fork
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.environ["GLMTRACE_STRICT"] = "0"  # reported and counted, as for a user
                exporter = CountingExporter("local-busy-fork", StoreSpanExporter(store))
                span = ReadableSpan(name="child", context=SpanContext(1, 2, False))
                exporter.export([span])
                if STATS.snapshot()["local-busy-fork"] == {"dropped": 1}:
                    code = 0
            finally:
                os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
    assert len(store.all_spans()) == 1
