"""The Elasticsearch log sink: ``_bulk`` shipping with retries, a disk spool and replay.

The :class:`~glmtrace._internal.logs.shipper.BackgroundShipper` thread calls the sink with each
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

At shutdown (:meth:`~ElasticsearchSink.spill`, :meth:`~ElasticsearchSink.finish`) what cannot
be sent within the deadline goes to the spool, never away; the next process replays it.
Cluster states (a write block, a closed index, 429, 5xx) keep documents in the spool until
they pass; only a document's own fault loses anything, after repairs (es_bulk.send_repairing).

Counters (``glmtrace.stats()["logs-elasticsearch"]``): exported, spooled, replayed, dropped,
``quarantined`` (spool lines that could not be replayed, kept in ``quarantine.bad``) and
``rejected:<error type>`` (documents Elasticsearch refused for good, also counted dropped).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ElasticsearchOptions, Options, redact_url
from ..errors import MissingDependencyError
from ..guard import report, warn_once
from ..stats import STATS
from . import es_bulk
from .shipper import quiet_thread
from .spool import Spool

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

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
        self.spool = Spool(
            spool_folder,
            spool_max_bytes,
            on_drop=lambda n: STATS.add(SINK, "dropped", n),
            on_bad=lambda n: STATS.add(SINK, "quarantined", n),
            valid=es_bulk.valid,
        )
        self._queue_fill: Callable[[], float] = lambda: 0.0
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._client: Elasticsearch | None = None
        self._replay_client: Elasticsearch | None = None
        self._template_done = False
        self._lock = threading.Lock()  # orders "spooling?" decisions against the replayer
        self._wake = threading.Event()  # set when something was spooled
        self._stop = threading.Event()  # set by close(): cuts retry sleeps short
        self._closed = False
        self._clean = True  # what close() found: nothing left anywhere
        self._closing = False  # set by spill()/close(): no more waiting on the network
        self._inflight: list[dict[str, Any]] | None = None  # the batch being sent directly
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

    @property
    def replay_client(self) -> Elasticsearch:
        if self._replay_client is None:
            self._replay_client = es_bulk.quiet_options(
                self.client, request_timeout=self.replay_timeout
            )
        return self._replay_client

    # ------------------------------------------------------------------ shipper thread

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        """Ship ``batch`` or spool it; never raises for backend trouble."""
        self._check_fork()
        if not batch:
            return
        now = time.monotonic()
        with self._lock:
            behind = self._queue_fill() > SPILL_AT
            waiting = self._backlog or now < self._down_until or now < self._slow_until
            if self._closing or behind or waiting:
                self._to_spool(batch, replay=not self._closed)
                return
            self._inflight = batch
        left: list[dict[str, Any]] = []  # a glmtrace bug raises: the shipper counts the batch
        try:
            left = self._deliver(batch, "exported", now + self.retry_seconds)
        finally:
            with self._lock:
                abandoned = self._inflight is not batch  # spilled by finish() meanwhile
                self._inflight = None
                if left and not abandoned:
                    self._to_spool(left, replay=not self._closed)
        if not left and time.monotonic() - now > self.slow_seconds:
            # Slower than the program logs: overflow to disk for a while (see module doc).
            self._slow_until = time.monotonic() + 10 * self.slow_seconds

    def watch_queue(self, fill: Callable[[], float]) -> None:
        """Give the sink its shipper's queue fill (0..1), to spill to disk before it overflows."""
        self._queue_fill = fill

    def _to_spool(self, docs: list[dict[str, Any]], *, replay: bool = True) -> int:
        """Append to the spool (caller holds ``_lock``) and make sure a replayer runs.

        Returns how many were spooled; the rest are counted dropped (disk full, bound).
        """
        try:
            written = self.spool.append(docs)
        except OSError as exc:
            warn_once(f"spool:{type(exc).__name__}", "glmtrace cannot write its spool: %s", exc)
            STATS.add(SINK, "dropped", len(docs))
            return 0
        STATS.add(SINK, "spooled", written)
        if written:
            self._backlog = True
            if replay:
                self._start_replayer()
                self._wake.set()
        return written

    def spill(self, batch: list[dict[str, Any]]) -> int:
        """At shutdown: spool ``batch`` now, without waiting on the network (thread-safe)."""
        self._check_fork()
        with self._lock:
            self._closing = True
            return self._to_spool(batch, replay=False)

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
            if self._stop.wait(delay):
                return pending  # closing: the spool keeps them for the next run
            delay = min(delay * 2, 1.0)
        self._backoff = 0.0
        return []

    def _client_for(self, event: str) -> Elasticsearch:
        return self.replay_client if event == "replayed" else self.client

    def _send_chunks(self, docs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
        """Send ``docs`` (see :func:`es_bulk.send_repairing`); returns those to retry."""
        outcome = es_bulk.send_repairing(self._client_for(event), self.es.data_stream, docs)
        STATS.add(SINK, event, len(outcome.delivered))
        if outcome.rejected:
            warn_once(
                "es:rejected", "Elasticsearch rejected log documents: %s", outcome.rejected[0][1]
            )
        for _, reason in outcome.rejected:
            STATS.add(SINK, "dropped")
            STATS.add(SINK, f"rejected:{reason.split(':', 1)[0]}")
        return outcome.retry

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
        quiet_thread()
        while not self._closed:
            wait = self._down_until - time.monotonic()
            if wait > 0:
                self._wake.wait(wait)  # backing off: close() cuts the wait short
                self._wake.clear()
                continue
            try:
                more = self._replay_one()
            except Exception as exc:  # a glmtrace bug: say so, back off, keep the spool
                report("replaying the Elasticsearch spool", exc)
                self._mark_down()
                continue
            if not more:
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
        """:meth:`finish` for the runtime, which closes every sink after its shipper."""
        self.finish(timeout)

    def finish(self, timeout: float) -> bool:
        """Spool the batch still being sent, let the replayer empty the spool within
        ``timeout``, then stop it; what is left stays in the spool for the next run.

        True only when nothing is left, in memory or on disk. A second call returns the
        first one's answer (the shipper finishes its sink, then the runtime closes it).
        """
        self._check_fork()
        if self._closed:
            return self._clean
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
            if self._inflight is not None:  # a request hanging on a black-holed server
                self._to_spool(self._inflight, replay=False)
                self._inflight = None
            # The deadline is the only limit now: a backoff must not keep the spool on disk.
            self._down_until = self._backoff = 0.0
            if self._backlog:
                self._start_replayer()
        replayer = self._replayer
        # A little of the deadline is kept for stopping the replayer between requests.
        while self._backlog and replayer is not None and replayer.is_alive():
            if time.monotonic() >= deadline - min(0.1, timeout / 4):
                break
            self._wake.set()
            time.sleep(0.02)
        self._closed = True
        self._stop.set()
        self._wake.set()
        if replayer is not None and replayer is not threading.current_thread():
            replayer.join(max(0.0, deadline - time.monotonic()))
        busy = replayer is not None and replayer.is_alive()
        self.spool.close()
        self._clean = not busy and self.spool.is_empty()
        if not busy:  # else still inside a request: closing its pool would break it
            for client in (self._replay_client, self._client):
                if client is not None:
                    client.close()
            self._client = self._replay_client = None
        return self._clean


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
