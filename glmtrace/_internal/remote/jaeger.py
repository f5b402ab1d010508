"""Spans and trace summaries from Jaeger's api/v3, in the local store's shapes."""

from __future__ import annotations

import datetime as dt
import urllib.parse

from ..export.convert import rows_from_otlp_json
from ..export.rows import SpanRow
from ..store.database import TraceSummary
from .http import RemoteError, get_json


def jaeger_trace(url: str, trace_id: str) -> list[SpanRow]:
    """The spans of ``trace_id`` (32 hex) from Jaeger's api/v3, as store rows; [] if unknown."""
    tid = trace_id.strip().lower()
    if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        raise RemoteError(f"{trace_id!r}: Jaeger needs the full 32-hex-character trace id")
    payload = get_json(f"{url.rstrip('/')}/api/v3/traces/{tid}", "Jaeger")
    return rows_from_otlp_json(payload) if payload else []


def jaeger_recent(
    url: str, service: str, limit: int = 20, lookback_s: float = 48 * 3600
) -> list[TraceSummary]:
    """The latest ``limit`` traces of ``service`` (newest first), like ``Store.recent``."""
    now = dt.datetime.now(dt.timezone.utc)
    start = now - dt.timedelta(seconds=lookback_s)
    params = {
        "query.service_name": service,
        "query.start_time_min": start.isoformat().replace("+00:00", "Z"),
        "query.start_time_max": (now + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        "query.num_traces": str(limit),
    }
    query = urllib.parse.urlencode(params)
    payload = get_json(f"{url.rstrip('/')}/api/v3/traces?{query}", "Jaeger")
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
