"""The native store writer: the rows the Python writer writes, one SQLite, fork-safe, counted.

Run with ``GLMTRACE_NATIVE=0`` the suite takes the Python writer; these tests then check only
that the fallback is the one in use.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

import glmtrace
from glmtrace._internal import native_export
from glmtrace._internal.export.exporters import StoreSpanExporter
from glmtrace._internal.store import fork_safety, native_writer
from glmtrace._internal.store.database import Store

NATIVE = native_writer.unavailable() is None
needs_native = pytest.mark.skipif(not NATIVE, reason="native store writer not built or forced off")

# ---------------------------------------------------------------- random spans

_odd_text = st.sampled_from(["a\udcffb", "\ud83d\ude00", 'q"\\\n\t\x01\x7f', "é", ""])
_text = st.one_of(st.text(max_size=8), _odd_text)
_float = st.one_of(
    st.floats(),
    st.sampled_from([1e16, 1e-5, 1e-4, 0.1, -0.0, 1e22, 123456.0, 562949953421312.25]),
)
_int = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**200), 2**200))
_scalar = st.one_of(_text, st.booleans(), _int, _float)
_odd = st.sampled_from([None, b"\x00b", 10**5000, {"k": 1}, {1: "one"}, [1, "x"], object])
_value = st.one_of(
    _scalar,
    *(st.lists(s, max_size=3).map(tuple) for s in (_text, st.booleans(), _int, _float)),
    _odd,
)
_attributes = st.dictionaries(_text, _value, max_size=5)
_resources = [
    Resource({"service.name": "a", "n": 1}),
    Resource({"service.name": "b\udcff", "tags": ("x", "y"), "process.pid": 1}),
    Resource({"no.service": 1.5}),
]


@st.composite
def _context(draw: st.DrawFn) -> SpanContext:
    return SpanContext(draw(st.integers(1, 2**128 - 1)), draw(st.integers(1, 2**64 - 1)), False)


@st.composite
def _spans(draw: st.DrawFn) -> ReadableSpan:
    start = draw(st.integers(0, 2**62))
    status = draw(
        st.sampled_from(
            [Status(), Status(StatusCode.OK), Status(StatusCode.ERROR, "boom \u00e9\udcff")]
        )
    )
    return ReadableSpan(
        name=draw(_text),
        context=draw(_context()),
        parent=draw(st.none() | _context()),
        resource=draw(st.sampled_from(_resources)),
        attributes=draw(_attributes),
        events=[
            Event(draw(_text), draw(_attributes), draw(st.integers(0, 2**62)))
            for _ in range(draw(st.integers(0, 2)))
        ],
        links=[Link(draw(_context()), draw(_attributes)) for _ in range(draw(st.integers(0, 2)))],
        kind=draw(st.sampled_from(list(SpanKind))),
        status=status,
        start_time=start,
        end_time=draw(st.none() | st.integers(start, start + 10**9)),
    )


def _raw_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT * FROM spans ORDER BY trace_id, span_id").fetchall()
    conn.close()
    return rows


def _native_processor(store: Store, max_queue: int = 1000) -> native_writer.NativeStoreProcessor:
    processor = native_writer.start(store, 2.0, max_queue)
    assert processor is not None
    return processor


@needs_native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_spans(), min_size=1, max_size=5, unique_by=lambda s: s.context.span_id))
def test_native_rows_equal_the_python_writers(spans: list[ReadableSpan]) -> None:
    """Every column, byte for byte (JSON text included), and equal read back through Store."""
    with tempfile.TemporaryDirectory() as tmp:
        native_path, python_path = Path(tmp, "native.db"), Path(tmp, "python.db")
        processor = _native_processor(Store(native_path))
        for span in spans:
            processor.on_end(span)
        processor.shutdown()
        python_store = Store(python_path)
        assert StoreSpanExporter(python_store).export_lost(spans) == 0
        python_store.close()
        native_rows, python_rows = _raw_rows(native_path), _raw_rows(python_path)
        assert native_rows == python_rows
        assert len(native_rows) == len({(s.context.trace_id, s.context.span_id) for s in spans})
        assert _comparable(Store(native_path).all_spans()) == _comparable(
            Store(python_path).all_spans()
        )


@needs_native
def test_floats_are_written_as_python_writes_them(tmp_path: Path) -> None:
    """repr() digits for every float: 20,000 random doubles, and the ties between two
    shortest forms (x.25 and x.75 near 2**49), where CPython takes the even digit."""
    rng = random.Random(7)
    ties = [2.0**e + k / 4 for e in range(47, 52) for k in (1, 3, 5, 7)]
    values = ties + [
        struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(20_000)
    ]
    values += [rng.uniform(-1e6, 1e6) for _ in range(5_000)]
    span = ReadableSpan(name="f", context=SpanContext(1, 1, False), attributes={"f": values})
    processor = _native_processor(Store(tmp_path / "native.db"))
    processor.on_end(span)
    processor.shutdown()
    python_store = Store(tmp_path / "python.db")
    assert StoreSpanExporter(python_store).export_lost([span]) == 0
    python_store.close()
    written = []
    for name in ("native.db", "python.db"):
        with contextlib.closing(sqlite3.connect(tmp_path / name)) as db:
            written.append(db.execute("SELECT attributes FROM spans").fetchall())
    assert written[0] == written[1]


def _comparable(rows: list[Any]) -> str:
    # NaN is never equal to itself: compare the rows' JSON text.
    return json.dumps(sorted(rows, key=lambda r: (r["trace_id"], r["span_id"])), sort_keys=True)


@needs_native
def test_values_the_store_cannot_take_as_they_are_are_repaired_not_lost(tmp_path: Path) -> None:
    """Lone surrogates, integers too long to print, unknown objects: the batch is stored."""
    store = Store(tmp_path / "s.db")
    processor = _native_processor(store)
    odd: dict[str, Any] = {"big": 10**5000, "path": "a\udcffb", "obj": object, "nan": math.nan}
    bad = ReadableSpan(name="train-\udcff", context=SpanContext(1, 2, False), attributes=odd)
    good = ReadableSpan(name="good", context=SpanContext(1, 3, False), attributes={"n": 1})
    processor.on_end(bad)
    processor.on_end(good)
    assert processor.force_flush(5000)
    processor.shutdown()
    rows = {r["name"]: r for r in Store(tmp_path / "s.db").all_spans()}
    assert set(rows) == {"train-\ufffd", "good"}
    attributes = rows["train-\ufffd"]["attributes"]
    assert attributes["path"] == "a\ufffdb"
    assert attributes["big"] == "1" + "0" * 5000  # its decimal text, as a string
    assert attributes["obj"] == "<class 'object'>"
    assert glmtrace.stats()["local"] == {"native": 1, "exported": 2}


def _thin_spans(store: Path) -> None:
    """glmtrace's own spans (thin, handed to the native queue as tuples): attributes, an event,
    a link, an error status, a child, an OpenTelemetry SDK span."""
    glmtrace.init(service_name="eq\udcff", store=store, logs="none")
    odd = {"s": "a\udcffb", "f": 0.1, "big": 2**70, "l": (1.5, 2e20), "b": True, "n": -(2**63)}
    with contextlib.suppress(ValueError), glmtrace.span("root", odd) as root:
        root.add_event("step", {"loss": 1e-7})
        trace.get_current_span().add_link(SpanContext(5, 6, False), {"why": "batch"})
        with glmtrace.span("child"):
            trace.get_tracer("sdk").start_span("sdk", kind=SpanKind.CLIENT).end()
        raise ValueError("boom \udcff")
    glmtrace.shutdown()


def _normalised(path: Path) -> list[dict[str, Any]]:
    """Rows with what differs between two runs (ids, times) replaced by stable stand-ins."""
    spans: list[dict[str, Any]] = sorted(
        (dict(s) for s in Store(path).all_spans()), key=lambda s: str(s["name"])
    )
    ids: dict[str | None, str | None] = {None: None}
    for span in spans:
        ids[span["span_id"]] = f"id-{span['name']}"
    for span in spans:
        span.update(trace_id="t", span_id=ids[span["span_id"]], start_ns=0, end_ns=0)
        span["parent_span_id"] = ids[span["parent_span_id"]]
        for event in span["events"]:
            event["timestamp_ns"] = 0
            event["attributes"].pop("exception.stacktrace", None)
    return spans


@needs_native
def test_thin_spans_are_stored_as_the_python_writer_stores_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tuples glmtrace's spans hand over directly make the Python writer's rows too."""
    _thin_spans(tmp_path / "native.db")
    assert glmtrace.stats()["local"]["native"] == 1
    monkeypatch.setenv("GLMTRACE_NATIVE", "0")
    _thin_spans(tmp_path / "python.db")
    assert glmtrace.stats()["local"]["native"] == 1  # not a second time
    native, python = _normalised(tmp_path / "native.db"), _normalised(tmp_path / "python.db")
    assert [s["name"] for s in native] == ["child", "root", "sdk"]
    assert native == python


