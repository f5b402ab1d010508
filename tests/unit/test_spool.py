"""The disk spool: ordered replay, a bounded size with counted drops, crash and fork safety."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from glmtrace._internal.logs.spool import OPEN, SEALED, Spool


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
        "import sys; from pathlib import Path; from glmtrace._internal.logs.spool import Spool;"
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


ROUNDS, SEGMENTS = 100, 10


def _claim_racer(folder: str, barrier: Any, results: Any) -> None:
    """A second process's replayer: each round, claim and read segments until none is left."""
    spool = Spool(Path(folder), 10**7)
    for _ in range(ROUNDS):
        barrier.wait(60)
        got: list[str] = []
        while (segment := spool.claim_oldest()) is not None:
            got.extend(d["log.id"] for d in spool.read(segment))
            spool.done(segment)
        results.put(got)


def test_claim_is_exclusive_between_processes(tmp_path: Path) -> None:
    """Two processes racing to claim the same sealed segments: every segment is replayed by
    exactly one of them, round after round (the claim is an atomic rename)."""
    ctx = multiprocessing.get_context("spawn")  # no fork of pytest's threads
    barrier, results = ctx.Barrier(3), ctx.Queue()
    racers = [
        ctx.Process(target=_claim_racer, args=(str(tmp_path), barrier, results)) for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    try:
        for r in range(ROUNDS):
            expected = []
            for i in range(SEGMENTS):  # sealed by a writer that is gone; same age order
                name = f"{r * SEGMENTS + i:020d}-999999{SEALED}"
                (tmp_path / name).write_bytes(json.dumps({"log.id": name}).encode() + b"\n")
                expected.append(name)
            barrier.wait(60)  # both racers start claiming together
            first, second = results.get(timeout=60), results.get(timeout=60)
            assert not set(first) & set(second), f"round {r}: claimed twice"
            assert sorted(first + second) == expected, f"round {r}: lost or repeated"
        assert list(tmp_path.iterdir()) == []
    finally:
        barrier.abort()  # a failed round: release the racers instead of waiting out 60 s
        for racer in racers:
            racer.join(60)
            if racer.is_alive():
                racer.kill()
    assert [racer.exitcode for racer in racers] == [0, 0]


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


def test_one_batch_bigger_than_the_bound_is_cut_to_fit(tmp_path: Path) -> None:
    """spool_max_bytes holds even for a single batch larger than the whole bound."""
    dropped: list[int] = []
    spool = Spool(tmp_path, 200_000, on_drop=dropped.append)
    written = spool.append(docs(0, 1000, pad=900))
    assert spool.size_bytes() <= 200_000
    assert written + sum(dropped) == 1000 and 0 < written < 1000
    assert drain(spool) == [f"id-{i}" for i in range(written)]


def test_bad_lines_are_quarantined_and_counted(tmp_path: Path) -> None:
    """Lines that are not replayable documents go to quarantine.bad; the rest replay."""
    bad: list[int] = []
    spool = Spool(tmp_path, 10_000_000, on_bad=bad.append, valid=lambda d: "log.id" in d)
    spool.append(docs(0, 2))
    spool.close()
    (segment,) = tmp_path.iterdir()
    with open(segment, "ab") as f:
        f.write(b'{"message": "no id"}\nnot json\n[1, 2]\n{"log.id": "id-2"}\n{"log.id": "to')
    assert drain(spool) == ["id-0", "id-1", "id-2"]
    assert bad == [4]
    quarantined = (tmp_path / "quarantine.bad").read_bytes().splitlines()
    assert quarantined == [b'{"message": "no id"}', b"not json", b"[1, 2]", b'{"log.id": "to']


def test_unserialisable_values_are_repaired_not_fatal(tmp_path: Path) -> None:
    """A lone surrogate or a 5000-digit integer costs neither the batch nor the process."""
    spool = Spool(tmp_path, 10_000_000)
    batch = docs(0, 3)
    batch[1]["message"] = "bad \udcff name"
    batch[2]["labels.n"] = 10**5000
    assert spool.append(batch) == 3
    segment = spool.claim_oldest()
    assert segment is not None
    back = spool.read(segment)
    assert [d["log.id"] for d in back] == ["id-0", "id-1", "id-2"]
    assert back[1]["message"] == "bad \ufffd name"
    assert isinstance(back[2]["labels.n"], str) and back[2]["labels.n"] == "1" + "0" * 5000


def test_files_are_private_to_the_user(tmp_path: Path) -> None:
    """Spooled log lines are readable by their owner only (0600 files, 0700 folder)."""
    folder = tmp_path / "spool"
    spool = Spool(folder, 10_000_000)
    old = os.umask(0o022)
    try:
        spool.append(docs(0, 1))
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert [p.stat().st_mode & 0o777 for p in folder.iterdir()] == [0o600]


FULL_DISK = """
import json, os, resource, signal, sys
from pathlib import Path
from glmtrace._internal.logs.spool import Spool

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
dropped = 0
spool = Spool(Path(sys.argv[1]), 10**9)
for b in range(40):
    batch = [{"log.id": f"id-{b}-{i}", "message": "x" * 40} for i in range(30)]
    try:
        spool.append(batch)
    except OSError:
        dropped += len(batch)
print(json.dumps({"dropped": dropped}))
"""


def test_full_disk_leaves_no_torn_line_and_counts_exactly(tmp_path: Path) -> None:
    """A batch that hits a full disk is all dropped (and counted) or all written, never torn."""
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    dropped = json.loads(out.stdout)["dropped"]
    assert dropped > 0
    data = b"".join(p.read_bytes() for p in sorted(tmp_path.iterdir()))
    lines = data.splitlines()
    assert data.endswith(b"\n") and all(json.loads(line) for line in lines)
    assert len(lines) + dropped == 40 * 30


def test_a_segment_read_twice_quarantines_its_bad_lines_once(tmp_path: Path) -> None:
    """A replay resumed after an outage reads its segment again: bad lines count once."""
    bad: list[int] = []
    spool = Spool(tmp_path, 10_000_000, on_bad=bad.append)
    spool.append(docs(0, 2))
    spool.close()
    (segment,) = tmp_path.iterdir()
    with open(segment, "ab") as f:
        f.write(b"not json\n")
    claimed = spool.claim_oldest()
    assert claimed is not None
    assert len(spool.read(claimed)) == 2
    assert len(spool.read(claimed)) == 2
    assert bad == [1]
    assert (tmp_path / "quarantine.bad").read_bytes() == b"not json\n"
