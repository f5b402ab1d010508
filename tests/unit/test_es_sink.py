"""The Elasticsearch sink's own logic: bulk bodies, retries, spooling, replay, counters.

Elasticsearch itself is never imitated here beyond a scripted ``bulk()`` answer; what the
real server does with these requests is checked in tests/integration/test_logs_elasticsearch.py.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elastic_transport import ConnectionError as TransportConnectionError

from glmtrace._internal.config import ElasticsearchOptions, Options
from glmtrace._internal.errors import MissingDependencyError
from glmtrace._internal.logs import es_bulk
from glmtrace._internal.logs.es_sink import SINK, ElasticsearchSink, create
from glmtrace._internal.logs.shipper import BackgroundShipper
from glmtrace._internal.logs.sinks import create_log_sink
from glmtrace._internal.stats import STATS


def doc(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "@timestamp": "2026-01-01T00:00:00.000001+00:00",
        "timestamp_ns": 1_767_225_600_000_001_000 + i,
        "log.id": f"run-{i}",
        "message": f"line {i}",
        "log.level": "INFO",
        **extra,
    }


_opened: list[ElasticsearchSink] = []


@pytest.fixture(autouse=True)
def fresh_stats() -> Iterator[None]:
    STATS.reset()
    yield
    while _opened:
        _opened.pop().close(timeout=1)
    STATS.reset()


def counts() -> dict[str, int]:
    return STATS.snapshot().get(SINK, {})


class ScriptedClient:
    """Answers ``bulk()`` from a script: an exception to raise, or ``step(_id, body)`` giving
    each document's status (or ``(status, error)``; None: stored, or 409 if stored already)."""

    def __init__(self, script: list[Any] | None = None) -> None:
        self.script = list(script or [])
        self.stored: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.templates: list[str] = []
        self.indices = self

    def put_index_template(self, *, name: str, body: dict[str, Any]) -> None:
        self.templates.append(name)

    def bulk(self, *, operations: bytes, filter_path: str) -> dict[str, Any]:
        self.requests += 1
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        lines = operations.decode().splitlines()
        items = []
        for action, body in zip(lines[::2], lines[1::2], strict=True):
            _id = json.loads(action)["create"]["_id"]
            answer = step(_id, json.loads(body)) if callable(step) else None
            status, error = answer if isinstance(answer, tuple) else (answer, None)
            if status is None:
                status = 409 if _id in self.stored else 201
            if status == 201:
                self.stored[_id] = json.loads(body)
            error = error or {"type": "t", "reason": "r"}
            items.append({"create": {"status": status, "error": error}})
        return {"errors": any(i["create"]["status"] >= 300 for i in items), "items": items}

    def options(self, **settings: Any) -> ScriptedClient:
        return self

    def close(self) -> None:
        pass


