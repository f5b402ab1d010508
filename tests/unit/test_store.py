"""The local store takes writers from several processes at once, from the very first write."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from glmtrace._internal.store import Store


def _write(path: Path, worker: int) -> None:
    store = Store(path)
    for i in range(20):
        store.write_logs(
            [
                {
                    "log.id": f"{worker}-{i}",
                    "timestamp_ns": i,
                    "log.level": "INFO",
                    "log.logger": "w",
                    "message": f"worker {worker} line {i}",
                }
            ]
        )


def test_concurrent_first_writers_lose_nothing(tmp_path: Path) -> None:
    """Six processes creating and writing one new store together: every record lands."""
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = tmp_path / f"store-{attempt}.db"
        workers = [ctx.Process(target=_write, args=(path, w)) for w in range(6)]
        for proc in workers:
            proc.start()
        for proc in workers:
            proc.join(60)
        assert [proc.exitcode for proc in workers] == [0] * 6
        assert len(Store(path).all_logs()) == 6 * 20
