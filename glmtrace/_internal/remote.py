"""Reading from and uploading to the real backends, for the CLI.

- :func:`jaeger_trace` / :func:`jaeger_recent`: spans and trace summaries from Jaeger's query
  API, in exactly the shapes the local store returns.
- :func:`es_logs`: a trace's log documents from Elasticsearch, in ``ecs_document``'s shape.
- :func:`push`: upload a local store (spans over OTLP, logs with ``_bulk`` ``create``);
  running it twice sends nothing twice.
- :func:`probe`: does an endpoint answer, and which version is it (``glmtrace doctor``).

Every failure the user can fix (unreachable, refused, not found) raises :class:`RemoteError`
with a one-line message; credentials never appear in messages.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import ecs
from .config import (
    ElasticsearchOptions,
    otlp_protocol,
    otlp_traces_url,
    redact_url,
    resolve,
)
from .errors import GlmtraceError
from .span_export import otlp_exporter
from .span_row import SpanRow
from .store import Store, TraceSummary

TIMEOUT = 10.0
LOG_INDEX = "logs-glmtrace-*"
MAX_LOGS = 10_000  # Elasticsearch's default result window: one search, no scroll state


class RemoteError(GlmtraceError):
    """A backend could not be reached or did not answer as expected."""


# ---------------------------------------------------------------------------- HTTP


def _get_json(url: str, what: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:
        with err:
            body = err.read()[:300].decode(errors="replace")
        if err.code == 404:
            return None
        raise RemoteError(f"{what} answered HTTP {err.code}: {body}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RemoteError(f"{what} did not answer: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


# ---------------------------------------------------------------------------- Jaeger


def jaeger_trace(url: str, trace_id: str) -> list[SpanRow]:
    """The spans of ``trace_id`` (32 hex) from Jaeger's api/v3, as store rows; [] if unknown."""
    from .span_convert import rows_from_otlp_json

    tid = trace_id.strip().lower()
    if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        raise RemoteError(f"{trace_id!r}: Jaeger needs the full 32-hex-character trace id")
    payload = _get_json(f"{url.rstrip('/')}/api/v3/traces/{tid}", "Jaeger")
    return rows_from_otlp_json(payload) if payload else []


