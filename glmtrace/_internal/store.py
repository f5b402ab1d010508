"""The embedded default: one SQLite file holding spans and log records.

Several processes (workers, ranks) may write at once: WAL journaling plus a busy timeout
serialise their writers, and every connection belongs to one process (reopened after fork).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind TEXT,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    service_name TEXT,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    links TEXT NOT NULL,
    resource TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_start ON spans (start_ns);
CREATE TABLE IF NOT EXISTS logs (
    log_id TEXT PRIMARY KEY,
    timestamp_ns INTEGER NOT NULL,
    trace_id TEXT,
    span_id TEXT,
    level TEXT NOT NULL,
    logger TEXT NOT NULL,
    message TEXT NOT NULL,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_trace ON logs (trace_id, timestamp_ns);
CREATE TABLE IF NOT EXISTS pushed (
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    item_id TEXT NOT NULL,
    PRIMARY KEY (destination, kind, item_id)
);
CREATE TABLE IF NOT EXISTS runs (
    ended_ns INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    service_name TEXT NOT NULL,
    stats TEXT NOT NULL
);
"""

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


@dataclass(frozen=True)
class TraceSummary:
    """One line of ``glmtrace ls``."""

    trace_id: str
    root_name: str
    start_ns: int
    duration_ns: int
    span_count: int
    error_count: int


class StoreError(Exception):
    """The store file is missing, unreadable, or does not hold what was asked for."""


