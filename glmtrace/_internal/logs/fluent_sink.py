"""The Fluent forward log sink: msgpack Forward-mode messages over a plain TCP socket.

Each batch goes out as Forward-mode messages (``[tag, [[EventTime, record], ...], {"chunk":
id}]``, the protocol's v1 spec) on the shipper's background thread, so a peer that is down,
slow or resetting never reaches user code. The ``chunk`` option asks the peer for an ack
(Fluentd, Fluent Bit and the Collector's fluent_forward receiver give one): a record counts
as exported only once acknowledged, and a message that was not is sent again whole on a new
connection.

Every batch gets one bounded attempt (``timeout`` in total, not per message); after a
failure the sink waits (exponential backoff) before it touches the network again, keeping
what it could not send in a buffer of at most ``bufmax`` bytes whose oldest messages are
dropped, and counted, when it is full. At shutdown the shipper hands over what it still
holds (:meth:`FluentSink.spill`) and :meth:`FluentSink.finish` makes one last attempt
within the deadline; what is left is counted as dropped.

Records are the flat ECS documents (``trace.id``, ``span.id``, ``log.level``,
``service.name``, ``message``; the id as ``event.id``, see :func:`.ecs.wire`): the Collector's
fluent_forward receiver turns each key into a log attribute, and its Elasticsearch exporter in
ECS mode writes them as top-level fields.
"""

from __future__ import annotations

import base64
import collections
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from ..config import FluentOptions, Options
from ..errors import MissingDependencyError
from ..guard import warn_once
from ..repair import json_ready
from ..stats import STATS
from . import ecs

SINK = "logs-fluent"
# One Forward message per chunk; far below any receiver's limit, big enough to amortise.
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_BACKOFF = 5.0


class FluentSink:
    """``sink(batch)`` sends ECS documents over the Fluent forward protocol; never raises."""

    def __init__(
        self, fluent: FluentOptions, *, timeout: float = 5.0, bufmax: int = 8 * 1024 * 1024
    ) -> None:
        # ``timeout`` bounds one attempt (connect, send, ack); the Collector acks a chunk only
        # once its pipeline took it, which can take longer than a send.
        try:
            import msgpack  # noqa: F401 - fail at init(), not in a background thread
        except ImportError:
            raise MissingDependencyError("msgpack", "fluent") from None
        self.fluent = fluent
        self.timeout = timeout
        self.bufmax = bufmax
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._abandoned = False  # finish() counted what a send in progress held
        self._spilled: list[dict[str, Any]] = []  # spilled while a send held the lock
        self._clean = True  # what finish() found: nothing left behind
        self._sock: socket.socket | None = None
        # Messages not acknowledged yet: (records, packet, chunk id), oldest first.
        self._pending: collections.deque[tuple[int, bytes, str]] = collections.deque()
        self._pending_bytes = 0
        self._retry_at = 0.0
        self._backoff = 0.0

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            # The parent's socket and buffer are the parent's; the child starts afresh.
            self._reset()

    # ------------------------------------------------------------------ shipper thread

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        """Send ``batch`` (from the shipper thread): one bounded attempt."""
        self._check_fork()
        with self._lock:
            if self._closed:
                STATS.add(SINK, "dropped", len(batch))
                return
            self._buffer(batch)
            if time.monotonic() >= self._retry_at:
                self._drain(time.monotonic() + self.timeout)
            if self._closed:  # finish() gave up waiting for this send: count what is left
                if not self._abandoned:
                    STATS.add(SINK, "dropped", self.buffered)
                self._pending.clear()
                self._pending_bytes = 0

    def spill(self, batch: list[dict[str, Any]]) -> int:
        """At shutdown: take what the shipper still holds, for :meth:`finish` to send."""
        self._check_fork()
        if not self._lock.acquire(blocking=False):
            # A send is in progress and may outlast the deadline: finish() takes these over,
            # or counts them, under its own deadline.
            self._spilled.extend(batch)
            return len(batch)
        try:
            if self._closed:
                STATS.add(SINK, "dropped", len(batch))
                return 0
            return self._buffer(batch)
        finally:
            self._lock.release()

    def watch_queue(self, fill: Callable[[], float]) -> None:
        """Nothing to spill to early: a full queue drops (counted), the caller never waits."""

    def _buffer(self, batch: list[dict[str, Any]]) -> int:
        """Pack ``batch`` behind what is pending; the oldest go past ``bufmax``. Returns how
        many of ``batch`` are kept."""
        for records, packet in _messages(self.fluent.tag, batch):
            chunk = base64.b64encode(secrets.token_bytes(16)).decode()
            packet = _with_chunk(packet, chunk)
            self._pending.append((records, packet, chunk))
            self._pending_bytes += len(packet)
        kept = len(batch)
        while self._pending_bytes > self.bufmax and len(self._pending) > 1:
            records, packet, _ = self._pending.popleft()
            self._pending_bytes -= len(packet)
            STATS.add(SINK, "dropped", records)
            kept -= records
        return max(0, kept)

    def _drain(self, deadline: float) -> bool:
        """Send pending messages until ``deadline``; False (and back off) on a failure."""
        import msgpack

        while self._pending:
            records, packet, chunk = self._pending[0]
            try:
                sock = self._connect(deadline)
                sock.settimeout(_left(deadline))
                sock.sendall(packet)
                self._await_ack(sock, chunk, deadline, msgpack.Unpacker(raw=False))
            except (OSError, ValueError) as exc:  # refused, reset, timed out, garbled
                self._disconnect()
                self._backoff = min(MAX_BACKOFF, max(0.2, self._backoff * 2))
                self._retry_at = time.monotonic() + self._backoff
                warn_once(
                    "fluent:send",
                    "glmtrace cannot send logs to Fluent at %s:%s (%s); buffering them",
                    self.fluent.host,
                    self.fluent.port,
                    exc,
                )
                return False
            self._pending.popleft()
            self._pending_bytes -= len(packet)
            if not self._abandoned:  # else finish() counted it dropped already
                STATS.add(SINK, "exported", records)
        self._backoff = 0.0
        return True

    def _connect(self, deadline: float) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(
                (self.fluent.host, self.fluent.port), timeout=_left(deadline)
            )
        return self._sock

    def _await_ack(self, sock: socket.socket, chunk: str, deadline: float, unpacker: Any) -> None:
        while True:
            sock.settimeout(_left(deadline))
            data = sock.recv(4096)
            if not data:
                raise ConnectionResetError("the peer closed the connection before its ack")
            unpacker.feed(data)
            for answer in unpacker:
                if isinstance(answer, dict) and answer.get("ack") == chunk:
                    return

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 2.0) -> None:
        """:meth:`finish` for the runtime, which closes every sink after its shipper."""
        self.finish(timeout)

    def finish(self, timeout: float) -> bool:
        """One last attempt to send what is buffered within ``timeout``; the rest is counted
        as dropped. True when nothing was left behind; a second call repeats the answer."""
        self._check_fork()
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=max(0.0, timeout)):
            # The shipper thread is inside a send that may outlast the process: count what it
            # holds now (list() copies the deque atomically), so an exit right after
            # shutdown() leaves nothing uncounted; that send, when it ends, counts nothing.
            self._abandoned = True
            self._closed = True
            held = sum(records for records, _, _ in list(self._pending))
            STATS.add(SINK, "dropped", held + len(self._spilled))
            self._spilled = []
            return False
        try:
            if self._closed:
                return self._clean
            self._closed = True
            if self._spilled:
                self._buffer(self._spilled)
                self._spilled = []
            if self._pending:
                self._drain(deadline)
            lost = sum(records for records, _, _ in self._pending)
            STATS.add(SINK, "dropped", lost)
            self._pending.clear()
            self._pending_bytes = 0
            self._disconnect()
            self._clean = not lost
            return self._clean
        finally:
            self._lock.release()

    @property
    def buffered(self) -> int:
        """Records waiting in the buffer for the peer to come back."""
        return sum(records for records, _, _ in self._pending)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("out of time for this attempt")
    return left


