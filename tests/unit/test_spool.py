"""The disk spool: ordered replay, a bounded size with counted drops, crash and fork safety."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from glmtrace._internal.spool import OPEN, SEALED, Spool


def docs(start: int, n: int, pad: int = 0) -> list[dict[str, Any]]:
    return [{"log.id": f"id-{i}", "message": "x" * pad} for i in range(start, start + n)]


def drain(spool: Spool) -> list[str]:
    ids: list[str] = []
    while (segment := spool.claim_oldest()) is not None:
        ids.extend(d["log.id"] for d in spool.read(segment))
        spool.done(segment)
    return ids


def test_replays_everything_in_order(tmp_path: Path) -> None:
    """Documents come back in the order they were appended, across segment rotations."""
    spool = Spool(tmp_path, 10_000_000, segment_bytes=500)
    for start in range(0, 100, 10):
        spool.append(docs(start, 10))
    assert len(list(tmp_path.iterdir())) > 3  # rotated
    assert drain(spool) == [f"id-{i}" for i in range(100)]
    assert spool.is_empty()
    assert list(tmp_path.iterdir()) == []


def test_appends_after_a_claim_go_to_a_new_segment(tmp_path: Path) -> None:
    """Claiming seals the open segment; later appends are replayed after it."""
    spool = Spool(tmp_path, 10_000_000)
    spool.append(docs(0, 3))
    first = spool.claim_oldest()
    assert first is not None
    spool.append(docs(3, 2))
    assert [d["log.id"] for d in spool.read(first)] == ["id-0", "id-1", "id-2"]
    spool.done(first)
    assert drain(spool) == ["id-3", "id-4"]


def test_unfinished_claim_is_offered_again(tmp_path: Path) -> None:
    """A segment claimed but not done (replay failed) is claimed again next time."""
    spool = Spool(tmp_path, 10_000_000)
    spool.append(docs(0, 2))
    first = spool.claim_oldest()
    assert spool.claim_oldest() == first
    assert not spool.is_empty()


def test_bound_drops_oldest_and_counts_them(tmp_path: Path) -> None:
    """Past max_bytes the oldest segments are deleted and their documents counted."""
    dropped: list[int] = []
    spool = Spool(tmp_path, 20_000, segment_bytes=4_000, on_drop=dropped.append)
    for start in range(0, 200, 10):
        spool.append(docs(start, 10, pad=100))
    assert spool.size_bytes() <= 20_000
    kept = drain(spool)
    assert sum(dropped) + len(kept) == 200
    assert sum(dropped) > 0
    assert kept == [f"id-{i}" for i in range(200 - len(kept), 200)]  # the newest survive


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    """A crash mid-write leaves a partial line; the complete documents still replay."""
    spool = Spool(tmp_path, 10_000_000)
    spool.append(docs(0, 2))
    spool.close()
    (segment,) = tmp_path.iterdir()
    with open(segment, "ab") as f:
        f.write(b'{"log.id": "torn')
    assert drain(spool) == ["id-0", "id-1"]


def test_segments_of_a_dead_process_are_adopted(tmp_path: Path) -> None:
    """An open segment left by a process that died is replayed by the next one."""
    code = (
        "import sys; from pathlib import Path; from glmtrace._internal.spool import Spool;"
        f"s = Spool(Path({str(tmp_path)!r}), 10**7); s.append([{{'log.id': 'from-child'}}])"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    (left,) = tmp_path.iterdir()
    assert left.name.endswith(OPEN)
    spool = Spool(tmp_path, 10_000_000)
    assert not spool.is_empty()
    assert drain(spool) == ["from-child"]


def test_open_segment_of_a_live_process_is_left_alone(tmp_path: Path) -> None:
    """Another live process's open segment is neither claimed nor counted as our backlog."""
    other = tmp_path / f"{1:020d}-{os.getppid()}{OPEN}"
    other.write_bytes(b'{"log.id":"theirs"}\n')
    spool = Spool(tmp_path, 10_000_000)
    assert spool.is_empty()
    assert spool.claim_oldest() is None
    assert other.exists()


def test_claim_is_exclusive_between_processes(tmp_path: Path) -> None:
    """A sealed segment is claimed by exactly one spool instance (atomic rename)."""
    sealed = tmp_path / f"{1:020d}-999999{SEALED}"
    sealed.write_bytes(b'{"log.id":"one"}\n')
    a, b = Spool(tmp_path, 10**7), Spool(tmp_path, 10**7)
    got_a = a.claim_oldest()
    assert got_a is not None
    # b runs in the same process here, so it sees a's claim as its own; a different pid
    # would not: check the name carries the claimer's pid.
    assert got_a.name.endswith(f"{SEALED}.{os.getpid()}")
    a.done(got_a)
    assert b.claim_oldest() is None


def test_child_after_fork_writes_its_own_segment(tmp_path: Path) -> None:
    """After fork the child never appends to the parent's open segment."""
    spool = Spool(tmp_path, 10**7)
    spool.append(docs(0, 1))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            spool.append([{"log.id": "child"}])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2
    assert any(n.endswith(f"-{os.getpid()}{OPEN}") for n in names)
    assert sorted(drain(spool)) == ["child", "id-0"]
