"""DataLoader workers and torch.distributed ranks (gloo, 2 processes) join one trace."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import glmtrace
import glmtrace.distributed

torch = pytest.importorskip("torch")


def _rows(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM spans")]
    for row in rows:
        row["attributes"] = json.loads(row["attributes"])
        row["resource"] = json.loads(row["resource"])
    return rows


class Squares(torch.utils.data.Dataset):  # type: ignore[misc]
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> Any:
        with glmtrace.span("load item", {"i": i}):
            return torch.tensor([i * i])


def test_dataloader_workers_join_the_step_trace(local_store: Path) -> None:
    """With num_workers=2, item spans in workers are in the trace of the step."""
    loader = torch.utils.data.DataLoader(
        Squares(), batch_size=2, num_workers=2, worker_init_fn=glmtrace.distributed.worker_init_fn()
    )
    with glmtrace.span("step") as step:
        batches = [b for b in loader]
    del loader
    assert len(batches) == 4
    glmtrace.force_flush()
    rows = _rows(local_store)
    items = [r for r in rows if r["name"] == "load item"]
    workers = [r for r in rows if r["name"] == "torch.dataloader.worker"]
    assert len(items) == 8
    assert len(workers) == 2
    assert {r["trace_id"] for r in items + workers} == {step.trace_id}
    assert {w["parent_span_id"] for w in workers} == {step.span_id}
    assert {i["parent_span_id"] for i in items} == {w["span_id"] for w in workers}
    assert sorted(w["attributes"]["glmtrace.torch.worker.id"] for w in workers) == [0, 1]


def test_user_worker_init_fn_still_runs() -> None:
    """The wrapped worker_init_fn is called with the worker id."""
    seen: list[int] = []
    glmtrace.distributed.worker_init_fn(seen.append)(3)
    assert seen == [3]


def test_distributed_resource_reads_launcher_env() -> None:
    """RANK, LOCAL_RANK and WORLD_SIZE become resource attributes; junk is ignored."""
    env = {"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "GROUP_RANK": "x"}
    assert glmtrace.distributed.distributed_resource(env) == {
        "glmtrace.distributed.rank": 1,
        "glmtrace.distributed.local_rank": 0,
        "glmtrace.distributed.world_size": 2,
    }
    assert glmtrace.distributed.distributed_resource({"RANK": "abc"}) == {}


_RANK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch.distributed as dist
    import glmtrace, glmtrace.distributed
    rank = int(os.environ["RANK"])
    glmtrace.init(service_name="rank%d" % rank, store=sys.argv[1], logs="none")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    glmtrace.distributed.instrument_collectives()
    import torch
    for step in range(3):
        with glmtrace.distributed.share_trace("step", attributes={"step": step}):
            t = torch.ones(4) * (rank + 1)
            dist.all_reduce(t)
            assert t[0].item() == 3
            dist.barrier()
    glmtrace.distributed.uninstrument_collectives()
    assert not hasattr(dist.all_reduce, "__glmtrace_original__")
    dist.destroy_process_group()
    glmtrace.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gloo_two_ranks_one_trace_per_step(tmp_path: Path) -> None:
    """Every rank's step span joins rank 0's trace; collectives are spans under it."""
    store = tmp_path / "glmtrace.db"
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(store)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    rows = _rows(store)
    steps = [r for r in rows if r["name"] == "step"]
    assert len(steps) == 6
    by_step: dict[int, list[dict[str, Any]]] = {}
    for row in steps:
        by_step.setdefault(row["attributes"]["step"], []).append(row)
    assert len({r["trace_id"] for r in steps}) == 3
    for pair in by_step.values():
        assert len({r["trace_id"] for r in pair}) == 1
        ranks = {r["attributes"]["glmtrace.distributed.rank"]: r for r in pair}
        assert ranks[1]["parent_span_id"] == ranks[0]["span_id"]
        assert {r["attributes"]["glmtrace.distributed.world_size"] for r in pair} == {2}
    reduces = [r for r in rows if r["name"] == "torch.distributed all_reduce"]
    assert len(reduces) == 6
    step_ids = {r["span_id"] for r in steps}
    assert all(r["parent_span_id"] in step_ids for r in reduces)
    assert reduces[0]["attributes"]["glmtrace.distributed.bytes"] == 16