# ---------------------------------------------------------------- which writer, and why


def test_spans_to_the_store_take_the_native_writer_when_it_can(tmp_path: Path) -> None:
    """stats()["local"]["native"] is 1 exactly when the native writer stores the spans."""
    glmtrace.init(service_name="w", store=tmp_path / "s.db", logs="none")
    try:
        with glmtrace.span("one"):
            pass
        assert glmtrace.force_flush(5)
    finally:
        glmtrace.shutdown()
    assert glmtrace.stats()["local"].get("native", 0) == int(NATIVE)
    assert [s["name"] for s in Store(tmp_path / "s.db").all_spans()] == ["one"]


@needs_native
def test_a_second_copy_of_sqlite_means_the_python_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extension must resolve the SQLite Python's sqlite3 uses, or it is not used."""
    native = native_export.extension()
    assert native is not None
    address, _ = native.sqlite_library()
    assert native_writer.python_sqlite_address() == address
    monkeypatch.setattr(native_writer, "python_sqlite_address", lambda: address + 1)
    native_writer.other_sqlite.cache_clear()
    try:
        assert "different copy of SQLite" in native_writer.describe()
        glmtrace.init(service_name="w", store=tmp_path / "s.db", logs="none")
        with glmtrace.span("one"):
            pass
        glmtrace.shutdown()
    finally:
        native_writer.other_sqlite.cache_clear()
    assert "native" not in glmtrace.stats()["local"]
    assert [s["name"] for s in Store(tmp_path / "s.db").all_spans()] == ["one"]


