"""An append-only disk spool for log batches that could not be shipped.

Layout: one folder per sink holding segment files of newline-delimited JSON documents::

    <ns>-<pid>.open          the segment this process is appending to
    <ns>-<pid>.seg           a sealed segment, waiting to be replayed
    <ns>-<pid>.seg.<pid2>    a sealed segment claimed by process <pid2>'s replayer

Names start with the creation time in nanoseconds, so sorting them replays in order. Several
processes may share the folder (workers of one job): a segment is claimed with an atomic
rename, so it is replayed by one process only, and the files of a process that died are
adopted by the next one that opens the spool. Past ``max_bytes`` the oldest segments are
deleted and their documents counted as dropped; a batch that still does not fit is cut.

A batch is appended whole or not at all (a failed write is truncated away), so a full disk
leaves no torn line and the caller's count of what was dropped is what is missing. A line
that cannot be replayed (not JSON, not a document the sink can ship) is moved to
``quarantine.bad`` beside the segments and counted, never fatal. Files are private to the
user (0600, folders 0700): log lines carry whatever the program logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..forks import after_fork_in_child
from ..repair import dumps

OPEN, SEALED = ".open", ".seg"
QUARANTINE = "quarantine.bad"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(path: Path) -> int | None:
    """The pid that writes (``.open``) or replays (``.seg.<pid>``) ``path``, else None."""
    try:
        if path.name.endswith(OPEN):
            return int(path.name[: -len(OPEN)].rsplit("-", 1)[1])
        if SEALED + "." in path.name:
            return int(path.name.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return None
    return None


class Spool:
    """Segments of JSON documents on disk, bounded by ``max_bytes`` in total.

    ``on_drop(n)`` is told how many documents were deleted to respect the bound,
    ``on_bad(n)`` how many lines were quarantined; ``valid(doc)`` says whether a document read
    back can be replayed. All methods are thread-safe; none raises for I/O errors the caller
    could not act on except :meth:`append`, whose caller counts the batch as dropped.
    """

    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        *,
        segment_bytes: int = 8 * 1024 * 1024,
        on_drop: Callable[[int], None] = lambda n: None,
        on_bad: Callable[[int], None] = lambda n: None,
        valid: Callable[[Any], bool] = lambda doc: isinstance(doc, dict),
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        # A segment never exceeds a quarter of the bound, so dropping whole segments stays
        # a fine-grained way of respecting it.
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 4))
        self._on_drop = on_drop
        self._on_bad = on_bad
        self._valid = valid
        self._lock = threading.Lock()
        self._reset()
        # A lock held by another thread at fork time would stay locked in the child forever.
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            # The parent owns its open segment; the child starts one of its own.
            self._reset()

    # ------------------------------------------------------------------ writing

    def append(self, documents: list[dict[str, Any]]) -> int:
        """Write ``documents`` to the open segment; returns how many were written.

        Those that do not fit under ``max_bytes`` (after the oldest segments are dropped) are
        reported to ``on_drop``. Raises OSError with nothing written (the caller counts the
        batch as dropped).
        """
        lines = [dumps(d) + b"\n" for d in documents]
        if not lines:
            return 0
        with self._lock:
            self._check_fork()
            room = self._make_room(sum(map(len, lines)))
            kept, size = 0, 0
            while kept < len(lines) and size + len(lines[kept]) <= room:
                size += len(lines[kept])
                kept += 1
            self._on_drop(len(lines) - kept)
            if not kept:
                return 0
            if self._fd is None or (self._size and self._size + size > self.segment_bytes):
                self._seal_locked()
                self._open_locked()
            assert self._fd is not None
            self._write_locked(b"".join(lines[:kept]))
        return kept

    def _write_locked(self, data: bytes) -> None:
        """All of ``data`` or nothing: a short write (disk full) is truncated away."""
        assert self._fd is not None
        view, written = memoryview(data), 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        # Written straight to the file (no user-space buffer): a crash of the process does
        # not take spooled records with it.
        self._size += len(data)

    def _open_locked(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._path = self.folder / f"{time.time_ns():020d}-{self._pid}{OPEN}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0

    def _seal_locked(self) -> None:
        if self._fd is None or self._path is None:
            return
        os.close(self._fd)
        if self._size:
            os.replace(self._path, self._path.with_suffix(SEALED))
        else:
            self._path.unlink(missing_ok=True)
        self._fd, self._path, self._size = None, None, 0

    def _make_room(self, incoming: int) -> int:
        """Drop the oldest segments until ``incoming`` bytes fit; the bytes that now fit."""
        total = self.size_bytes()
        for path in self._segments():
            if total + incoming <= self.max_bytes:
                break
            # Only unclaimed sealed segments and our own open one: another process may be
            # appending to its open segment or replaying a claimed one right now.
            if path != self._path and not path.name.endswith(SEALED):
                continue
            if path == self._path:  # the open segment is the oldest left: start afresh
                self._seal_locked()
                path = path.with_suffix(SEALED)
            size, count = _size_and_lines(path)
            try:
                path.unlink()
            except FileNotFoundError:  # another process replayed or dropped it meanwhile
                continue
            total -= size
            self._on_drop(count)
        return max(0, self.max_bytes - total)

    # ------------------------------------------------------------------ replaying

    def claim_oldest(self) -> Path | None:
        """Take the oldest segment for replay (sealing ours if it is the only one left)."""
        with self._lock:
            self._check_fork()
            self._adopt_orphans()
            for _ in range(2):
                for path in self._segments():
                    if path.name.endswith(SEALED):
                        claimed = path.with_name(f"{path.name}.{self._pid}")
                        try:
                            os.replace(path, claimed)
                        except FileNotFoundError:  # claimed by another process first
                            continue
                        return claimed
                    if path.name.endswith(f"{SEALED}.{self._pid}"):
                        return path  # claimed earlier by us, not finished
                if self._path is None or not self._size:
                    return None
                self._seal_locked()
            return None

    def _adopt_orphans(self) -> None:
        for path in self._segments():
            if not _orphan(path):
                continue
            target = path.with_name(path.name.split(".", 1)[0] + SEALED)
            with contextlib.suppress(FileNotFoundError):  # adopted by another process
                os.replace(path, target)

    def read(self, segment: Path) -> list[dict[str, Any]]:
        """The documents of a claimed segment; bad lines are moved to the quarantine file."""
        documents: list[dict[str, Any]] = []
        good: list[bytes] = []
        bad: list[bytes] = []
        with open(segment, "rb") as f:
            for line in f:
                line = line if line.endswith(b"\n") else line + b"\n"
                try:
                    doc = json.loads(line)
                except ValueError:  # torn by a crash mid-write, or not JSON at all
                    doc = None
                if doc is not None and self._valid(doc):
                    documents.append(doc)
                    good.append(line)
                else:
                    bad.append(line)
        if bad:
            self._quarantine(bad)
            # Rewritten without them, so that reading it again (a replay resumed after an
            # outage) neither counts nor quarantines them twice.
            rewrite = self.folder / f"rewrite-{os.getpid()}"
            fd = os.open(rewrite, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"".join(good))
            finally:
                os.close(fd)
            os.replace(rewrite, segment)
        return documents

    def _quarantine(self, lines: list[bytes]) -> None:
        self._on_bad(len(lines))
        data = b"".join(lines)
        path = self.folder / QUARANTINE
        try:
            # Kept for a person to look at, within the spool's bound (past it: counted only).
            if self.size_bytes() + _file_size(path) + len(data) > self.max_bytes:
                return
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError:
            return

    @staticmethod
    def done(segment: Path) -> None:
        """Forget a segment whose documents are all shipped."""
        segment.unlink(missing_ok=True)

    # ------------------------------------------------------------------ state

    def _segments(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        return [self.folder / n for n in names if OPEN in n or SEALED in n]

    def size_bytes(self) -> int:
        """Bytes held on disk by every segment in the folder."""
        total = 0
        for path in self._segments():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def is_empty(self) -> bool:
        """True when nothing is waiting that this process would replay.

        Another live process's open or claimed segments do not count: it replays them.
        """
        with self._lock:
            self._check_fork()
            if self._size:
                return False
            mine = f"{SEALED}.{self._pid}"
            return not any(
                p.name.endswith((SEALED, mine)) or (p != self._path and _orphan(p))
                for p in self._segments()
            )

    def close(self) -> None:
        """Seal the open segment so that a later process replays it."""
        with self._lock:
            self._check_fork()
            self._seal_locked()


def _orphan(path: Path) -> bool:
    owner = _owner(path)
    return owner is not None and not _pid_alive(owner)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _size_and_lines(path: Path) -> tuple[int, int]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, 0
    return len(data), data.count(b"\n")
