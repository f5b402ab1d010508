"""The store's rows: what each span dict and log document puts in its table's columns.

A value that cannot be encoded (a lone surrogate, an integer too long to print, an object
JSON does not know) is repaired rather than allowed to fail the transaction it is part of.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .repair import repaired, safe_str, utf8_ok

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


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=safe_str)


def span_values(row: dict[str, Any]) -> tuple[Any, ...]:
    """A span dict as the ``spans`` table's column values, in ``SPAN_COLUMNS`` order."""
    return tuple(
        _json(row[c]) if c in _JSON_COLUMNS else _not_null(c, row[c]) for c in SPAN_COLUMNS
    )


def log_values(doc: dict[str, Any]) -> tuple[Any, ...]:
    """An ECS log document as the ``logs`` table's column values."""
    return (
        doc["log.id"],
        doc["timestamp_ns"],
        doc.get("trace.id"),
        doc.get("span.id"),
        _not_null("level", doc["log.level"]),
        _not_null("logger", doc["log.logger"]),
        _not_null("message", doc["message"]),
        _json(doc),
    )


def _not_null(column: str, value: Any) -> Any:
    # A span or record without a name/message is still stored (and counted), with empty text.
    if value is None and column in ("name", "status", "level", "logger", "message"):
        return ""
    return value


def encoded(
    encode: Callable[[dict[str, Any]], tuple[Any, ...]], item: dict[str, Any]
) -> tuple[Any, ...] | None:
    """The column values of ``item``, from a repaired copy if needed; None if even that fails."""
    try:
        values = encode(item)
        if all(utf8_ok(v) for v in values if isinstance(v, str)):
            return values
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return encode(repaired(item))
    except Exception:
        return None


def span_row(row: Sequence[Any]) -> dict[str, Any]:
    """A ``spans`` table row (``SPAN_COLUMNS`` order) as the span dict it was written from."""
    span = dict(zip(SPAN_COLUMNS, row, strict=True))
    for key in ("attributes", "events", "links", "resource"):
        span[key] = json.loads(span[key])
    return span
