"""Elasticsearch ``_bulk`` plumbing shared by the log sink and ``glmtrace push``.

Documents are glmtrace's flat ECS dicts (:func:`~glmtrace._internal.logs.ecs_document`).
Each becomes a ``create`` of ``_id = log.id``, so sending a document twice never stores it
twice: the second answer is a 409 conflict, which means "already there".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, cast

from .config import ElasticsearchOptions

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

TEMPLATE_NAME = "glmtrace-logs"
MAX_BULK_BYTES = 5 * 1024 * 1024
MAX_BULK_DOCS = 2_000
# Keys of ecs_document() that only glmtrace uses: the id travels as _id, and the
# nanosecond time is in @timestamp (microseconds, what record.created resolves anyway).
INTERNAL_KEYS = ("log.id", "timestamp_ns")
# What survives when Elasticsearch rejects a document (a mapping conflict in a labels.* extra):
# the log line itself is never lost because of one odd field.
CORE_KEYS = (
    "@timestamp",
    "message",
    "log.level",
    "log.logger",
    "service.name",
    "trace.id",
    "span.id",
    "error.type",
    "error.message",
    "error.stack_trace",
    "labels.session_id",
    "process.pid",
    "host.hostname",
)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

Failure = Literal["transient", "timeout", "auth", "permanent"]


def load_template() -> dict[str, Any]:
    """The index template for glmtrace's log data stream (the file compose also uses)."""
    text = resources.files("glmtrace._internal").joinpath("data/es_index_template.json")
    return cast(dict[str, Any], json.loads(text.read_text(encoding="utf-8")))


def make_client(es: ElasticsearchOptions, request_timeout: float) -> Elasticsearch:
    """An Elasticsearch client that never retries on its own: the caller decides when."""
    from elasticsearch import Elasticsearch

    kwargs: dict[str, Any] = {
        "request_timeout": request_timeout,
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if es.api_key:
        kwargs["api_key"] = es.api_key
    elif es.username:
        kwargs["basic_auth"] = (es.username, es.password or "")
    if es.ca_certs:
        kwargs["ca_certs"] = es.ca_certs
    if not es.verify_certs:
        # verification off is an explicit choice; urllib3's per-request warning would only
        # flood the user's log with the same line.
        kwargs["verify_certs"] = False
        kwargs["ssl_show_warn"] = False
    return Elasticsearch(es.url, **kwargs)


def classify(exc: BaseException) -> Failure:
    """Whether a failed request is worth retrying, and how."""
    from elastic_transport import ConnectionTimeout, TransportError
    from elasticsearch import ApiError

    if isinstance(exc, ConnectionTimeout):
        return "timeout"
    if isinstance(exc, ApiError):
        status = exc.meta.status
        if status in (401, 403):
            return "auth"
        return "transient" if status in TRANSIENT_STATUS else "permanent"
    if isinstance(exc, TransportError | OSError):
        return "transient"
    return "permanent"


def _body(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in INTERNAL_KEYS}


def core(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` reduced to the ECS fields every log line must keep."""
    kept = {k: doc[k] for k in (*INTERNAL_KEYS, *CORE_KEYS) if k in doc}
    kept["labels.glmtrace_rejected"] = "fields dropped: Elasticsearch rejected the document"
    return kept


def chunks(index: str, docs: list[dict[str, Any]]) -> Iterator[tuple[list[dict[str, Any]], bytes]]:
    """Split ``docs`` into ``_bulk`` bodies of at most MAX_BULK_BYTES / MAX_BULK_DOCS."""
    part: list[dict[str, Any]] = []
    lines: list[bytes] = []
    size = 0
    for doc in docs:
        action = {"create": {"_index": index, "_id": doc["log.id"]}}
        line = (
            json.dumps(action, separators=(",", ":")).encode()
            + b"\n"
            + json.dumps(_body(doc), default=str, separators=(",", ":")).encode()
            + b"\n"
        )
        if part and (size + len(line) > MAX_BULK_BYTES or len(part) >= MAX_BULK_DOCS):
            yield part, b"".join(lines)
            part, lines, size = [], [], 0
        part.append(doc)
        lines.append(line)
        size += len(line)
    if part:
        yield part, b"".join(lines)


@dataclass
class Outcome:
    """What one ``_bulk`` request did with each document."""

    delivered: list[dict[str, Any]] = field(default_factory=list)
    retry: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)


def send(client: Elasticsearch, docs: list[dict[str, Any]], body: bytes) -> Outcome:
    """POST one ``_bulk`` body; per-document results. Request-level errors propagate."""
    response = client.bulk(
        operations=cast(Any, body),  # pre-serialised NDJSON: sized exactly, encoded once
        filter_path="errors,items.*.status,items.*.error.type,items.*.error.reason",
    )
    outcome = Outcome()
    if not response.get("errors"):
        outcome.delivered = docs
        return outcome
    items = response.get("items") or []
    for doc, item in zip(docs, items, strict=False):
        result: dict[str, Any] = next(iter(item.values()), {})
        status = int(result.get("status", 500))
        if status < 300 or status == 409:  # 409: the same _id is already stored
            outcome.delivered.append(doc)
        elif status in TRANSIENT_STATUS:
            outcome.retry.append(doc)
        else:
            error = result.get("error") or {}
            outcome.rejected.append((doc, f"{error.get('type')}: {error.get('reason')}"))
    # A response with fewer items than documents: resend the rest (create is idempotent).
    outcome.retry.extend(docs[len(items) :])
    return outcome
