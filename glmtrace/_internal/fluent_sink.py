"""The Fluent forward log sink, built on fluent-logger's synchronous ``FluentSender``.

fluent-logger's ``asyncsender`` blocks the caller once its queue is full; here the
:class:`~glmtrace._internal.shipper.BackgroundShipper` thread is the only caller, so the
plain sender never stalls user code. Each batch goes out as one Forward-mode message
(``[tag, [[EventTime, record], ...]]``): one network attempt per batch, so a dead or
black-holed peer costs one short socket timeout per batch, not one per record. On failure the
sender keeps the bytes in its buffer (at most ``bufmax``) and resends them first next time;
past ``bufmax`` the buffer is discarded and its records counted as dropped.

Records are the flat ECS documents (``trace.id``, ``span.id``, ``log.level``,
``service.name``, ``message``): the Collector's fluent_forward receiver turns each key into a
log attribute, and its Elasticsearch exporter in ECS mode writes them as top-level fields.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from .config import FluentOptions, Options
from .errors import MissingDependencyError
from .stats import STATS

SINK = "logs-fluent"
# One Forward message per chunk; far below any receiver's limit, big enough to amortise.
MAX_MESSAGE_BYTES = 1024 * 1024


class FluentSink:
    """``sink(batch)`` sends ECS documents over the Fluent forward protocol; never raises."""

    #: The sink counts exported/dropped itself (runtime: do not wrap).

    def __init__(
        self, fluent: FluentOptions, *, timeout: float = 1.0, bufmax: int = 8 * 1024 * 1024
    ) -> None:
        try:
            from fluent import sender  # noqa: F401 - fail at init(), not in a background thread
        except ImportError:
            raise MissingDependencyError("fluent-logger", "fluent") from None
        self.fluent = fluent
        self.timeout = timeout
        self.bufmax = bufmax
        self._reset()

    def _reset(self) -> None:
        from fluent.sender import FluentSender

        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        self._buffered = 0  # records held in the sender's buffer after a failed send
        self._sending = 0  # records of the send in progress (for the overflow handler)
        self._sender = FluentSender(
            self.fluent.tag,
            host=self.fluent.host,
            port=self.fluent.port,
            bufmax=self.bufmax,
            timeout=self.timeout,
            nanosecond_precision=True,
            buffer_overflow_handler=self._overflow,
        )

    def _overflow(self, pending: bytes) -> None:
        # Called by the sender with everything it buffered plus the failed message.
        STATS.add(SINK, "dropped", self._buffered + self._sending)
        self._buffered = 0
        self._sending = 0

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        """Send ``batch`` (from the shipper thread)."""
        if os.getpid() != self._pid:
            self._reset()  # the parent's socket and buffer are the parent's
        with self._lock:
            if self._closed:
                STATS.add(SINK, "dropped", len(batch))
                return
            for records, packet in _messages(self.fluent.tag, batch):
                self._send(records, packet)

    def _send(self, records: int, packet: bytes) -> None:
        self._sending = records
        # FluentSender's public emit() packs one record per call; a whole batch in one
        # Forward message needs its (stable since 0.9) internal ``_send``.
        ok = self._sender._send(packet)
        if ok:
            STATS.add(SINK, "exported", self._buffered + records)
            self._buffered = 0
        elif self._sending:  # not already counted by _overflow: now buffered
            self._buffered += records
        self._sending = 0

    def watch_queue(self, fill: Callable[[], float]) -> None:
        """Nothing to spill to: a full queue drops (counted), the caller never waits."""

    def close(self, timeout: float = 2.0) -> None:
        """Try once more to send what is buffered, then close the socket."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sending = 0
            buffered = self._buffered
            self._sender.close()  # on failure it calls _overflow, which counts the drop
            if self._buffered == buffered and buffered:
                STATS.add(SINK, "exported", buffered)
            self._buffered = 0

    @property
    def buffered(self) -> int:
        """Records waiting in the sender's buffer for the peer to come back."""
        return self._buffered


def _messages(tag: str, batch: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
    """Forward-mode messages for ``batch``, each at most MAX_MESSAGE_BYTES (or one record)."""
    import msgpack  # type: ignore[import-untyped]  # fluent-logger's dependency, untyped
    from fluent.sender import EventTime

    out: list[tuple[int, bytes]] = []
    entries: list[bytes] = []
    size = 0
    packer = msgpack.Packer()
    for doc in batch:
        record = {k: v for k, v in doc.items() if k != "timestamp_ns"}
        ns = doc.get("timestamp_ns")
        when = EventTime.from_unix_nano(ns) if isinstance(ns, int) else EventTime(0)
        entry = packer.pack([when, record])
        if entries and size + len(entry) > MAX_MESSAGE_BYTES:
            out.append((len(entries), _forward(packer, tag, entries)))
            entries, size = [], 0
        entries.append(entry)
        size += len(entry)
    if entries:
        out.append((len(entries), _forward(packer, tag, entries)))
    return out


def _forward(packer: Any, tag: str, entries: list[bytes]) -> bytes:
    # [tag, [entry, ...]] with the entries already packed: an array header, the tag, an
    # array header, then the entries' bytes verbatim.
    return bytes(
        packer.pack_array_header(2)
        + packer.pack(tag)
        + packer.pack_array_header(len(entries))
        + b"".join(entries)
    )


def create(options: Options) -> FluentSink:
    """The Fluent sink for ``options``."""
    return FluentSink(options.fluent or FluentOptions())
