"""The local store takes writers from several processes at once, from the very first write."""

from __future__ import annotations

import decimal
import multiprocessing
from pathlib import Path
from typing import Any

from glmtrace._internal.store import Store


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