def test_doctor_says_which_writer_stores_spans(tmp_path: Path) -> None:
    env = {**os.environ, "GLMTRACE_STORE": str(tmp_path / "g.db"), "GLMTRACE_TRACES": "local"}
    out = subprocess.run(
        [sys.executable, "-m", "glmtrace", "doctor"], env=env, capture_output=True, text=True
    ).stdout
    expected = "native store writer" if NATIVE else "Python store writer ("
    assert expected in " ".join(out.split())


# ---------------------------------------------------------------- bounded, counted


@needs_native
def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    processor = _native_processor(Store(tmp_path / "s.db"), max_queue=2)
    assert processor.pause(5)  # the thread takes nothing off the queue
    for i in range(5):
        processor.on_end(ReadableSpan(name=f"s{i}", context=SpanContext(1, i + 1, False)))
    processor.resume()
    assert processor.force_flush(5000)
    processor.shutdown()
    assert glmtrace.stats()["local"] == {"native": 1, "exported": 2, "dropped": 3}
    assert len(Store(tmp_path / "s.db").all_spans()) == 2


@needs_native
def test_a_store_held_past_the_deadline_drops_counts_and_shuts_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer holds the file: the batch waits WAIT_S, then is dropped and counted."""
    monkeypatch.setattr(native_writer, "WAIT_S", 0.3)
    store = Store(tmp_path / "s.db")
    processor = _native_processor(store)
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        processor.on_end(ReadableSpan(name="held", context=SpanContext(1, 1, False)))
        assert processor.force_flush(5000)  # given up after WAIT_S: settled
    finally:
        other.execute("ROLLBACK")
        other.close()
    processor.shutdown()
    assert glmtrace.stats()["local"] == {"native": 1, "dropped": 1}


@needs_native
def test_shutdown_gives_up_on_a_held_store_within_its_deadline(tmp_path: Path) -> None:
    """The file stays held (WAIT_S is 30 s) until shutdown returns: it returned by its own
    deadline, counting what it could not write, and the spans counted dropped are not written
    later when the file is let go (the writer's busy wait outlived the deadline)."""
    processor = native_writer.start(Store(tmp_path / "s.db"), 0.5, 1000)
    assert processor is not None
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        for i in range(3):
            processor.on_end(ReadableSpan(name="held", context=SpanContext(1, i + 1, False)))
        processor.shutdown()
        assert glmtrace.stats()["local"] == {"native": 1, "dropped": 3}
    finally:
        other.execute("ROLLBACK")
        other.close()
    time.sleep(0.3)  # the writer's next try: a 50 ms busy wait, then at most 20 ms asleep
    assert Store(tmp_path / "s.db").all_spans() == []


# ---------------------------------------------------------------- fork

_FORK = """
import json, os, sys
from pathlib import Path
import glmtrace
store = sys.argv[1]
glmtrace.init(service_name="fork", store=store, logs="none")
with glmtrace.span("parent-before"):
    pass
assert glmtrace.force_flush(5)  # the parent's writer has written (and held its connection)
inode = os.stat(store).st_ino
pid = os.fork()
if pid == 0:
    with glmtrace.span("child"):
        pass
    ok = glmtrace.force_flush(5)
    locks = [
        line for line in Path("/proc/locks").read_text().splitlines()
        if line.replace(" -> ", " ").split()[4] == str(os.getpid())
        and line.replace(" -> ", " ").split()[5].endswith(f":{inode}")
    ]
    report = {"ok": ok, "locks": locks, "stats": glmtrace.stats()}
    Path(sys.argv[2]).write_text(json.dumps(report))
    os._exit(0)
os.waitpid(pid, 0)
with glmtrace.span("parent-after"):
    pass
print(json.dumps({"done": glmtrace.shutdown(5), "stats": glmtrace.stats()}))
"""


@needs_native
@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
def test_forked_child_writes_through_its_own_writer_under_its_own_locks(tmp_path: Path) -> None:
    """The parent's writer closes its connection for the fork: the child's writer holds real
    POSIX locks of its own, and the parent writes on after the child has gone."""
    store, report = tmp_path / "s.db", tmp_path / "child.json"
    run = subprocess.run(
        [sys.executable, "-c", _FORK, str(store), str(report)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    parent = json.loads(run.stdout.strip().splitlines()[-1])
    child = json.loads(report.read_text())
    assert child["ok"] and child["locks"], child
    assert child["stats"]["local"] == {"native": 1, "exported": 1}
    assert parent["done"] and parent["stats"]["local"] == {"native": 1, "exported": 2}
    names = sorted(s["name"] for s in Store(store).all_spans())
    assert names == ["child", "parent-after", "parent-before"]
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


class _Writer:
    """A store writer as fork_safety sees it, recording what the fork asked of it."""

    def __init__(self, pauses: bool) -> None:
        self.pauses = pauses
        self.calls: list[str] = []

    def pause(self, timeout: float) -> bool:
        self.calls.append("pause")
        return self.pauses

    def resume(self) -> None:
        self.calls.append("resume")

    def restart_in_child(self, usable: bool) -> None:
        self.calls.append(f"restart usable={usable}")


@pytest.mark.parametrize("pauses", [True, False])
def test_a_writer_that_cannot_pause_leaves_the_child_unusable(pauses: bool) -> None:
    """The parent resumes every writer; the child restarts them, usable only if all paused."""
    writer = _Writer(pauses)
    fork_safety.add_writer(writer)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, json.dumps([writer.calls, fork_safety.unusable()]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_calls, child_unusable = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert writer.calls == ["pause", "resume"]
    assert child_calls == ["pause", f"restart usable={pauses}"]
    assert child_unusable is not pauses