class Store:
    """Reads and writes one glmtrace SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._pid = os.getpid()

    # ------------------------------------------------------------------ connections

    def _connect(self, create: bool) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # forked: never share a connection with the parent
            self._local = threading.local()
            self._pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise StoreError(f"no glmtrace store at {self.path} (run a traced program first)")
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        if create:
            _initialise(conn)
        self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------------ writes

    def write_spans(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        conn = self._connect(create=True)
        values = [
            tuple(
                json.dumps(r[c]) if c in ("attributes", "events", "links", "resource") else r[c]
                for c in SPAN_COLUMNS
            )
            for r in rows
        ]
        marks = ",".join("?" * len(SPAN_COLUMNS))
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT OR IGNORE INTO spans ({','.join(SPAN_COLUMNS)}) VALUES ({marks})", values
            )

    def write_logs(self, documents: Sequence[dict[str, Any]]) -> None:
        if not documents:
            return
        conn = self._connect(create=True)
        values = [
            (
                d["log.id"],
                d["timestamp_ns"],
                d.get("trace.id"),
                d.get("span.id"),
                d["log.level"],
                d["log.logger"],
                d["message"],
                json.dumps(d, default=str),
            )
            for d in documents
        ]
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO logs VALUES (?,?,?,?,?,?,?,?)", values)

    def record_run(self, service_name: str, stats: dict[str, dict[str, int]]) -> None:
        """Keep one process's final counters, so ``glmtrace doctor`` can show them later."""
        conn = self._connect(create=True)
        with conn:
            conn.execute(
                "INSERT INTO runs VALUES (?,?,?,?)",
                (time.time_ns(), os.getpid(), service_name, json.dumps(stats)),
            )

    def recent_runs(self, limit: int = 5) -> list[tuple[int, int, str, dict[str, dict[str, int]]]]:
        """The last ``limit`` recorded runs: (ended_ns, pid, service, stats), newest first."""
        cur = self._read().execute(
            "SELECT ended_ns, pid, service_name, stats FROM runs ORDER BY ended_ns DESC LIMIT ?",
            (limit,),
        )
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in cur]

    def mark_pushed(self, destination: str, kind: str, ids: Iterable[str]) -> None:
        conn = self._connect(create=True)
        with conn:
            conn.executemany(
                "INSERT OR IGNORE INTO pushed VALUES (?,?,?)",
                [(destination, kind, i) for i in ids],
            )

    # ------------------------------------------------------------------ reads

    def _read(self) -> sqlite3.Connection:
        conn = self._connect(create=False)
        try:
            conn.execute("SELECT 1 FROM spans LIMIT 1")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a glmtrace store: {exc}") from None
        return conn

    def resolve_trace_id(self, prefix: str) -> str:
        """Full trace id for a full id or a unique prefix of 8+ hex characters."""
        text = prefix.strip().lower()
        if len(text) < 8 or any(c not in "0123456789abcdef" for c in text):
            raise StoreError(f"{prefix!r} is not a trace id (give 8 to 32 hex characters)")
        rows = (
            self._read()
            .execute(
                "SELECT DISTINCT trace_id FROM spans WHERE trace_id LIKE ? LIMIT 2", (text + "%",)
            )
            .fetchall()
        )
        if not rows:
            raise StoreError(f"no trace {prefix} in {self.path}")
        if len(rows) > 1:
            raise StoreError(f"trace id prefix {prefix} is ambiguous; give more characters")
        return str(rows[0][0])

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        cur = self._read().execute(
            f"SELECT {','.join(SPAN_COLUMNS)} FROM spans WHERE trace_id = ? ORDER BY start_ns",
            (trace_id,),
        )
        return [_span_row(row) for row in cur]

    def logs(self, trace_id: str) -> list[dict[str, Any]]:
        cur = self._read().execute(
            "SELECT document FROM logs WHERE trace_id = ? ORDER BY timestamp_ns", (trace_id,)
        )
        return [json.loads(row[0]) for row in cur]

    def recent(self, limit: int) -> list[TraceSummary]:
        cur = self._read().execute(
            """
            SELECT trace_id,
                   (SELECT name FROM spans r WHERE r.trace_id = s.trace_id
                    ORDER BY (r.parent_span_id IS NOT NULL), r.start_ns LIMIT 1),
                   MIN(start_ns), MAX(end_ns) - MIN(start_ns), COUNT(*),
                   SUM(status = 'ERROR')
            FROM spans s GROUP BY trace_id ORDER BY MIN(start_ns) DESC LIMIT ?
            """,
            (limit,),
        )
        return [TraceSummary(r[0], r[1], r[2], r[3], r[4], r[5] or 0) for r in cur]

    def all_spans(self, after_ns: int = 0) -> list[dict[str, Any]]:
        cur = self._read().execute(
            f"SELECT {','.join(SPAN_COLUMNS)} FROM spans WHERE start_ns >= ? ORDER BY start_ns",
            (after_ns,),
        )
        return [_span_row(row) for row in cur]

    def all_logs(self) -> list[dict[str, Any]]:
        cur = self._read().execute("SELECT document FROM logs ORDER BY timestamp_ns")
        return [json.loads(row[0]) for row in cur]

    def pushed(self, destination: str, kind: str) -> set[str]:
        cur = self._read().execute(
            "SELECT item_id FROM pushed WHERE destination = ? AND kind = ?", (destination, kind)
        )
        return {row[0] for row in cur}


_init_lock = threading.Lock()


def _after_fork() -> None:
    global _init_lock
    _init_lock = threading.Lock()  # the parent's may be held by a thread the child lacks


os.register_at_fork(after_in_child=_after_fork)


def _initialise(conn: sqlite3.Connection, deadline_s: float = 30.0) -> None:
    """Switch to WAL and create the tables, waiting out other writers doing the same.

    Changing the journal mode needs the database to itself, and SQLite reports "database is
    locked" at once instead of calling its busy handler; exporter threads and worker
    processes all open the store together, so wait and retry.
    """
    deadline = time.monotonic() + deadline_s
    with _init_lock:
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _span_row(row: Sequence[Any]) -> dict[str, Any]:
    span = dict(zip(SPAN_COLUMNS, row, strict=True))
    for key in ("attributes", "events", "links", "resource"):
        span[key] = json.loads(span[key])
    return span
