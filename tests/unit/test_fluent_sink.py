"""The Fluent sink's own logic: Forward-mode packing, EventTime, acks, a bounded buffer,
counted drops, and peers that refuse, stall or reset the connection.

The peer here is a local socket that decodes msgpack and acks as Fluentd does; that the real
Collector accepts these messages is checked in tests/integration/test_logs_fluent.py.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from glmtrace._internal.config import FluentOptions, Options
from glmtrace._internal.errors import MissingDependencyError
from glmtrace._internal.logs.fluent_sink import SINK, FluentSink, _messages
from glmtrace._internal.logs.shipper import BackgroundShipper
from glmtrace._internal.logs.sinks import create_log_sink
from glmtrace._internal.stats import STATS


def doc(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "timestamp_ns": 1_767_225_600_123_456_789 + i,
        "log.id": f"id-{i}",
        "message": f"line {i}",
        "trace.id": "ab" * 16,
        "log.level": "INFO",
        **extra,
    }


@pytest.fixture(autouse=True)
def fresh_stats() -> Iterator[None]:
    STATS.reset()
    yield
    STATS.reset()


def counts() -> dict[str, int]:
    return STATS.snapshot().get(SINK, {})


class Receiver:
    """A local forward-protocol reader: collects (tag, seconds, nanos, record) tuples, acks
    each message that asks for it; ``reset_after`` messages it resets the connection."""

    def __init__(self, server: socket.socket | None = None, reset_after: int | None = None) -> None:
        # ``server``: a socket bound already (a port the sink was refused on, kept meanwhile).
        if server is None:
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
        self.server = server
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.reset_after = reset_after
        self.messages = 0
        self.events: list[tuple[str, int, int, dict[str, Any]]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        with conn:
            while data := conn.recv(65536):
                unpacker.feed(data)
                for tag, entries, *option in unpacker:
                    if self.reset_after is not None and self.messages >= self.reset_after:
                        # RST mid-stream: this message is lost, its sender must resend it.
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        self.reset_after = None
                        return
                    self.messages += 1
                    for when, record in entries:
                        seconds, nanos = struct.unpack(">II", when.data)
                        self.events.append((tag, seconds, nanos, record))
                    if option and "chunk" in option[0]:
                        conn.sendall(msgpack.packb({"ack": option[0]["chunk"]}))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without msgpack, init() gets MissingDependencyError naming glmtrace[fluent]."""
    monkeypatch.setitem(sys.modules, "msgpack", None)
    with pytest.raises(MissingDependencyError, match=r"glmtrace\[fluent\]"):
        create_log_sink("fluent", Options(fluent=FluentOptions()))


def test_batch_is_one_forward_message_with_event_time(receiver: Receiver) -> None:
    """Records arrive tagged, with nanosecond EventTime, the ECS keys and the id as event.id."""
    sink = FluentSink(FluentOptions(port=receiver.port, tag="glmtrace"))
    sink([doc(0), doc(1)])
    wait_for(lambda: len(receiver.events) == 2)
    tag, seconds, nanos, record = receiver.events[1]
    assert tag == "glmtrace"
    assert seconds * 10**9 + nanos == 1_767_225_600_123_456_790
    assert record == {
        "event.id": "id-1",
        "message": "line 1",
        "trace.id": "ab" * 16,
        "log.level": "INFO",
    }
    assert counts() == {"exported": 2}
    sink.close()


def test_large_batches_split_into_bounded_messages() -> None:
    """No Forward message exceeds the size bound unless it holds a single record."""
    batch = [doc(i, **{"labels.pad": "x" * 50_000}) for i in range(60)]
    messages = _messages("t", batch)
    assert len(messages) > 1
    assert sum(n for n, _ in messages) == 60
    assert all(len(m) <= 1024 * 1024 + 60_000 for _, m in messages)


def test_peer_down_buffers_then_delivers_when_back() -> None:
    """A refused connection keeps the batch buffered; it goes out first when the peer returns."""
    held = socket.socket()  # bound, not listening: refuses, and the port stays ours
    held.bind(("127.0.0.1", 0))
    sink = FluentSink(FluentOptions(port=held.getsockname()[1]), timeout=0.5)
    sink([doc(0), doc(1)])
    assert sink.buffered == 2 and counts() == {}
    receiver = Receiver(held)  # the peer comes back on the same port
    try:
        sink._retry_at = 0.0  # the backoff is over
        sink([doc(2)])
        wait_for(lambda: len(receiver.events) == 3)
        assert [r["event.id"] for *_, r in receiver.events] == ["id-0", "id-1", "id-2"]
        assert counts() == {"exported": 3} and sink.buffered == 0
    finally:
        sink.close()
        receiver.close()