def jaeger_recent(
    url: str, service: str, limit: int = 20, lookback_s: float = 48 * 3600
) -> list[TraceSummary]:
    """The latest ``limit`` traces of ``service`` (newest first), like ``Store.recent``."""
    from .span_convert import rows_from_otlp_json

    now = dt.datetime.now(dt.timezone.utc)
    start = now - dt.timedelta(seconds=lookback_s)
    params = {
        "query.service_name": service,
        "query.start_time_min": start.isoformat().replace("+00:00", "Z"),
        "query.start_time_max": (now + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "query.num_traces": str(limit),
    }
    query = urllib.parse.urlencode(params)
    payload = _get_json(f"{url.rstrip('/')}/api/v3/traces?{query}", "Jaeger")
    by_trace: dict[str, list[SpanRow]] = {}
    for row in rows_from_otlp_json(payload or {}):
        by_trace.setdefault(row["trace_id"], []).append(row)
    summaries = [_summary(tid, rows) for tid, rows in by_trace.items()]
    summaries.sort(key=lambda s: s.start_ns, reverse=True)
    return summaries[:limit]


def _summary(trace_id: str, rows: list[SpanRow]) -> TraceSummary:
    ids = {r["span_id"] for r in rows}
    roots = [r for r in rows if r["parent_span_id"] not in ids] or rows
    root = min(roots, key=lambda r: (r["parent_span_id"] is not None, r["start_ns"]))
    start = min(r["start_ns"] for r in rows)
    return TraceSummary(
        trace_id=trace_id,
        root_name=root["name"],
        start_ns=start,
        duration_ns=max(r["end_ns"] for r in rows) - start,
        span_count=len(rows),
        error_count=sum(r["status"] == "ERROR" for r in rows),
    )


# ---------------------------------------------------------------------------- Elasticsearch


def _es_options(es: str | ElasticsearchOptions) -> ElasticsearchOptions:
    return es if isinstance(es, ElasticsearchOptions) else ElasticsearchOptions(url=es)


def _es_client(es: str | ElasticsearchOptions) -> Any:
    from .errors import MissingDependencyError

    try:
        from .es_bulk import make_client

        return make_client(_es_options(es), TIMEOUT)
    except ImportError:
        raise MissingDependencyError("elasticsearch", "elasticsearch") from None


def es_logs(
    es: str | ElasticsearchOptions, trace_id: str, index: str = LOG_INDEX
) -> list[dict[str, Any]]:
    """The log documents of ``trace_id``, oldest first, as flat ECS dicts like the store's.

    Works for documents glmtrace shipped itself and for those the Collector wrote in ECS
    mode. ``log.id`` and ``timestamp_ns`` are restored (from ``_id`` and ``@timestamp``).
    At most MAX_LOGS documents.
    """
    client = _es_client(es)
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    try:
        reply = client.search(
            index=index,
            query={"term": {ecs.TRACE_ID: trace_id.strip().lower()}},
            sort=[{ecs.TIMESTAMP: {"order": "asc", "unmapped_type": "date"}}],
            size=MAX_LOGS,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
    except ApiError as exc:
        raise RemoteError(f"Elasticsearch refused the search: HTTP {exc.meta.status}") from None
    except TransportError as exc:
        raise RemoteError(f"Elasticsearch did not answer: {type(exc).__name__}") from None
    finally:
        client.close()
    docs = [_log_doc(hit) for hit in reply["hits"]["hits"]]
    docs.sort(key=_log_order)
    return docs


def _log_doc(hit: dict[str, Any]) -> dict[str, Any]:
    doc = _flatten(hit.get("_source") or {})
    # glmtrace's documents carry their id as event.id (the Collector's get another _id).
    doc.setdefault(ecs.LOG_ID, doc.pop(ecs.EVENT_ID, None) or hit.get("_id"))
    if ecs.TIMESTAMP_NS not in doc and isinstance(doc.get(ecs.TIMESTAMP), str):
        doc[ecs.TIMESTAMP_NS] = timestamp_ns(doc[ecs.TIMESTAMP])
    return doc


def _log_order(doc: dict[str, Any]) -> tuple[int, str, int]:
    # Lines logged within one microsecond tie on time; ecs_document's ids are
    # "<process prefix>-<counter>", which orders them within a process.
    prefix, _, counter = str(doc.get(ecs.LOG_ID, "")).rpartition("-")
    return int(doc.get(ecs.TIMESTAMP_NS) or 0), prefix, int(counter) if counter.isdigit() else 0


def _flatten(source: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in source.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def timestamp_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time with up to 9 fractional digits."""
    text = text.strip().replace("Z", "+00:00")
    fraction = 0
    if "." in text:
        head, rest = text.split(".", 1)
        zone = rest.lstrip("0123456789")
        digits = rest[: len(rest) - len(zone)][:9]
        fraction = int(digits.ljust(9, "0")) if digits else 0
        text = head + zone
    seconds = dt.datetime.fromisoformat(text)
    if seconds.tzinfo is None:
        seconds = seconds.replace(tzinfo=dt.timezone.utc)
    return int(seconds.timestamp()) * 1_000_000_000 + fraction


# ---------------------------------------------------------------------------- push


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
    es_options = _es_options(es) if es is not None else None
    if span_dest:
        done_ids = store.pushed(span_dest, "span")
        all_spans = store.all_spans()
        spans = [s for s in all_spans if _span_key(s) not in done_ids]
        result.skipped_spans = len(all_spans) - len(spans)
    if es_options is not None:
        done_ids = store.pushed(es_options.url, "log")
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
    if logs and es_options is not None:

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        _push_logs(store, es_options, logs, result, advance)
    return result


def _span_key(row: SpanRow) -> str:
    return f"{row['trace_id']}{row['span_id']}"


def _span_exporter(url: str, protocol: str | None) -> Any:
    options, _ = resolve({"endpoint": url, "protocol": protocol or otlp_protocol(url)})
    return otlp_exporter(options, timeout=TIMEOUT)


def _export_spans(exporter: Any, rows: list[SpanRow], url: str) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from .span_convert import readable_span

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
    client = _es_client(es)
    from elastic_transport import TransportError
    from elasticsearch import ApiError
    from elasticsearch.helpers import streaming_bulk

    from . import es_bulk

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


# ---------------------------------------------------------------------------- probe


def probe(
    kind: str,
    url: str,
    es: ElasticsearchOptions | None = None,
    *,
    protocol: str | None = None,
) -> tuple[bool, str]:
    """Whether the ``kind`` endpoint at ``url`` answers, and its version or the error.

    ``kind`` is one of ``elasticsearch``, ``jaeger`` (query API), ``otlp``/``collector``
    (an OTLP receiver) or ``fluent`` (``tcp://host:port``).
    ``es`` supplies Elasticsearch credentials; ``protocol`` (``grpc`` or ``http/protobuf``)
    says how to talk to an OTLP endpoint (default: HTTP for port 4318, else gRPC).
    Never raises.
    """
    try:
        if kind == "elasticsearch":
            return _probe_es(es if es is not None and es.url == url else ElasticsearchOptions(url))
        if kind == "jaeger":
            services = _get_json(f"{url.rstrip('/')}/api/services", "Jaeger")
            count = len((services or {}).get("data") or [])
            return True, f"Jaeger query API ({count} services)"
        if kind in ("otlp", "collector"):
            return _probe_otlp(url, protocol)
        if kind == "fluent":
            parsed = urllib.parse.urlparse(url if "://" in url else f"tcp://{url}")
            with socket.create_connection((parsed.hostname or "", parsed.port or 24224), 3):
                return True, "Fluent forward port accepts connections"
        return False, f"unknown endpoint kind {kind!r}"
    except RemoteError as exc:
        return False, str(exc)
    except Exception as exc:  # doctor reports; it never crashes
        return False, _reason(exc)


def _probe_es(es: ElasticsearchOptions) -> tuple[bool, str]:
    from elasticsearch import ApiError

    client = _es_client(es)
    try:
        # The integ-test distribution has no `GET /`; node info works on every distribution.
        nodes = client.nodes.info(node_id="_local", filter_path="nodes.*.version")
        version = next(iter(nodes["nodes"].values()))["version"]
        return True, f"Elasticsearch {version}"
    except ApiError as exc:
        return False, f"Elasticsearch answered HTTP {exc.meta.status}"
    finally:
        client.close()


def _is_http(url: str, protocol: str | None) -> bool:
    return (protocol or otlp_protocol(url)) != "grpc"


def _probe_otlp(url: str, protocol: str | None) -> tuple[bool, str]:
    parsed = urllib.parse.urlparse(url)
    if _is_http(url, protocol):
        request = urllib.request.Request(
            otlp_traces_url(url),
            data=b"",
            method="POST",
            headers={"Content-Type": "application/x-protobuf"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return True, f"OTLP/HTTP receiver (HTTP {reply.status})"
        except urllib.error.HTTPError as err:
            err.close()
            return err.code < 500 and err.code != 404, f"OTLP/HTTP answered HTTP {err.code}"
    import grpc  # type: ignore[import-untyped]  # no stubs; the OTLP exporter's dependency

    target = parsed.netloc or url
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=5)
        return True, "OTLP gRPC receiver (channel ready)"
    except grpc.FutureTimeoutError:
        return False, "OTLP gRPC: no connection within 5 s"
    finally:
        channel.close()