def sink_with(client: ScriptedClient, tmp_path: Path, **kwargs: Any) -> ElasticsearchSink:
    sink = ElasticsearchSink(
        ElasticsearchOptions(url="http://127.0.0.1:9"), tmp_path / "spool", 10**8, **kwargs
    )
    sink._client = client  # type: ignore[assignment]
    _opened.append(sink)
    return sink


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the elasticsearch package, init() gets MissingDependencyError with the fix."""
    monkeypatch.setitem(sys.modules, "elasticsearch", None)
    options = Options(
        elasticsearch=ElasticsearchOptions(url="http://127.0.0.1:9"), store=tmp_path / "s.db"
    )
    with pytest.raises(MissingDependencyError, match=r"glmtrace\[elasticsearch\]"):
        create_log_sink("elasticsearch", options)


def test_bulk_bodies_are_creates_keyed_by_log_id() -> None:
    """Each document is a create with _id = log.id; the body carries it as ECS event.id."""
    ((part, body),) = list(es_bulk.chunks("logs-glmtrace-default", [doc(1), doc(2)]))
    lines = body.decode().splitlines()
    assert json.loads(lines[0]) == {"create": {"_index": "logs-glmtrace-default", "_id": "run-1"}}
    assert json.loads(lines[1]) == {
        "@timestamp": "2026-01-01T00:00:00.000001+00:00",
        "message": "line 1",
        "log.level": "INFO",
        "event.id": "run-1",
    }
    assert len(part) == 2 and body.endswith(b"\n")


def test_bulk_bodies_are_split_by_bytes_and_count() -> None:
    """No body exceeds MAX_BULK_BYTES or MAX_BULK_DOCS; nothing is lost in the split."""
    big = [doc(i, **{"labels.blob": "x" * 100_000}) for i in range(120)]
    parts = list(es_bulk.chunks("ds", big))
    assert len(parts) > 1
    assert all(len(body) <= es_bulk.MAX_BULK_BYTES for _, body in parts)
    small = list(es_bulk.chunks("ds", [doc(i) for i in range(es_bulk.MAX_BULK_DOCS + 5)]))
    assert [len(p) for p, _ in small] == [es_bulk.MAX_BULK_DOCS, 5]
    assert sum(len(p) for p, _ in parts) == 120


def test_template_comes_from_package_data() -> None:
    """The index template ships with the package and targets the logs-glmtrace-* streams."""
    template = es_bulk.load_template()
    assert "logs-glmtrace-*" in template["index_patterns"]
    assert "data_stream" in template


def test_ships_directly_and_puts_template_once(tmp_path: Path) -> None:
    """With the backend answering, batches are exported directly; the template is put once."""
    client = ScriptedClient()
    sink = sink_with(client, tmp_path)
    sink([doc(1), doc(2)])
    sink([doc(3)])
    assert client.templates == ["glmtrace-logs"]
    assert list(client.stored) == ["run-1", "run-2", "run-3"]
    assert counts() == {"exported": 3}
    assert sink.spool.is_empty()


def test_conflict_counts_as_already_delivered(tmp_path: Path) -> None:
    """A 409 on create means the _id is stored already: delivered, not retried, not dropped."""
    client = ScriptedClient()
    sink = sink_with(client, tmp_path)
    sink([doc(1)])
    sink([doc(1)])
    assert client.requests == 2 and len(client.stored) == 1
    assert counts() == {"exported": 2}


def test_item_level_429_is_retried(tmp_path: Path) -> None:
    """Documents answered 429 are resent after a backoff; the rest are not resent."""
    answers = iter([429, 201, 201])
    client = ScriptedClient([lambda _id, body: next(answers)])
    sink = sink_with(client, tmp_path)
    sink([doc(1), doc(2)])
    assert client.requests == 2
    assert sorted(client.stored) == ["run-1", "run-2"]
    assert counts() == {"exported": 2}


def test_rejected_document_is_resent_with_core_fields(tmp_path: Path) -> None:
    """A mapping rejection (400) keeps the log line: resent without its extra fields."""
    client = ScriptedClient([lambda _id, body: 400])
    sink = sink_with(client, tmp_path)
    sink([doc(1, **{"labels.odd": {"a": 1}})])
    stored = client.stored["run-1"]
    assert stored["message"] == "line 1" and "labels.odd" not in stored
    assert counts() == {"exported": 1}


def test_outage_spools_then_replays_in_order_exactly_once(tmp_path: Path) -> None:
    """Backend down: batches spool (fast); back: replayed in order, each id stored once."""
    down = TransportConnectionError("refused")
    client = ScriptedClient([down] * 6)  # fails the direct try, its retries and a probe or two
    sink = sink_with(client, tmp_path, retry_seconds=0.2, max_backoff=0.2)
    sink([doc(i) for i in range(0, 10)])
    tries = client.requests
    for b in range(1, 5):
        sink([doc(i) for i in range(b * 10, b * 10 + 10)])
    # While down, batches go to the spool without the shipper touching the network.
    assert counts()["spooled"] == 50
    assert client.requests - tries <= 2  # at most the replayer's probes meanwhile
    wait_for(lambda: counts().get("replayed", 0) == 50)
    assert list(client.stored) == [f"run-{i}" for i in range(50)]
    assert counts()["spooled"] == 50 and "dropped" not in counts()
    wait_for(sink.spool.is_empty)
    sink([doc(50)])  # back on the direct path
    assert counts()["exported"] == 1
    sink.close()


def test_spool_left_by_an_earlier_run_is_replayed_first(tmp_path: Path) -> None:
    """A new sink replays what an earlier process spooled before shipping new batches."""
    first = sink_with(ScriptedClient([TransportConnectionError("down")] * 100), tmp_path)
    first.retry_seconds = 0.0
    first([doc(1), doc(2)])
    first.close()
    client = ScriptedClient()
    second = sink_with(client, tmp_path)
    second([doc(3)])
    wait_for(lambda: len(client.stored) == 3)
    assert list(client.stored) == ["run-1", "run-2", "run-3"]
    second.close()


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread behind each HTTP request the Elasticsearch client makes."""
    from elastic_transport import Transport

    made: list[str] = []
    real = Transport.perform_request

    def counting(self: Transport, *args: Any, **kwargs: Any) -> Any:
        made.append(threading.current_thread().name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Transport, "perform_request", counting)
    return made