def test_buffer_is_bounded_and_overflow_is_counted(refused_port: int) -> None:
    """With the peer down the buffer never passes bufmax (plus one message); drops counted."""
    sink = FluentSink(FluentOptions(port=refused_port), timeout=0.2, bufmax=20_000)
    for b in range(40):
        sink([doc(i, **{"labels.pad": "x" * 100}) for i in range(b * 10, b * 10 + 10)])
        assert sink._pending_bytes <= 20_000 + 3_000
    c = counts()
    assert c["dropped"] > 0
    assert c["dropped"] + sink.buffered == 400
    assert not sink.finish(0.5)
    assert counts()["dropped"] == 400  # the last attempt could not deliver the rest either


def test_black_holed_peer_costs_one_attempt_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that accepts and never reads: a batch of ~10 messages gets one attempt, bounded
    by the sink's timeout, not one per message; what it could not send stays accounted for."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    connects: list[float] = []  # the timeout each connection attempt was given
    real_connect = socket.create_connection

    def counting_connect(address: Any, timeout: float, *args: Any) -> socket.socket:
        connects.append(timeout)
        return real_connect(address, timeout, *args)

    monkeypatch.setattr(socket, "create_connection", counting_connect)
    try:
        sink = FluentSink(FluentOptions(port=server.getsockname()[1]), timeout=0.3)
        big = [doc(i, **{"labels.pad": "x" * 50_000}) for i in range(200)]  # ~10 messages
        sink(big)
        assert len(connects) == 1 and connects[0] <= 0.3  # one attempt, within the bound
        assert counts().get("exported", 0) == 0  # nothing was acked
        assert counts().get("dropped", 0) + sink.buffered == 200  # and nothing vanished
        sink.close()
    finally:
        server.close()


def test_closed_sink_counts_late_batches_as_dropped() -> None:
    """A batch after close() is dropped and counted, never raised."""
    sink = FluentSink(FluentOptions(port=9))
    sink.close()
    sink([doc(0)])
    assert counts() == {"dropped": 1}


def test_reset_mid_stream_loses_nothing(receiver: Receiver) -> None:
    """A peer that resets the connection before acking: the message is sent again, whole,
    on a new connection; nothing is counted exported that the peer did not take."""
    receiver.reset_after = 1
    sink = FluentSink(FluentOptions(port=receiver.port), timeout=2.0)
    sink([doc(0)])
    sink([doc(1)])  # read, then the connection is reset: no ack
    assert counts() == {"exported": 1} and sink.buffered == 1
    sink._retry_at = 0.0  # the backoff is over
    sink([doc(2)])
    wait_for(lambda: len(receiver.events) == 3)
    assert [r["event.id"] for *_, r in receiver.events] == ["id-0", "id-1", "id-2"]
    assert counts() == {"exported": 3}
    assert sink.finish(1.0)


def test_unpackable_values_are_repaired_not_fatal(receiver: Receiver) -> None:
    """A lone surrogate or a 5000-digit integer costs neither the batch nor the shipper."""
    sink = FluentSink(FluentOptions(port=receiver.port))
    sink([doc(0), doc(1, message="file \udcff.txt"), doc(2, **{"labels.n": 10**5000})])
    wait_for(lambda: len(receiver.events) == 3)
    records = [r for *_, r in receiver.events]
    assert records[1]["message"] == "file \ufffd.txt"
    assert records[2]["labels.n"] == "1" + "0" * 5000
    assert counts() == {"exported": 3}
    sink.close()


def test_stalled_peer_at_shutdown_every_record_is_accounted_for() -> None:
    """A peer that accepts and never reads: shutdown says False and every record is either
    exported (acked) or counted dropped; none is silently left in a buffer."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        sink = FluentSink(FluentOptions(port=server.getsockname()[1]), timeout=0.3)
        shipper = BackgroundShipper(SINK, sink, max_batch=100)
        for i in range(2000):
            shipper.submit(doc(i, **{"labels.pad": "x" * 500}))
        assert not shipper.shutdown(2.0)
        c = counts()
        assert c.get("exported", 0) + c.get("dropped", 0) == 2000
    finally:
        server.close()
