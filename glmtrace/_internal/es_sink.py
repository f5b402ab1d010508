"""The Elasticsearch log sink: ``_bulk`` shipping with retries, a disk spool and replay.

The :class:`~glmtrace._internal.shipper.BackgroundShipper` thread calls the sink with each
batch; the user's threads never reach this module. While Elasticsearch answers, batches go
straight to the data stream. When it does not (after retries bounded in time) the batch goes
to the disk spool, the sink is marked *down*, and later batches go to the spool at disk speed
without waiting on the network, so the in-memory queue keeps draining during an outage. A
replayer thread probes with exponential backoff, replays the spool oldest first once
Elasticsearch is back, and then hands shipping back to the direct path.

The same overflow protects against an Elasticsearch that answers, but slower than the program
logs (a cold node, a busy cluster, a burst): when one direct request takes longer than
``slow_seconds``, or the shipper's in-memory queue is half full, batches go to the spool
(a fraction of a bulk request's cost) and the replayer ships them, so the bounded queue drains
instead of dropping; only the disk bound (``spool_max_bytes``) can cause drops.

Counters (``glmtrace.stats()["logs-elasticsearch"]``): exported, spooled, replayed, dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import es_bulk
from .config import ElasticsearchOptions, Options, redact_url
from .errors import MissingDependencyError
from .guard import warn_once
from .spool import Spool
from .stats import STATS

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger("glmtrace")

SINK = "logs-elasticsearch"
# Past this fill of the in-memory queue the program logs faster than Elasticsearch takes in;
# appending to the spool costs a fraction of a bulk request, so the queue drains instead of
# overflowing, and the replayer catches up after the burst.
SPILL_AT = 0.5


class ElasticsearchSink:
    """``sink(batch)`` ships ECS documents; see the module docstring for the outage path."""

    def __init__(
        self,
        es: ElasticsearchOptions,
        spool_folder: Path,
        spool_max_bytes: int,
        *,
        request_timeout: float = 10.0,
        retry_seconds: float = 1.0,
        max_backoff: float = 5.0,
        slow_seconds: float = 0.5,
        replay_timeout: float = 30.0,
    ) -> None:
        try:
            import elasticsearch  # noqa: F401 - fail at init(), not in a background thread
        except ImportError:
            raise MissingDependencyError("elasticsearch", "elasticsearch") from None
        self.es = es
        self.request_timeout = request_timeout
        self.retry_seconds = retry_seconds
        self.slow_seconds = slow_seconds
        # The replayer is on nobody's deadline: a slow cluster gets time to answer, rather than
        # a timeout and a resend of the same documents.
        self.replay_timeout = replay_timeout
        self.max_backoff = max_backoff
        self.spool = Spool(spool_folder, spool_max_bytes, on_drop=self._spool_dropped)
        self._queue_fill: Callable[[], float] = lambda: 0.0
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._client: Elasticsearch | None = None
        self._template_done = False
        self._lock = threading.Lock()  # orders "spooling?" decisions against the replayer
        self._wake = threading.Event()  # set when something was spooled
        self._stop = threading.Event()  # set by close()
        self._closed = False
        self._down_until = 0.0
        self._slow_until = 0.0
        self._backoff = 0.0
        self._replayer: threading.Thread | None = None
        self._progress: dict[Path, int] = {}
        # Spool left by an earlier run (or a process that died): replay it first.
        self._backlog = not self.spool.is_empty()
        if self._backlog:
            self._start_replayer()

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            # Never share the parent's connection pool or its replayer thread.
            self._reset()

    @property
    def client(self) -> Elasticsearch:
        if self._client is None:
            self._client = es_bulk.make_client(self.es, self.request_timeout)
        return self._client

    # ------------------------------------------------------------------ shipper thread

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        """Ship ``batch`` or spool it; never raises for backend trouble."""
        self._check_fork()
        if self._closed:
            STATS.add(SINK, "dropped", len(batch))
            return
        if not batch:
            return
        now = time.monotonic()
        with self._lock:
            behind = self._queue_fill() > SPILL_AT
            if self._backlog or behind or now < self._down_until or now < self._slow_until:
                self._to_spool(batch)
                return
        left = self._deliver(batch, "exported", now + self.retry_seconds)
        if left:
            with self._lock:
                self._to_spool(left)
        elif time.monotonic() - now > self.slow_seconds:
            # Slower than the program logs: overflow to disk for a while (see module doc).
            self._slow_until = time.monotonic() + 10 * self.slow_seconds

    def watch_queue(self, fill: Callable[[], float]) -> None:
        """Give the sink its shipper's queue fill (0..1), to spill to disk before it overflows."""
        self._queue_fill = fill

    def _to_spool(self, docs: list[dict[str, Any]]) -> None:
        """Append to the spool (caller holds ``_lock``) and make sure a replayer runs."""
        try:
            self.spool.append(docs)
        except OSError as exc:
            warn_once(f"spool:{type(exc).__name__}", "glmtrace cannot write its spool: %s", exc)
            STATS.add(SINK, "dropped", len(docs))
            return
        STATS.add(SINK, "spooled", len(docs))
        self._backlog = True
        self._start_replayer()
        self._wake.set()

    def _spool_dropped(self, n: int) -> None:
        STATS.add(SINK, "dropped", n)

    # ------------------------------------------------------------------ delivery

    def _deliver(
        self, docs: list[dict[str, Any]], event: str, deadline: float
    ) -> list[dict[str, Any]]:
        """Send ``docs``, retrying transient failures until ``deadline``.

        Delivered documents are counted as ``event``; rejected ones as dropped. Returns the
        documents still undelivered (the sink is then marked down).
        """
        pending = docs
        delay = 0.1
        while pending:
            try:
                self._ensure_template()
                pending = self._send_chunks(pending, event)
            except Exception as exc:
                kind = es_bulk.classify(exc)
                if kind == "permanent":
                    if not _is_api_error(exc):
                        raise  # a glmtrace bug: the shipper's guard reports it
                    # The request as a whole is refused (a closed index, a bad setting):
                    # retrying cannot help, and spooling would only fill the disk.
                    warn_once("es:refused", "Elasticsearch refused log records: %s", exc)
                    STATS.add(SINK, "dropped", len(pending))
                    return []
                if kind == "auth":
                    warn_once(
                        "es:auth",
                        "Elasticsearch at %s refused glmtrace's credentials (HTTP %s); "
                        "log records are spooled",
                        redact_url(self.es.url),
                        getattr(getattr(exc, "meta", None), "status", "?"),
                    )
                if kind != "transient" or time.monotonic() + delay > deadline:
                    self._mark_down()
                    return pending
            else:
                if not pending:
                    break
                if time.monotonic() + delay > deadline:
                    self._mark_down()
                    return pending
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._backoff = 0.0
        return []

    def _client_for(self, event: str) -> Elasticsearch:
        if event == "replayed":
            return self.client.options(request_timeout=self.replay_timeout)
        return self.client

    def _send_chunks(self, docs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
        retry: list[dict[str, Any]] = []
        for part, body in es_bulk.chunks(self.es.data_stream, docs):
            outcome = es_bulk.send(self._client_for(event), part, body)
            STATS.add(SINK, event, len(outcome.delivered))
            retry.extend(outcome.retry)
            if outcome.rejected:
                self._rejected(outcome.rejected, event)
        return retry

    def _rejected(self, rejected: list[tuple[dict[str, Any], str]], event: str) -> None:
        reduced = [es_bulk.core(doc) for doc, _ in rejected]
        warn_once("es:rejected", "Elasticsearch rejected log documents: %s", rejected[0][1])
        lost = 0
        for part, body in es_bulk.chunks(self.es.data_stream, reduced):
            outcome = es_bulk.send(self._client_for(event), part, body)
            STATS.add(SINK, event, len(outcome.delivered))
            lost += len(outcome.retry) + len(outcome.rejected)
        STATS.add(SINK, "dropped", lost)

    def _ensure_template(self) -> None:
        if self._template_done:
            return
        try:
            template = es_bulk.load_template()
        except (OSError, ValueError) as exc:
            warn_once("es:template-file", "glmtrace's index template is unreadable: %s", exc)
            self._template_done = True
            return
        from elasticsearch import ApiError

        try:
            self.client.indices.put_index_template(name=es_bulk.TEMPLATE_NAME, body=template)
        except ApiError as exc:
            if es_bulk.classify(exc) != "permanent":
                raise
            # An old or locked-down cluster: ship anyway, into whatever the cluster makes.
            warn_once("es:template", "Elasticsearch refused glmtrace's index template: %s", exc)
        self._template_done = True

    def _mark_down(self) -> None:
        self._backoff = min(self.max_backoff, max(0.5, self._backoff * 2))
        self._down_until = time.monotonic() + self._backoff

    # ------------------------------------------------------------------ replayer thread

    def _start_replayer(self) -> None:
        if self._replayer is not None and self._replayer.is_alive():
            return
        self._replayer = threading.Thread(
            target=self._replay_loop, name="glmtrace-es-replay", daemon=True
        )
        self._replayer.start()

    def _replay_loop(self) -> None:
        while not self._closed:
            wait = self._down_until - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)  # backing off: only close() cuts the wait short
                continue
            if not self._replay_one():
                self._wake.wait()
                self._wake.clear()

    def _replay_one(self) -> bool:
        """Replay the oldest segment; False when there was nothing to replay."""
        try:
            segment = self.spool.claim_oldest()
        except OSError as exc:
            warn_once("spool:claim", "glmtrace cannot read its spool: %s", exc)
            segment = None
        if segment is None:
            with self._lock:
                # Re-check under the lock: the shipper may have spooled a batch meanwhile.
                self._backlog = not self.spool.is_empty()
                return self._backlog
        docs = self.spool.read(segment)
        start = self._progress.get(segment, 0)
        step = es_bulk.MAX_BULK_DOCS
        for offset in range(start, len(docs), step):
            part = docs[offset : offset + step]
            left = self._deliver(part, "replayed", time.monotonic() + self.retry_seconds)
            if left:
                # Resume from this part next time: the parts before are in Elasticsearch, and
                # anything of this one that got in answers 409 (same _id) when resent.
                self._progress[segment] = offset
                return True
        self._progress.pop(segment, None)
        self.spool.done(segment)
        return True

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout: float = 2.0) -> None:
        """Let the replayer empty the spool within ``timeout`` if Elasticsearch answers, then
        stop it; what is left stays in the spool for the next run to replay."""
        deadline = time.monotonic() + timeout
        replayer = self._replayer
        while (
            self._backlog
            and replayer is not None
            and replayer.is_alive()
            and self._down_until <= time.monotonic() < deadline
        ):
            self._wake.set()
            time.sleep(0.05)
        self._closed = True
        self._stop.set()
        self._wake.set()
        if replayer is not None and replayer is not threading.current_thread():
            replayer.join(max(0.0, deadline - time.monotonic()))
        self.spool.close()
        if replayer is not None and replayer.is_alive():
            return  # still inside a request: closing its connection pool would break it
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _is_api_error(exc: BaseException) -> bool:
    from elasticsearch import ApiError

    return isinstance(exc, ApiError)


def create(options: Options) -> ElasticsearchSink:
    """The Elasticsearch sink for ``options`` (whose ``elasticsearch`` must be set)."""
    assert options.elasticsearch is not None
    return ElasticsearchSink(
        options.elasticsearch,
        options.store.parent / "spool" / "elasticsearch",
        options.spool_max_bytes,
        request_timeout=max(1.0, min(10.0, options.shutdown_timeout * 2)),
    )
