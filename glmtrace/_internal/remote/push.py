"""Upload a local store: spans over OTLP, logs to Elasticsearch; nothing is sent twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import ElasticsearchOptions, otlp_protocol, redact_url, resolve
from ..export.exporters import otlp_exporter
from ..export.rows import SpanRow
from ..logs import ecs
from ..store.database import Store
from .es_query import es_client, es_options
from .http import TIMEOUT, RemoteError


@dataclass
class PushResult:
    """What :func:`push` sent, and what an earlier push had sent already."""

    spans: int = 0
    logs: int = 0
    skipped_spans: int = 0
    skipped_logs: int = 0
    rejected_logs: int = 0

    def __str__(self) -> str:
        text = f"{self.spans} spans, {self.logs} log records"
        if self.skipped_spans or self.skipped_logs:
            text += f" ({self.skipped_spans} spans, {self.skipped_logs} logs pushed before)"
        if self.rejected_logs:
            text += f"; {self.rejected_logs} log records rejected by Elasticsearch"
        return text


Progress = Callable[[int, int], None]


def push(
    store: Store,
    otlp_url: str | None,
    es: str | ElasticsearchOptions | None = None,
    progress: Progress | None = None,
    *,
    protocol: str | None = None,
    batch: int = 512,
) -> PushResult:
    """Upload the spans of ``store`` over OTLP and its logs to Elasticsearch.

    ``protocol`` is ``grpc`` or ``http/protobuf``; by default HTTP for port 4318 or a
    ``/v1/traces`` URL, else gRPC. Each span and log record pushed is remembered in the
    store's ``pushed`` table per destination, so a second run sends only what is new (and
    log records are ``create``d with ``_id = log.id``, so even a lost table duplicates
    nothing in Elasticsearch). ``progress(done, total)`` is called after each batch.
    """
    result = PushResult()
    spans: list[SpanRow] = []
    logs: list[dict[str, Any]] = []
    span_dest = otlp_url.rstrip("/") if otlp_url else None
    target = es_options(es) if es is not None else None
    if span_dest:
        done_ids = store.pushed(span_dest, "span")
        all_spans = store.all_spans()
        spans = [s for s in all_spans if _span_key(s) not in done_ids]
        result.skipped_spans = len(all_spans) - len(spans)
    if target is not None:
        done_ids = store.pushed(target.url, "log")
        all_logs = store.all_logs()
        logs = [d for d in all_logs if d[ecs.LOG_ID] not in done_ids]
        result.skipped_logs = len(all_logs) - len(logs)
    total, done = len(spans) + len(logs), 0
    if progress:
        progress(0, total)
    if spans and span_dest:
        exporter = _span_exporter(span_dest, protocol)
        try:
            for i in range(0, len(spans), batch):
                part = spans[i : i + batch]
                _export_spans(exporter, part, span_dest)
                store.mark_pushed(span_dest, "span", [_span_key(s) for s in part])
                result.spans += len(part)
                done += len(part)
                if progress:
                    progress(done, total)
        finally:
            exporter.shutdown()
    if logs and target is not None:

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        _push_logs(store, target, logs, result, advance)
    return result


def _span_key(row: SpanRow) -> str:
    return f"{row['trace_id']}{row['span_id']}"


def _span_exporter(url: str, protocol: str | None) -> Any:
    options, _ = resolve({"endpoint": url, "protocol": protocol or otlp_protocol(url)})
    return otlp_exporter(options, timeout=TIMEOUT)


def _export_spans(exporter: Any, rows: list[SpanRow], url: str) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from ..export.convert import readable_span

    if exporter.export([readable_span(r) for r in rows]) is not SpanExportResult.SUCCESS:
        raise RemoteError(
            f"the OTLP endpoint {redact_url(url)} did not accept the spans (see the log above)"
        )


PUSH_RETRIES = 5  # per chunk, backing off 0.5 s, 1 s, 2 s, 4 s, 8 s


def _push_logs(
    store: Store,
    es: ElasticsearchOptions,
    logs: list[dict[str, Any]],
    result: PushResult,
    advance: Callable[[int], None],
) -> None:
    """``create`` each document with ``_id = log.id`` through ``streaming_bulk``.

    The helper retries a chunk's 408/429/5xx answers, whole-request or per document. What
    is delivered (or was already there: 409) is marked pushed as it goes; what is not is
    counted as rejected and goes again on the next push.
    """
    client = es_client(es)
    from elastic_transport import TransportError
    from elasticsearch import ApiError
    from elasticsearch.helpers import streaming_bulk

    from ..logs import es_bulk

    actions = (
        {
            "_op_type": "create",
            "_index": es.data_stream,
            "_id": d[ecs.LOG_ID],
            "_source": ecs.wire(d),
        }
        for d in logs
    )
    delivered: list[str] = []

    def mark() -> None:
        store.mark_pushed(es.url, "log", delivered)
        result.logs += len(delivered)
        advance(len(delivered))
        delivered.clear()

    try:
        client.indices.put_index_template(name=es_bulk.TEMPLATE_NAME, body=es_bulk.load_template())
        for ok, item in streaming_bulk(
            client,
            actions,
            chunk_size=es_bulk.MAX_BULK_DOCS,
            max_chunk_bytes=es_bulk.MAX_BULK_BYTES,
            raise_on_error=False,
            max_retries=PUSH_RETRIES,
            initial_backoff=0.5,
            max_backoff=8,
            retry_on_status=tuple(es_bulk.TRANSIENT_STATUS),
        ):
            answer = next(iter(item.values()))
            if ok or answer.get("status") == 409:  # 409: this log.id is stored already
                delivered.append(answer["_id"])
            else:
                result.rejected_logs += 1
                advance(1)
            if len(delivered) >= es_bulk.MAX_BULK_DOCS:
                mark()
        mark()
    except ApiError as exc:
        raise RemoteError(f"Elasticsearch refused the upload: HTTP {exc.meta.status}") from None
    except TransportError as exc:
        raise RemoteError(f"Elasticsearch did not answer: {type(exc).__name__}") from None
    finally:
        store.mark_pushed(es.url, "log", delivered)  # what got through before a failure
        client.close()
