"""The web app over Jaeger (traces) and Elasticsearch (logs) instead of the local store.

It reads through the CLI's readers in ``remote/`` and Jaeger's api/v3. Jaeger searches
one service at a time and knows nothing of glmtrace's filters, so the list asks each
service for recent traces and filters what comes back; metrics cover at most
``MAX_TRACES`` traces per service in the window. Jaeger cannot search span links, so
"linked from" shows only links that the span itself carries.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ..config import ElasticsearchOptions, redact_url
from ..errors import GlmtraceError
from ..export.convert import rows_from_otlp_json
from ..keys import GEN_AI_REQUEST_MODEL as MODEL
from ..keys import SESSION_ID, STAGE
from ..logs import ecs
from ..remote.es_query import LOG_INDEX, es_client, es_logs
from ..remote.http import RemoteError, get_json
from ..remote.jaeger import jaeger_trace
from . import trace_view
from .queries import NotFound, QueryError, TraceFilter

LOOKBACK_S = 48 * 3600  # the list's default reach back when no time range is given
MAX_TRACES = 500
_CACHE_S = 10.0  # one page view asks for the same trace several times (rows, details)


def _iso(ns: int) -> str:
    moment = dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


class RemoteSource:
    """Reads traces from the Jaeger query API at ``jaeger`` and logs from ``es`` if given."""

    def __init__(self, jaeger: str, es: ElasticsearchOptions | None = None) -> None:
        self.jaeger = jaeger.rstrip("/")
        self.es = es
        self.label = f"Jaeger {redact_url(self.jaeger)}" + (
            f" + Elasticsearch {redact_url(es.url)}" if es else ""
        )
        self._cache: OrderedDict[str, tuple[float, list[dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ Jaeger

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            return get_json(f"{self.jaeger}{path}{query}", "Jaeger")
        except RemoteError as exc:
            raise QueryError(str(exc)) from None

    def check(self) -> None:
        self.services()

    def services(self) -> list[str]:
        payload = self._get("/api/v3/services") or {}
        return sorted(str(s) for s in payload.get("services") or [])

    def _search(
        self, service: str, since_ns: int, until_ns: int, limit: int
    ) -> list[dict[str, Any]]:
        """Span rows of up to ``limit`` traces of ``service`` that started in the range."""
        payload = self._get(
            "/api/v3/traces",
            {
                "query.service_name": service,
                "query.start_time_min": _iso(since_ns),
                "query.start_time_max": _iso(until_ns),
                "query.num_traces": str(limit),
            },
        )
        return [dict(row) for row in rows_from_otlp_json(payload or {})]

    def _traces_between(
        self, since_ns: int, until_ns: int, service: str | None, limit: int
    ) -> dict[str, list[dict[str, Any]]]:
        by_trace: dict[str, list[dict[str, Any]]] = {}
        for name in [service] if service else self.services():
            for row in self._search(name, since_ns, until_ns, limit):
                by_trace.setdefault(row["trace_id"], []).append(row)
        for spans in by_trace.values():  # a trace found under two services came twice
            unique = {s["span_id"]: s for s in spans}
            spans[:] = sorted(unique.values(), key=lambda s: s["start_ns"])
        return by_trace

    # ------------------------------------------------------------------ trace list

    def traces(
        self, filters: TraceFilter, limit: int = 50, before: tuple[int, str] | None = None
    ) -> list[dict[str, Any]]:
        now = time.time_ns()
        until = min(filters.until_ns or now + 60 * 10**9, before[0] - 1 if before else now * 2)
        since = filters.since_ns or until - int(LOOKBACK_S * 1e9)
        found: dict[str, list[dict[str, Any]]]
        if filters.trace_id:
            found = {self.resolve(filters.trace_id): []}
        elif filters.log_text and self.es is not None:
            found = {tid: [] for tid in self._log_search(filters.log_text)}
        else:
            found = self._traces_between(since, until, filters.service, MAX_TRACES)
        pages = []
        for trace_id, spans in found.items():
            spans = spans or self.spans(trace_id)
            summary = _summary(trace_id, spans)
            if summary and _matches(summary, spans, filters, since, until):
                pages.append(summary)
        pages.sort(key=lambda t: (t["start_ns"], t["trace_id"]), reverse=True)
        return pages[:limit]

    def _log_search(self, text: str) -> list[str]:
        assert self.es is not None
        try:
            client = es_client(self.es)
        except GlmtraceError as exc:
            raise QueryError(str(exc)) from None
        try:
            reply = client.search(
                index=LOG_INDEX,
                query={"match_phrase": {"message": text}},
                size=200,
                source=[ecs.TRACE_ID],
                ignore_unavailable=True,
                allow_no_indices=True,
            )
        except Exception as exc:  # the client's many error types: one line for the page
            raise QueryError(f"Elasticsearch search failed: {type(exc).__name__}") from None
        finally:
            client.close()
        ids = []
        for hit in reply["hits"]["hits"]:
            source = hit.get("_source", {})
            tid = source.get(ecs.TRACE_ID) or source.get("trace", {}).get("id")
            if tid and tid not in ids:
                ids.append(tid)
        return ids

    # ------------------------------------------------------------------ one trace

    def resolve(self, text: str) -> str:
        tid = text.strip().lower()
        if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
            raise NotFound(f"{text!r}: with Jaeger, give the full 32-character trace id")
        return tid

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            cached = self._cache.get(trace_id)
            if cached and time.monotonic() - cached[0] < _CACHE_S:
                return cached[1]
        try:
            spans: list[dict[str, Any]] = [dict(row) for row in jaeger_trace(self.jaeger, trace_id)]
        except RemoteError as exc:
            raise QueryError(str(exc)) from None
        if not spans:
            raise NotFound(f"no trace {trace_id} in Jaeger")
        spans.sort(key=lambda s: s["start_ns"])
        with self._lock:
            self._cache[trace_id] = (time.monotonic(), spans)
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return spans

    def briefs(self, trace_id: str) -> Sequence[tuple[Any, ...]]:
        return [trace_view.brief(s) for s in self.spans(trace_id)]

    def logs(self, trace_id: str) -> list[dict[str, Any]]:
        if self.es is None:
            return []
        try:
            return es_logs(self.es, trace_id)
        except GlmtraceError as exc:  # unreachable, refused, or the client not installed
            raise QueryError(str(exc)) from None

    def span(self, trace_id: str, span_id: str) -> dict[str, Any]:
        for span in self.spans(trace_id):
            if span["span_id"] == span_id:
                return dict(span)
        raise NotFound(f"no span {span_id} in trace {trace_id}")

    def linked_from(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    # ------------------------------------------------------------------ metrics

    def newest_ns(self) -> int | None:
        return time.time_ns()

    def oldest_ns(self) -> int | None:
        return time.time_ns() - int(LOOKBACK_S * 1e9)

    def metric_rows(self, since_ns: int, until_ns: int) -> Sequence[Sequence[Any]]:
        rows = []
        for spans in self._traces_between(since_ns, until_ns, None, MAX_TRACES).values():
            for s in spans:
                stage, model = s["attributes"].get(STAGE), s["attributes"].get(MODEL)
                if (stage is not None or model is not None) and since_ns <= s[
                    "start_ns"
                ] <= until_ns:
                    rows.append((s["start_ns"], s["end_ns"], s["status"], stage, model))
        return rows


def _summary(trace_id: str, spans: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not spans:
        return None
    ids = {s["span_id"] for s in spans}
    root = next((s for s in spans if s["parent_span_id"] not in ids), spans[0])
    start = min(s["start_ns"] for s in spans)
    services = sorted({str(s.get("service_name") or "") for s in spans})
    sessions = [s["attributes"][SESSION_ID] for s in spans if SESSION_ID in s["attributes"]]
    return {
        "trace_id": trace_id,
        "root_name": root["name"],
        "service": root.get("service_name"),
        "services": services,
        "start_ns": start,
        "duration_ns": max(s["end_ns"] for s in spans) - start,
        "span_count": len(spans),
        "error_count": sum(s["status"] == "ERROR" for s in spans),
        "log_count": None,
        "session_id": sessions[0] if sessions else None,
    }


def _matches(
    summary: dict[str, Any],
    spans: list[dict[str, Any]],
    f: TraceFilter,
    since_ns: int,
    until_ns: int,
) -> bool:
    duration_ms = summary["duration_ns"] / 1e6
    checks = [
        since_ns <= summary["start_ns"] <= until_ns or bool(f.trace_id or f.log_text),
        f.service is None or f.service in summary["services"],
        f.name is None
        or any(f.name in s["name"] or f.name in str(s["attributes"].get(STAGE, "")) for s in spans),
        f.status is None
        or (f.status == "error") == (summary["error_count"] > 0)
        or f.status not in ("error", "ok"),
        f.session is None or any(s["attributes"].get(SESSION_ID) == f.session for s in spans),
        f.min_ms is None or duration_ms >= f.min_ms,
        f.max_ms is None or duration_ms <= f.max_ms,
    ]
    return all(checks)
