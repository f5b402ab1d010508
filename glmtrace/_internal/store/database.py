"""The embedded default: one SQLite file holding spans and log records.

Several processes (workers, ranks) may write at once: WAL journaling plus retries on a busy
file serialise their writers. Connections never cross a fork (see :mod:`.fork_safety`).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from .. import repair
from ..export.rows import SpanRow
from ..forks import after_fork_in_child
from ..guard import warn_once
from ..logs.ecs import EcsDocument
from ..stats import STATS
from . import fork_safety
from .rows import SPAN_COLUMNS, encoded, log_values, span_row, span_values

R = TypeVar("R")

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


_SPAN_INSERT = (
    f"INSERT INTO spans ({','.join(SPAN_COLUMNS)}) VALUES ({','.join('?' * len(SPAN_COLUMNS))})"
    " ON CONFLICT (trace_id, span_id) DO NOTHING"
)
_LOG_INSERT = "INSERT INTO logs VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (log_id) DO NOTHING"
# How long a call waits for other processes' writers before it gives up (the batch is dropped).
WAIT_S = 30.0


class Store:
    """Reads and writes one glmtrace SQLite file.

    One connection per store and process, used under the process-wide lock of
    :mod:`.fork_safety`, which closes it around every ``fork()``: a child never inherits a
    connection or SQLite's lock bookkeeping for it.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._ready = False  # the connection made sure the tables exist

    # ------------------------------------------------------------------ connections

    def _connection(self, create: bool) -> sqlite3.Connection:
        """The open connection, opening it first; the caller holds the process lock."""
        if fork_safety.unusable():
            raise StoreError(
                f"this process was forked while its parent was writing {self.path}; "
                "its spans and logs cannot be stored"
            )
        if self._conn is None:
            self._prepare_path(create)
            self._conn = fork_safety.connect(self, self.path)
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: the store stays
            # consistent through a crash and only a power cut can lose the last commits.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._ready = False
        if create and not self._ready:
            _initialise(self._conn)
            self._ready = True
        return self._conn

    def _prepare_path(self, create: bool) -> None:
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory; GLMTRACE_STORE must name a file")
        if self.path.exists():
            return
        if not create:
            raise StoreError(f"no glmtrace store at {self.path} (run a traced program first)")
        # Spans and logs can hold anything the program saw: readable by its owner only.
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # -wal/-shm copy it
        except OSError as exc:
            raise StoreError(f"cannot create the glmtrace store {self.path}: {exc}") from None

    def forget_connection(self) -> sqlite3.Connection | None:
        """Let go of the connection (the process lock is held); it is returned, not closed."""
        conn, self._conn = self._conn, None
        return conn

    def _run(self, create: bool, work: Callable[[sqlite3.Connection], R]) -> R:
        """``work(conn)`` under the process lock, retried while other processes hold the file.

        SQLite's own busy wait is kept short and the lock is let go between tries, so a
        ``fork()`` waiting for the lock is held up by one short call, not by a queue of writers.
        """
        deadline = time.monotonic() + WAIT_S
        while True:
            with fork_safety.lock():
                try:
                    return work(self._connection(create))
                except sqlite3.OperationalError as exc:
                    if self._conn is not None and self._conn.in_transaction:
                        self._conn.rollback()
                    if not _busy(exc) or time.monotonic() > deadline:
                        raise
            time.sleep(random.uniform(0.002, 0.02))

    def prepare(self) -> None:
        """Create the file and its tables now (for a writer outside this class); raises
        :class:`StoreError` or ``sqlite3.Error`` when it cannot."""
        self._run(True, lambda conn: None)

    def close(self) -> None:
        with fork_safety.lock():
            conn = self.forget_connection()
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ writes

    def write_spans(self, rows: Sequence[SpanRow]) -> int:
        """Store ``rows`` in one transaction; the number that could not be stored.

        A value that cannot be encoded is repaired; a row that still fails costs only itself.
        """
        return self._insert(_SPAN_INSERT, [encoded(span_values, r) for r in rows], "span")

    def write_logs(self, documents: Sequence[dict[str, Any]]) -> int:
        """Store ECS log documents like :meth:`write_spans`; the number not stored."""
        return self._insert(
            _LOG_INSERT, [encoded(log_values, cast(EcsDocument, d)) for d in documents], "log"
        )

    def _insert(self, sql: str, rows: list[tuple[Any, ...] | None], what: str) -> int:
        good = [r for r in rows if r is not None]
        lost = len(rows) - len(good)
        if lost:
            warn_once(f"store-encode:{what}", "glmtrace could not encode a %s for the store", what)
        if not good:
            return lost
        try:
            self._run(True, lambda conn: _transaction(conn, lambda: conn.executemany(sql, good)))
            return lost
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
                raise
        # One row the database refuses: store the others, one statement each.
        failed = self._run(True, lambda conn: _transaction(conn, lambda: _each(conn, sql, good)))
        if failed:
            warn_once(f"store-insert:{what}", "glmtrace's store refused a %s", what)
        return lost + failed

    def record_run(self, service_name: str, stats: dict[str, dict[str, int]]) -> None:
        """Keep what this process counted since it last recorded, for ``glmtrace doctor``.

        ``stats`` is the process's running total: a process that initialises twice, or a forked
        child whose counters began at its parent's, records only its own share.
        """
        global _recorded
        share = _difference(stats, _recorded)
        row = (time.time_ns(), os.getpid(), repair.text(service_name), json.dumps(share))
        sql = "INSERT INTO runs VALUES (?,?,?,?)"
        self._run(True, lambda conn: _transaction(conn, lambda: conn.execute(sql, row)))
        _recorded = {sink: dict(events) for sink, events in stats.items()}

    def recent_runs(self, limit: int = 5) -> list[tuple[int, int, str, dict[str, dict[str, int]]]]:
        """The last ``limit`` recorded runs: (ended_ns, pid, service, stats), newest first."""
        rows = self._query(
            "SELECT ended_ns, pid, service_name, stats FROM runs ORDER BY ended_ns DESC LIMIT ?",
            (limit,),
        )
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def mark_pushed(self, destination: str, kind: str, ids: Iterable[str]) -> None:
        values = [(destination, kind, i) for i in ids]
        sql = "INSERT OR IGNORE INTO pushed VALUES (?,?,?)"
        self._run(True, lambda conn: _transaction(conn, lambda: conn.executemany(sql, values)))

    # ------------------------------------------------------------------ reads

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one query, fetched under the lock (no read left open across a fork)."""
        try:
            return self._run(False, lambda conn: conn.execute(sql, params).fetchall())
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
                raise StoreError(f"{self.path} is busy: {exc}") from None
            raise StoreError(f"{self.path} is not a glmtrace store: {exc}") from None

    def resolve_trace_id(self, prefix: str) -> str:
        """Full trace id for a full id or a unique prefix of 8+ hex characters."""
        text = prefix.strip().lower()
        if len(text) < 8 or any(c not in "0123456789abcdef" for c in text):
            raise StoreError(f"{prefix!r} is not a trace id (give 8 to 32 hex characters)")
        rows = self._query(
            "SELECT DISTINCT trace_id FROM spans WHERE trace_id LIKE ? LIMIT 2", (text + "%",)
        )
        if not rows:
            raise StoreError(f"no trace {prefix} in {self.path}")
        if len(rows) > 1:
            raise StoreError(f"trace id prefix {prefix} is ambiguous; give more characters")
        return str(rows[0][0])

    def spans(self, trace_id: str) -> list[SpanRow]:
        rows = self._query(
            f"SELECT {','.join(SPAN_COLUMNS)} FROM spans WHERE trace_id = ? ORDER BY start_ns",
            (trace_id,),
        )
        return [span_row(row) for row in rows]

    def logs(self, trace_id: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT document FROM logs WHERE trace_id = ? ORDER BY timestamp_ns", (trace_id,)
        )
        return [json.loads(row[0]) for row in rows]

    def recent(self, limit: int) -> list[TraceSummary]:
        rows = self._query(
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
        return [TraceSummary(r[0], r[1], r[2], r[3], r[4], r[5] or 0) for r in rows]

    def all_spans(self, after_ns: int = 0) -> list[SpanRow]:
        rows = self._query(
            f"SELECT {','.join(SPAN_COLUMNS)} FROM spans WHERE start_ns >= ? ORDER BY start_ns",
            (after_ns,),
        )
        return [span_row(row) for row in rows]

    def all_logs(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT document FROM logs ORDER BY timestamp_ns")
        return [json.loads(row[0]) for row in rows]

    def pushed(self, destination: str, kind: str) -> set[str]:
        rows = self._query(
            "SELECT item_id FROM pushed WHERE destination = ? AND kind = ?", (destination, kind)
        )
        return {row[0] for row in rows}


# What this process's record_run calls have recorded so far; a forked child starts from the
# counters it inherited, which are its parent's to record.
_recorded: dict[str, dict[str, int]] = {}


def _after_fork_in_child() -> None:
    global _recorded
    _recorded = STATS.snapshot()


after_fork_in_child(_after_fork_in_child)


def _difference(
    now: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    share: dict[str, dict[str, int]] = {}
    for sink, events in now.items():
        counts = {k: n - before.get(sink, {}).get(k, 0) for k, n in events.items()}
        counts = {k: n for k, n in counts.items() if n > 0}
        if counts:
            share[sink] = counts
    return share


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _transaction(conn: sqlite3.Connection, work: Callable[[], R]) -> R:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return result


def _each(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    """Insert ``rows`` one statement each; the number refused (a busy file still raises)."""
    failed = 0
    for row in rows:
        try:
            conn.execute(sql, row)
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
                raise
            failed += 1
    return failed


def _initialise(conn: sqlite3.Connection) -> None:
    """Switch to WAL and create the tables.

    Changing the journal mode needs the database to itself, and SQLite reports "database is
    locked" at once instead of calling its busy handler; :meth:`Store._run` retries it.
    """
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_SCHEMA)