def _messages(tag: str, batch: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """Forward-mode messages ``[tag, entries]`` for ``batch``, each at most MAX_MESSAGE_BYTES
    (or one record); a value msgpack cannot carry is repaired, never fatal to the batch."""
    import msgpack

    out: list[tuple[int, bytes]] = []
    entries: list[bytes] = []
    size = 0
    packer = msgpack.Packer()
    for doc in batch:
        record = ecs.wire(doc)
        ns = doc.get(ecs.TIMESTAMP_NS)
        when = _event_time(ns if isinstance(ns, int) else 0)
        try:
            entry = packer.pack([when, record])
        except (ValueError, TypeError, OverflowError):  # a lone surrogate, a huge int
            packer.reset()
            entry = packer.pack([when, json_ready(record)])
        if entries and size + len(entry) > MAX_MESSAGE_BYTES:
            out.append((len(entries), _forward(packer, tag, entries)))
            entries, size = [], 0
        entries.append(entry)
        size += len(entry)
    if entries:
        out.append((len(entries), _forward(packer, tag, entries)))
    return out


def _event_time(ns: int) -> Any:
    """The protocol's EventTime: msgpack extension 0, seconds and nanoseconds (big-endian)."""
    import msgpack

    seconds, nanos = divmod(max(0, ns), 10**9)
    return msgpack.ExtType(0, struct.pack(">II", seconds & 0xFFFFFFFF, nanos))


def _forward(packer: Any, tag: str, entries: list[bytes]) -> bytes:
    # [tag, [entry, ...]] with the entries already packed: an array header, the tag, an
    # array header, then the entries' bytes verbatim. The option map is added per send.
    return bytes(
        packer.pack_array_header(2)
        + packer.pack(tag)
        + packer.pack_array_header(len(entries))
        + b"".join(entries)
    )


def _with_chunk(message: bytes, chunk: str) -> bytes:
    """``message`` ([tag, entries]) as [tag, entries, {"chunk": chunk}]: asks for an ack."""
    import msgpack

    assert message[0] == 0x92  # fixarray of 2, as _forward writes it
    return b"\x93" + message[1:] + bytes(msgpack.packb({"chunk": chunk}))


def create(options: Options) -> FluentSink:
    """The Fluent sink for ``options``."""
    return FluentSink(options.fluent or FluentOptions())
