"""Read-only queries over the local store for the web app and ``glmtrace stats``.

The store's own methods answer "one trace" and "the last N"; the app also needs filters,
keyset paging over hundreds of thousands of traces and metric rows, so it opens the same
SQLite file itself, read-only (``mode=ro``): the app can never change what it shows.

A trace is listed at its first local root: a span with no parent, or whose parent is not in
the store (its caller ran in another service). Walking roots newest first on the ``start_ns``
index and stopping after one page keeps the first page cheap however many traces there are.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..keys import GEN_AI_REQUEST_MODEL as MODEL
from ..keys import SESSION_ID, STAGE
from ..store.rows import SPAN_COLUMNS
from ..torch.keys import EVENT_KIND, GPU_DEVICE, GPU_STREAM, MODULE_PATH, RANK

_JSON_COLUMNS = ("attributes", "events", "links", "resource")
_HEX = frozenset("0123456789abcdef")
_LINK_SLACK_NS = 60 * 10**9


class QueryError(Exception):
    """The data source is missing, unreadable or not answering."""


class NotFound(QueryError):
    """The request names a trace or span that does not exist, or is not a trace id."""


class Source(Protocol):
    """Where the app reads from: the local store (:class:`LocalSource`) or Jaeger + ES."""

    label: str

    def check(self) -> None: ...
    def services(self) -> list[str]: ...
    def traces(
        self, filters: TraceFilter, limit: int = 50, before: tuple[int, str] | None = None
    ) -> list[dict[str, Any]]: ...
    def resolve(self, text: str) -> str: ...
    def spans(self, trace_id: str) -> list[dict[str, Any]]: ...
    def briefs(self, trace_id: str) -> Sequence[tuple[Any, ...]]: ...
    def logs(self, trace_id: str) -> list[dict[str, Any]]: ...
    def span(self, trace_id: str, span_id: str) -> dict[str, Any]: ...
    def linked_from(self, span: dict[str, Any]) -> list[dict[str, Any]]: ...
    def newest_ns(self) -> int | None: ...
    def oldest_ns(self) -> int | None: ...
    def metric_rows(self, since_ns: int, until_ns: int) -> Sequence[Sequence[Any]]: ...


@dataclass(frozen=True)
class TraceFilter:
    """What the trace list is narrowed to; every field is optional."""

    service: str | None = None
    name: str | None = None  # a substring of any span's name or stage
    status: str | None = None  # "error" | "ok"
    session: str | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    trace_id: str | None = None  # a prefix of 8+ hex characters
    log_text: str | None = None


def _attr(key: str, table: str = "") -> str:
    return f"json_extract({table}attributes, '$.\"{key}\"')"


# A root span: no parent, or a parent this store never saw. Listed once per trace, at the
# earliest such root.
_ROOT = """
(s.parent_span_id IS NULL OR NOT EXISTS (
    SELECT 1 FROM spans p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id))
AND NOT EXISTS (
    SELECT 1 FROM spans o WHERE o.trace_id = s.trace_id AND o.start_ns < s.start_ns
    AND (o.parent_span_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM spans q WHERE q.trace_id = o.trace_id AND q.span_id = o.parent_span_id)))