def on_this_thread(attempts: list[str]) -> int:
    """Requests from the test's own thread (the shipper's role), not the spool replayer's."""
    return attempts.count(threading.current_thread().name)


def test_unreachable_port_costs_one_bounded_try(
    tmp_path: Path, refused_port: int, attempts: list[str]
) -> None:
    """Against a refused port the first batch retries within its budget and spools; the next
    batch spools at once, without touching the network (the sink knows it is down)."""
    sink = ElasticsearchSink(
        ElasticsearchOptions(url=f"http://127.0.0.1:{refused_port}"),
        tmp_path / "spool",
        10**8,
        retry_seconds=0.5,
    )
    sink([doc(1)])
    first = on_this_thread(attempts)
    # Retries 0.1 s then 0.2 s apart: at most three fit in the 0.5 s budget.
    assert 1 <= first <= 3
    sink([doc(2)])
    assert on_this_thread(attempts) == first  # no second round of retries
    assert counts()["spooled"] == 2
    sink.close(timeout=0.5)


def test_black_holed_endpoint_is_bounded_by_request_timeout(
    tmp_path: Path, attempts: list[str]
) -> None:
    """A peer that accepts and never answers: one request, cut by the request timeout (not
    retried within the 5 s retry budget), and the batch is spooled."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        sink = ElasticsearchSink(
            ElasticsearchOptions(url=f"http://127.0.0.1:{server.getsockname()[1]}"),
            tmp_path / "spool",
            10**8,
            request_timeout=0.5,
            retry_seconds=5.0,
        )
        # On a thread, so that a request without its timeout fails the test instead of
        # hanging it; the join's bound is a hang detector, far above the 0.5 s asked for.
        call = threading.Thread(target=sink, args=([doc(1)],), name="shipper-role")
        call.start()
        call.join(60)
        assert not call.is_alive(), "the request to a black-holed server never timed out"
        assert attempts.count("shipper-role") == 1
        assert counts()["spooled"] == 1
        sink.close(timeout=0.5)
    finally:
        server.close()


def test_spool_bound_counts_drops(tmp_path: Path) -> None:
    """A long outage past spool_max_bytes drops the oldest records, and counts them."""
    sink = ElasticsearchSink(
        ElasticsearchOptions(url="http://127.0.0.1:9"), tmp_path / "spool", 40_000
    )
    sink._client = ScriptedClient([TransportConnectionError("down")] * 10_000)  # type: ignore[assignment]
    sink._down_until = time.monotonic() + 60  # known down: everything goes to the spool
    for b in range(50):
        sink([doc(i, **{"labels.pad": "x" * 200}) for i in range(b * 10, b * 10 + 10)])
    c = counts()
    assert c["spooled"] == 500 and c["dropped"] > 0
    assert sink.spool.size_bytes() <= 40_000
    sink.close(timeout=0.5)


def test_closed_sink_spools_late_batches_for_the_next_run(tmp_path: Path) -> None:
    """After close() a late batch is not sent, nor lost: the next process replays it."""
    client = ScriptedClient()
    sink = sink_with(client, tmp_path)
    sink.close()
    sink([doc(1)])
    sink.spool.close()
    assert client.requests == 0
    assert counts() == {"spooled": 1}
    later = sink_with(client, tmp_path)
    assert later.finish(timeout=5)
    assert list(client.stored) == ["run-1"]


def test_sink_threads_are_named_glmtrace(tmp_path: Path) -> None:
    """The replayer is a glmtrace-* daemon thread, so its own logging is never shipped."""
    sink = sink_with(ScriptedClient([TransportConnectionError("down")] * 100), tmp_path)
    sink.retry_seconds = 0.0
    sink([doc(1)])
    names = [t.name for t in threading.enumerate() if t.name.startswith("glmtrace-es")]
    assert names == ["glmtrace-es-replay"]
    sink.close(timeout=0.5)


def test_create_uses_the_store_folder_for_the_spool(tmp_path: Path) -> None:
    """The spool lives under the store's folder: <store dir>/spool/elasticsearch."""
    options = Options(
        elasticsearch=ElasticsearchOptions(url="http://127.0.0.1:9"),
        store=tmp_path / "x" / "glmtrace.db",
    )
    sink = create(options)
    assert sink.spool.folder == tmp_path / "x" / "spool" / "elasticsearch"
    sink.close(timeout=0.1)


