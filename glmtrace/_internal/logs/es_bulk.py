"""Elasticsearch ``_bulk`` plumbing shared by the log sink and ``glmtrace push``.

Documents are glmtrace's flat ECS dicts (:func:`~glmtrace._internal.logs.handler.ecs_document`).
Each becomes a ``create`` of ``_id = log.id``, so sending a document twice never stores it
twice: the second answer is a 409 conflict, which means "already there".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, cast

from .. import repair
from ..config import ElasticsearchOptions
from . import ecs

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

TEMPLATE_NAME = "glmtrace-logs"
MAX_BULK_BYTES = 5 * 1024 * 1024
MAX_BULK_DOCS = 2_000
# What survives when Elasticsearch rejects a document (a mapping conflict in a labels.* extra):
# the log line itself is never lost because of one odd field.
CORE_KEYS = (
    ecs.TIMESTAMP,
    ecs.ECS_VERSION_KEY,
    ecs.MESSAGE,
    ecs.LOG_LEVEL,
    ecs.LOG_LOGGER,
    ecs.SERVICE_NAME,
    ecs.TRACE_ID,
    ecs.SPAN_ID,
    ecs.ERROR_TYPE,
    ecs.ERROR_MESSAGE,
    ecs.ERROR_STACK_TRACE,
    ecs.LABEL_SESSION_ID,
    ecs.PROCESS_PID,
    ecs.HOST_HOSTNAME,
)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# States of the cluster, not faults of the document: a write block, a closed write index, a
# shard moving. They pass; the documents wait in the spool until they do.
TRANSIENT_ERRORS = frozenset(
    {
        "cluster_block_exception",
        "index_closed_exception",
        "es_rejected_execution_exception",
        "circuit_breaking_exception",
        "unavailable_shards_exception",
        "no_shard_available_action_exception",
        "process_cluster_event_timeout_exception",
        "primary_missing_action_exception",
    }
)
# Where a label whose value the mapping refuses is kept, as text: a keyword under labels.*.
UNMAPPED = f"{ecs.LABELS}glmtrace_unmapped"
REJECTED = f"{ecs.LABELS}glmtrace_rejected"
_FIELD = re.compile(r"(?:mapping for|mapper|field) \[([^\]]+)\]")

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
    client = Elasticsearch(es.url, **kwargs)
    _quiet(client)
    return client


def _quiet(client: Elasticsearch) -> None:
    """Turn off the client's own OpenTelemetry spans (elasticsearch >= 8.13).

    The client traces every request through the global tracer provider, which is glmtrace's:
    shipping logs would add ``bulk`` spans to the user's traces. The client has no public
    switch but an environment variable, which would also silence the user's own clients.
    """
    otel = getattr(client, "_otel", None)
    if otel is not None:
        otel.enabled = False


def quiet_options(client: Elasticsearch, **settings: Any) -> Elasticsearch:
    """``client.options(**settings)``, its spans turned off too (options() makes a new one)."""
    copy = client.options(**settings)
    _quiet(copy)
    return copy


def classify(exc: BaseException) -> Failure:
    """Whether a failed request is worth retrying, and how."""
    from elastic_transport import ConnectionTimeout, TransportError
    from elasticsearch import ApiError

    if isinstance(exc, ConnectionTimeout):
        return "timeout"
    if isinstance(exc, ApiError):
        status = exc.meta.status
        if error_type(exc.body) in TRANSIENT_ERRORS:
            return "transient"
        if status in (401, 403):
            return "auth"
        return "transient" if status in TRANSIENT_STATUS else "permanent"
    if isinstance(exc, TransportError | OSError):
        return "transient"
    return "permanent"


def error_type(body: Any) -> str | None:
    """The ``error.type`` of an Elasticsearch error answer, if it has one."""
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("type") if isinstance(error, dict) else None


def valid(doc: Any) -> bool:
    """Whether ``doc`` (read back from the spool) can be shipped at all: it needs its id."""
    return isinstance(doc, dict) and isinstance(doc.get(ecs.LOG_ID), str) and bool(doc[ecs.LOG_ID])


def _body(doc: dict[str, Any]) -> dict[str, Any]:
    return ecs.wire(doc)


def repaired(doc: dict[str, Any], reason: str) -> dict[str, Any] | None:
    """``doc`` with the field named in a mapping rejection moved into a text label.

    A user's ``extra`` value that conflicts with the mapping (``session_id=5`` making
    ``labels.session_id`` a long) must not cost the log line: the value is kept as text under
    :data:`UNMAPPED`. None when the reason names no field of ``doc``.
    """
    match = _FIELD.search(reason)
    if match is None:
        return None
    field_name = match.group(1)
    moved = {
        k: v
        for k, v in doc.items()
        if k not in ecs.INTERNAL_KEYS
        and k != UNMAPPED
        and (k == field_name or field_name.startswith(k + ".") or k.startswith(field_name + "."))
    }
    if not moved:
        return None
    kept = {k: v for k, v in doc.items() if k not in moved}
    try:  # a second conflict on the same document adds to the first
        earlier = json.loads(doc.get(UNMAPPED) or "{}")
    except (TypeError, ValueError):
        earlier = {}
    if isinstance(earlier, dict):
        moved = {**earlier, **moved}
    kept[UNMAPPED] = repair.dumps(moved).decode()
    return kept


def core(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` reduced to the ECS fields every log line must keep."""
    kept = {k: doc[k] for k in (*ecs.INTERNAL_KEYS, *CORE_KEYS) if k in doc}
    kept[REJECTED] = "fields dropped: Elasticsearch rejected the document"
    return kept


def chunks(index: str, docs: list[dict[str, Any]]) -> Iterator[tuple[list[dict[str, Any]], bytes]]:
    """Split ``docs`` into ``_bulk`` bodies of at most MAX_BULK_BYTES / MAX_BULK_DOCS."""
    part: list[dict[str, Any]] = []
    lines: list[bytes] = []
    size = 0
    for doc in docs:
        action = {"create": {"_index": index, "_id": doc[ecs.LOG_ID]}}
        line = repair.dumps(action) + b"\n" + repair.dumps(_body(doc)) + b"\n"
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
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (doc, reason)


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
        elif status in TRANSIENT_STATUS or error_type(result) in TRANSIENT_ERRORS:
            outcome.retry.append(doc)
        else:
            error = result.get("error") or {}
            outcome.rejected.append((doc, f"{error.get('type')}: {error.get('reason')}"))
    # A response with fewer items than documents: resend the rest (create is idempotent).
    outcome.retry.extend(docs[len(items) :])
    return outcome


def send_repairing(client: Elasticsearch, index: str, docs: list[dict[str, Any]]) -> Outcome:
    """Send ``docs`` in ``_bulk`` bodies; a rejected document is repaired and resent.

    First without the field the mapping refused (kept as text, :func:`repaired`), then cut
    to its core fields (:func:`core`); ``rejected`` holds what no repair got in, with
    Elasticsearch's reason. Request-level errors propagate.
    """
    total = Outcome()
    pending, attempt = docs, 0
    while pending:
        rejected: list[tuple[dict[str, Any], str]] = []
        for part, body in chunks(index, pending):
            outcome = send(client, part, body)
            total.delivered += outcome.delivered
            total.retry += outcome.retry
            rejected += outcome.rejected
        pending = []
        for doc, reason in rejected:
            fixed = repaired(doc, reason) if attempt < 3 else None
            if fixed is None and REJECTED not in doc:
                fixed = core(doc)
            if fixed is None:
                total.rejected.append((doc, reason))
            else:
                pending.append(fixed)
        attempt += 1
    return total