"""


class LocalSource:
    """Queries one store file; each thread gets its own read-only connection."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.label = str(self.path)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if not self.path.exists():
            raise QueryError(f"no glmtrace store at {self.path} (run a traced program first)")
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("SELECT 1 FROM spans LIMIT 1")
        except sqlite3.DatabaseError as exc:
            raise QueryError(f"{self.path} is not a readable glmtrace store: {exc}") from None
        self._local.conn = conn
        return conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise QueryError(f"reading {self.path} failed: {exc}") from None

    # ------------------------------------------------------------------ trace list

    def traces(
        self, filters: TraceFilter, limit: int = 50, before: tuple[int, str] | None = None
    ) -> list[dict[str, Any]]:
        """One page of traces, newest first, each started before ``before`` (start_ns, id)."""
        where, params = [_ROOT], []
        if before is not None:
            where.append("(s.start_ns < ? OR (s.start_ns = ? AND s.trace_id < ?))")
            params += [before[0], before[0], before[1]]
        if filters.since_ns is not None:
            where.append("s.start_ns >= ?")
            params.append(filters.since_ns)
        if filters.until_ns is not None:
            where.append("s.start_ns <= ?")
            params.append(filters.until_ns)
        if filters.trace_id:
            where.append("s.trace_id LIKE ?")
            params.append(_trace_prefix(filters.trace_id) + "%")
        # "Some span of the trace ..." filters: one pass over the spans builds the set of
        # matching traces (SQLite materialises an uncorrelated IN once), so a filter that
        # matches nothing costs one scan, not one probe per trace in the store.
        matching = []
        if filters.service:
            matching.append(("service_name = ?", [filters.service]))
        if filters.name:
            matching.append(
                (
                    f"(instr(name, ?) > 0 OR instr({_attr(STAGE)}, ?) > 0)",
                    [filters.name, filters.name],
                )
            )
        if filters.session:
            matching.append((f"{_attr(SESSION_ID)} = ?", [filters.session]))
        if filters.status == "error":
            matching.append(("status = 'ERROR'", []))
        for condition, values in matching:
            where.append(f"s.trace_id IN (SELECT trace_id FROM spans WHERE {condition})")
            params += values
        if filters.status == "ok":
            where.append("s.trace_id NOT IN (SELECT trace_id FROM spans WHERE status = 'ERROR')")
        if filters.min_ms is not None or filters.max_ms is not None:
            span = (
                "(SELECT MAX(x.end_ns) - MIN(x.start_ns) FROM spans x"
                " WHERE x.trace_id = s.trace_id)"
            )
            if filters.min_ms is not None:
                where.append(f"{span} >= ?")
                params.append(int(filters.min_ms * 1e6))
            if filters.max_ms is not None:
                where.append(f"{span} <= ?")
                params.append(int(filters.max_ms * 1e6))
        if filters.log_text:
            where.append("s.trace_id IN (SELECT trace_id FROM logs WHERE instr(message, ?) > 0)")
            params.append(filters.log_text)
        roots = self._rows(
            "SELECT s.trace_id, s.name, s.start_ns, s.service_name FROM spans s"
            f" WHERE {' AND '.join(where)} ORDER BY s.start_ns DESC, s.trace_id DESC LIMIT ?",
            [*params, limit],
        )
        return [self._summary(*root) for root in roots]

    def _summary(self, trace_id: str, root: str, start_ns: int, service: str) -> dict[str, Any]:
        (first, last, count, errors, services, session), *_ = self._rows(
            "SELECT MIN(start_ns), MAX(end_ns), COUNT(*), SUM(status = 'ERROR'),"
            f" group_concat(DISTINCT service_name), MAX({_attr(SESSION_ID)})"
            " FROM spans WHERE trace_id = ?",
            (trace_id,),
        )
        (logs,), *_ = self._rows("SELECT COUNT(*) FROM logs WHERE trace_id = ?", (trace_id,))
        return {
            "trace_id": trace_id,
            "root_name": root,
            "service": service,
            "services": sorted((services or "").split(",")) if services else [],
            "start_ns": start_ns,
            "duration_ns": last - first,
            "span_count": count,
            "error_count": errors or 0,
            "log_count": logs,
            "session_id": session,
        }

    def check(self) -> None:
        """Raise QueryError unless the store can be read."""
        self._conn()

    def services(self) -> list[str]:
        """Service names of the most recent spans, for the filter's suggestions.

        A bounded look at recent spans, not a scan of the whole store on every page load;
        the field still accepts any name.
        """
        rows = self._rows(
            "SELECT DISTINCT service_name FROM (SELECT service_name FROM spans"
            " ORDER BY start_ns DESC LIMIT 20000) WHERE service_name IS NOT NULL"
        )
        return sorted(r[0] for r in rows)

    # ------------------------------------------------------------------ one trace

    def resolve(self, text: str) -> str:
        """The full trace id for a full id or a unique prefix; QueryError otherwise."""
        prefix = _trace_prefix(text)
        rows = self._rows(
            "SELECT DISTINCT trace_id FROM spans WHERE trace_id >= ? AND trace_id < ? LIMIT 2",
            (prefix, prefix + "g"),
        )
        if len(rows) != 1:
            raise NotFound(f"no trace {text}" if not rows else f"trace id {text} is ambiguous")
        return str(rows[0][0])

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            f"SELECT {','.join(SPAN_COLUMNS)} FROM spans WHERE trace_id = ? ORDER BY start_ns",
            (trace_id,),
        )
        return [_span(r) for r in rows]

    def briefs(self, trace_id: str) -> list[tuple[Any, ...]]:
        """The waterfall's columns of every span, in ``trace_view.Brief`` order.

        Picking the few attributes in SQL instead of decoding every span's JSON in Python
        is what keeps a 50,000-span trace quick to open.
        """
        return self._rows(
            "SELECT span_id, parent_span_id, name, start_ns, end_ns, status, service_name,"
            " json_extract(resource, '$.\"process.pid\"'),"
            f" coalesce(json_extract(resource, '$.\"{RANK}\"'), {_attr(RANK)}),"
            f" {_attr(GPU_DEVICE)}, {_attr(GPU_STREAM)}, {_attr(STAGE)}, {_attr(MODEL)},"
            f" {_attr(MODULE_PATH)}, {_attr(EVENT_KIND)}"
            " FROM spans WHERE trace_id = ? ORDER BY start_ns",
            (trace_id,),
        )

    def logs(self, trace_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT document FROM logs WHERE trace_id = ? ORDER BY timestamp_ns", (trace_id,)
        )
        return [json.loads(r[0]) for r in rows]

    def span(self, trace_id: str, span_id: str) -> dict[str, Any]:
        rows = self._rows(
            f"SELECT {','.join(SPAN_COLUMNS)} FROM spans WHERE trace_id = ? AND span_id = ?",
            (trace_id, span_id),
        )
        if not rows:
            raise NotFound(f"no span {span_id} in trace {trace_id}")
        return _span(rows[0])

    def linked_from(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        """Spans whose links point at ``span`` (a batch, seen from one of its requests).

        A batch links to requests that are waiting for it, so it starts while the request
        is open; a minute either side allows for clocks of other hosts and keeps the scan
        on the start_ns index instead of the whole table.
        """
        trace_id, span_id = span["trace_id"], span["span_id"]
        rows = self._rows(
            "SELECT trace_id, span_id, name, links FROM spans"
            " WHERE start_ns BETWEEN ? AND ? AND links != '[]' AND instr(links, ?) > 0"
            " LIMIT 200",
            (span["start_ns"] - _LINK_SLACK_NS, span["end_ns"] + _LINK_SLACK_NS, span_id),
        )
        found = []
        for tid, sid, name, links in rows:
            for link in json.loads(links):
                if link.get("trace_id") == trace_id and link.get("span_id") == span_id:
                    found.append({"trace_id": tid, "span_id": sid, "name": name})
                    break
        return found

    # ------------------------------------------------------------------ metrics

    def newest_ns(self) -> int | None:
        (newest,), *_ = self._rows("SELECT MAX(start_ns) FROM spans")
        return int(newest) if newest is not None else None

    def oldest_ns(self) -> int | None:
        (oldest,), *_ = self._rows("SELECT MIN(start_ns) FROM spans")
        return int(oldest) if oldest is not None else None

    def metric_rows(self, since_ns: int, until_ns: int) -> list[tuple[Any, ...]]:
        """(start_ns, end_ns, status, stage, model) of stage and inference spans in a window."""
        return self._rows(
            f"SELECT start_ns, end_ns, status, {_attr(STAGE)}, {_attr(MODEL)} FROM spans"
            f" WHERE start_ns >= ? AND start_ns <= ?"
            f" AND ({_attr(STAGE)} IS NOT NULL OR {_attr(MODEL)} IS NOT NULL)",
            (since_ns, until_ns),
        )


def _trace_prefix(text: str) -> str:
    prefix = text.strip().lower()
    if not 8 <= len(prefix) <= 32 or not set(prefix) <= _HEX:
        raise NotFound(f"{text!r} is not a trace id (give 8 to 32 hex characters)")
    return prefix


def _span(row: Sequence[Any]) -> dict[str, Any]:
    span = dict(zip(SPAN_COLUMNS, row, strict=True))
    for key in _JSON_COLUMNS:
        span[key] = json.loads(span[key])
    return span