def test_slow_backend_overflows_to_the_spool(tmp_path: Path) -> None:
    """A direct request slower than slow_seconds sends the next batches via the spool."""

    def slow(_id: str, body: Any) -> int:
        time.sleep(0.01)
        return 201

    client = ScriptedClient([slow])  # first request: ~0.1 s for 10 documents
    sink = sink_with(client, tmp_path, slow_seconds=0.05)
    sink([doc(i) for i in range(10)])
    sent = client.requests
    sink([doc(10)])  # not sent on this thread: spooled for the replayer
    assert counts()["spooled"] == 1
    assert client.requests - sent <= 1  # at most the replayer's own request
    wait_for(lambda: counts().get("replayed") == 1)
    assert list(client.stored) == [f"run-{i}" for i in range(11)]


def test_filling_queue_spills_to_the_spool(tmp_path: Path) -> None:
    """When the shipper's queue is over half full, batches spill to disk and still arrive once."""
    client = ScriptedClient()
    sink = sink_with(client, tmp_path)
    fill = [0.9]
    sink.watch_queue(lambda: fill[0])
    sink([doc(0), doc(1)])
    assert counts()["spooled"] == 2
    fill[0] = 0.1
    wait_for(lambda: counts().get("replayed") == 2 and not sink._backlog)
    sink([doc(2)])  # the queue is drained and the spool replayed: direct again
    assert counts()["exported"] == 1
    assert list(client.stored) == ["run-0", "run-1", "run-2"]


def test_spool_line_without_log_id_is_quarantined_not_fatal(tmp_path: Path) -> None:
    """A poisoned spool line (valid JSON, no log.id) is set aside; shipping carries on."""
    first = sink_with(ScriptedClient([TransportConnectionError("down")] * 100), tmp_path)
    first.retry_seconds = 0.0
    first([doc(1), doc(2)])
    first.close(timeout=0.5)
    (segment,) = [p for p in (tmp_path / "spool").iterdir() if ".seg" in p.name]
    with open(segment, "ab") as f:
        f.write(b'{"message": "no id"}\n{"log.id": 5}\n')
    client = ScriptedClient()
    second = sink_with(client, tmp_path)
    second([doc(3)])
    wait_for(lambda: len(client.stored) == 3)
    assert list(client.stored) == ["run-1", "run-2", "run-3"]
    assert counts()["quarantined"] == 2
    assert (tmp_path / "spool" / "quarantine.bad").read_bytes().count(b"\n") == 2


def test_one_unserialisable_value_costs_no_other_record(tmp_path: Path) -> None:
    """A lone surrogate and a 5000-digit integer are repaired, directly and via the spool."""

    def batch(start: int) -> list[dict[str, Any]]:
        docs = [doc(i) for i in range(start, start + 100)]
        docs[3]["message"] = "file \udcff.txt"
        docs[7]["labels.n"] = 10**5000
        return docs

    client = ScriptedClient()
    sink = sink_with(client, tmp_path)
    sink(batch(0))
    assert len(client.stored) == 100
    sink._down_until = time.monotonic() + 60  # known down: this batch goes to the spool
    sink(batch(100))
    assert counts()["spooled"] == 100
    sink._down_until = 0.0
    sink._wake.set()
    wait_for(lambda: len(client.stored) == 200)
    assert client.stored["run-103"]["message"] == "file \ufffd.txt"
    assert client.stored["run-107"]["labels.n"] == "1" + "0" * 5000
    assert "dropped" not in counts()


def black_hole() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server


