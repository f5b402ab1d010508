"""A trace's log documents from Elasticsearch, as flat ECS dicts like the store's."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..config import ElasticsearchOptions
from ..logs import ecs
from .http import TIMEOUT, RemoteError

LOG_INDEX = "logs-glmtrace-*"
MAX_LOGS = 10_000  # Elasticsearch's default result window: one search, no scroll state


def es_options(es: str | ElasticsearchOptions) -> ElasticsearchOptions:
    return es if isinstance(es, ElasticsearchOptions) else ElasticsearchOptions(url=es)


def es_client(es: str | ElasticsearchOptions) -> Any:
    from ..errors import MissingDependencyError

    try:
        from ..logs.es_bulk import make_client

        return make_client(es_options(es), TIMEOUT)
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
    client = es_client(es)
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
