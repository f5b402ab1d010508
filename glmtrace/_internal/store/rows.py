"""The store's rows: what each span dict and log document puts in its table's columns.

A value that cannot be encoded (a lone surrogate, an integer too long to print, an object
JSON does not know) is repaired rather than allowed to fail the transaction it is part of.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_NAME

from ..export.rows import SpanRow
from ..logs import ecs
from ..logs.ecs import EcsDocument
from ..repair import repaired, safe_str, utf8_ok

SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_ns",
    "end_ns",
    "status",
    "status_message",
    "service_name",
    "attributes",
    "events",
    "links",
    "resource",
)
_JSON_COLUMNS = frozenset(("attributes", "events", "links", "resource"))
T = TypeVar("T", SpanRow, EcsDocument)


# One encoder for every value: ``json.dumps`` with options builds a new one per call.
_json = json.JSONEncoder(ensure_ascii=False, default=safe_str).encode


def span_values(row: SpanRow) -> tuple[Any, ...]:
    """A span row as the ``spans`` table's column values, in ``SPAN_COLUMNS`` order."""
    return (
        row["trace_id"],
        row["span_id"],
        row["parent_span_id"],
        row["name"] or "",
        row["kind"],
        row["start_ns"],
        row["end_ns"],
        row["status"] or "",
        row["status_message"],
        row["service_name"],
        _json(row["attributes"]),
        _json(row["events"]),
        _json(row["links"]),
        _json(row["resource"]),
    )


def json_text(value: Any) -> str:
    """One value's JSON text as it appears in a span row's JSON column, repaired as :func:`encoded`
    repairs a row (the native store writer asks for the values it does not model itself)."""
    if isinstance(value, Mapping) and not isinstance(value, dict):
        value = dict(value)
    try:
        out = _json(value)
        if utf8_ok(out):
            return out
    except (ValueError, TypeError, RecursionError):
        pass
    return _json(repaired(value))


def resource_values(attributes: Mapping[str, Any], pid: int) -> tuple[str | None, str]:
    """The ``service_name`` and ``resource`` columns of the spans of a resource with
    ``attributes``, written by process ``pid`` (as :class:`StoreSpanExporter` writes them)."""
    resource = dict(attributes)
    resource[PROCESS_PID] = pid
    name = resource.get(SERVICE_NAME)
    return (None if name is None else safe_str(name)), json_text(resource)


def log_values(doc: EcsDocument) -> tuple[Any, ...]:
    """An ECS log document as the ``logs`` table's column values."""
    return (
        doc[ecs.LOG_ID],
        doc[ecs.TIMESTAMP_NS],
        doc.get(ecs.TRACE_ID),
        doc.get(ecs.SPAN_ID),
        _not_null("level", doc[ecs.LOG_LEVEL]),
        _not_null("logger", doc[ecs.LOG_LOGGER]),
        _not_null("message", doc[ecs.MESSAGE]),
        _json(doc),
    )


def _not_null(column: str, value: Any) -> Any:
    # A span or record without a name/message is still stored (and counted), with empty text.
    if value is None and column in ("name", "status", "level", "logger", "message"):
        return ""
    return value


def encoded(encode: Callable[[T], tuple[Any, ...]], item: T) -> tuple[Any, ...] | None:
    """The column values of ``item``, from a repaired copy if needed; None if even that fails."""
    try:
        values = encode(item)
        if all(utf8_ok(v) for v in values if isinstance(v, str)):
            return values
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return encode(cast(T, repaired(item)))
    except Exception:
        return None


def span_row(row: Sequence[Any]) -> SpanRow:
    """A ``spans`` table row (``SPAN_COLUMNS`` order) as the span row it was written from."""
    span = dict(zip(SPAN_COLUMNS, row, strict=True))
    for key in _JSON_COLUMNS:
        span[key] = json.loads(span[key])
    return cast(SpanRow, span)