def test_shutdown_spools_what_a_black_holed_server_holds_up(tmp_path: Path) -> None:
    """ES black-holed at exit: every queued record goes to the spool, none is dropped,
    shutdown says so (False), and the next process ships them."""
    server = black_hole()
    try:
        sink = ElasticsearchSink(
            ElasticsearchOptions(url=f"http://127.0.0.1:{server.getsockname()[1]}"),
            tmp_path / "spool",
            10**8,
            request_timeout=30.0,
        )
        _opened.append(sink)
        shipper = BackgroundShipper(SINK, sink)
        for i in range(3000):
            shipper.submit(doc(i))
        assert not shipper.shutdown(1.0)
        assert counts() == {"spooled": 3000}
    finally:
        server.close()
    client = ScriptedClient()
    assert sink_with(client, tmp_path).finish(10)
    assert sorted(client.stored) == sorted(f"run-{i}" for i in range(3000))


def test_shutdown_replays_while_backing_off(tmp_path: Path) -> None:
    """A sink backing off at exit still replays its spool within the deadline."""
    client = ScriptedClient()
    sink = sink_with(client, tmp_path)
    sink._down_until, sink._backoff = time.monotonic() + 60, 5.0  # down a moment ago
    shipper = BackgroundShipper(SINK, sink)
    for i in range(1200):
        shipper.submit(doc(i))
    assert shipper.shutdown(10)
    assert len(client.stored) == 1200 and sink.spool.is_empty()


def test_shutdown_is_false_while_records_wait_on_disk(tmp_path: Path) -> None:
    """Elasticsearch answering 429 to everything: shutdown keeps the records and says False."""
    client = ScriptedClient([lambda _id, body: 429] * 100_000)
    sink = sink_with(client, tmp_path, retry_seconds=0.1)
    shipper = BackgroundShipper(SINK, sink)
    for i in range(500):
        shipper.submit(doc(i))
    assert not shipper.shutdown(1.0)
    assert not sink.spool.is_empty()
    assert counts() == {"spooled": 500}


BLOCKED = {"type": "cluster_block_exception", "reason": "blocked by: [FORBIDDEN/8/index write]"}


def test_write_block_keeps_records_in_the_spool_until_lifted(tmp_path: Path) -> None:
    """index.blocks.write is the cluster's state, not the documents' fault: retried, not lost."""
    blocked = [True]
    client = ScriptedClient([lambda _id, body: (403, BLOCKED) if blocked[0] else None] * 10_000)
    sink = sink_with(client, tmp_path, retry_seconds=0.2, max_backoff=0.2)
    sink([doc(i) for i in range(500)])
    assert counts() == {"spooled": 500}
    blocked[0] = False
    wait_for(lambda: len(client.stored) == 500)
    assert "dropped" not in counts()


def test_mapping_conflict_on_a_core_field_moves_the_value_to_a_text_label(
    tmp_path: Path,
) -> None:
    """labels.session_id mapped as a long by a user's extra: string ids are kept, as text."""

    def long_only(_id: str, body: dict[str, Any]) -> Any:
        if isinstance(body.get("labels.session_id"), str):
            reason = "failed to parse field [labels.session_id] of type [long] in document"
            return 400, {"type": "mapper_parsing_exception", "reason": reason}
        return None

    client = ScriptedClient([long_only] * 100)
    sink = sink_with(client, tmp_path)
    sink([doc(i, **{"labels.session_id": "abc", "labels.run": "r"}) for i in range(100)])
    assert len(client.stored) == 100 and counts() == {"exported": 100}
    stored = client.stored["run-5"]
    assert json.loads(stored[es_bulk.UNMAPPED]) == {"labels.session_id": "abc"}
    assert stored["labels.run"] == "r" and stored["message"] == "line 5"


def test_document_refused_for_good_is_dropped_with_its_reason(tmp_path: Path) -> None:
    """What no repair gets in is dropped, counted, and counted by Elasticsearch's reason."""
    refusal = {"type": "illegal_argument_exception", "reason": "no"}
    client = ScriptedClient([lambda _id, body: (400, refusal)] * 10)
    sink = sink_with(client, tmp_path)
    sink([doc(1)])
    assert counts() == {"dropped": 1, "rejected:illegal_argument_exception": 1}
