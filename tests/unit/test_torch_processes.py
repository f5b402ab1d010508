"""DataLoader workers and torch.distributed ranks (gloo, 2 processes) join one trace."""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import glmtrace
import glmtrace.distributed
from glmtrace._internal.export.exporters import span_to_row

torch = pytest.importorskip("torch")


def _rows(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM spans")]
    for row in rows:
        row["attributes"] = json.loads(row["attributes"])
        row["resource"] = json.loads(row["resource"])
    return rows


class Numbers(torch.utils.data.Dataset):  # type: ignore[misc]
    """Item i is tensor([i]), loaded under a span naming i."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> Any:
        with glmtrace.span("load item", {"i": i}):
            return torch.tensor([i])


def _train(loader: Any, epochs: int) -> None:
    """The usual layout: no span at iter(loader), one root span per step."""
    for epoch in range(epochs):
        for batch in loader:
            with glmtrace.span("step", {"epoch": epoch, "items": batch.flatten().tolist()}):
                pass


def _assert_batches_under_their_steps(spans: list[dict[str, Any]], steps: int) -> None:
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        by_parent.setdefault(span["parent_span_id"], []).append(span)
    step_spans = [s for s in spans if s["name"] == "step"]
    assert len(step_spans) == steps
    assert len({s["trace_id"] for s in step_spans}) == steps  # one trace per step
    for step in step_spans:
        (worker,) = by_parent[step["span_id"]]
        assert worker["name"] == "torch.dataloader.worker"
        assert worker["trace_id"] == step["trace_id"]
        items = by_parent[worker["span_id"]]
        assert {i["trace_id"] for i in items} == {step["trace_id"]}
        assert sorted(i["attributes"]["i"] for i in items) == sorted(step["attributes"]["items"])
    loads = [s for s in spans if s["name"] == "load item"]
    assert len(loads) == 6 * (steps // 3)  # every item span kept, none twice


@pytest.mark.parametrize(
    ("method", "persistent"),
    [("fork", False), ("fork", True), ("spawn", False), ("spawn", True), ("forkserver", False)],
)
def test_worker_spans_join_the_step_that_consumes_the_batch(
    traced: Any, method: str, persistent: bool
) -> None:
    """Each batch's worker span and item spans are children of the step that uses the batch."""
    loader = torch.utils.data.DataLoader(
        Numbers(),
        batch_size=2,
        num_workers=2,
        multiprocessing_context=method,
        persistent_workers=persistent,
        worker_init_fn=glmtrace.distributed.worker_init_fn(),
    )
    _train(loader, epochs=2)
    del loader
    _assert_batches_under_their_steps(traced.spans(), steps=6)


def test_worker_spans_join_their_steps_in_the_local_store(local_store: Path) -> None:
    """The embedded default (the native queue when the extension is built) keeps the same
    structure, and spans made after the loader are stored as well."""
    loader = torch.utils.data.DataLoader(
        Numbers(),
        batch_size=2,
        num_workers=2,
        multiprocessing_context="fork",
        worker_init_fn=glmtrace.distributed.worker_init_fn(),
    )
    _train(loader, epochs=2)
    del loader
    with glmtrace.span("after"):
        pass
    assert glmtrace.force_flush(10)
    rows = _rows(local_store)
    _assert_batches_under_their_steps([r for r in rows if r["name"] != "after"], steps=6)
    assert [r["name"] for r in rows].count("after") == 1


def test_a_new_runtime_at_a_dead_ones_address_still_adopts_batches() -> None:
    """Each provider's processor gets its own batch adopter, even when it reuses the address
    of a discarded one (re-init in notebooks and test suites).

    The adopter was once remembered by the processor's id(): the new processor was taken for
    installed and its steps adopted no batch (flaky in CI, 2 re-inits in 40 by hand).
    """
    from types import SimpleNamespace

    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

    from glmtrace._internal.otel_internals import span_processors
    from glmtrace._internal.torch.batches import BATCHES as batches

    first = SynchronousMultiSpanProcessor()
    address = id(first)
    batches._install(SimpleNamespace(processor=first))  # type: ignore[arg-type]
    del first
    second = SynchronousMultiSpanProcessor()
    assert id(second) == address  # CPython hands the freed block to the next of its size
    batches._install(SimpleNamespace(processor=second))  # type: ignore[arg-type]
    assert [type(p).__name__ for p in span_processors(second)] == ["_Adopter"]
    batches._install(SimpleNamespace(processor=second))  # type: ignore[arg-type]
    assert len(span_processors(second)) == 1  # and only once


class CountedCollate:
    """collate_fn that counts the batches the worker finished (a value shared over fork)."""

    def __init__(self) -> None:
        self.made = multiprocessing.get_context("fork").Value("i", 0)

    def __call__(self, items: list[Any]) -> Any:
        batch = torch.utils.data.default_collate(items)
        with self.made.get_lock():
            self.made.value += 1
        return batch

    def wait_for(self, batches: int) -> None:
        for _ in range(3000):  # a hang guard, not a timing assertion
            if self.made.value >= batches:
                return
            time.sleep(0.01)
        raise AssertionError(f"the worker made {self.made.value} batches, not {batches}")


@pytest.mark.parametrize("persistent", [False, True])
def test_batches_made_but_never_taken_are_exported(traced: Any, persistent: bool) -> None:
    """Leaving the loop with ``break``: the batches the workers had prefetched are exported,
    each a trace of its own, instead of vanishing with the iterator (or the next epoch)."""
    collate = CountedCollate()
    loader = torch.utils.data.DataLoader(
        Numbers(),
        batch_size=2,
        num_workers=1,
        prefetch_factor=2,
        collate_fn=collate,
        multiprocessing_context="fork",
        persistent_workers=persistent,
        worker_init_fn=glmtrace.distributed.worker_init_fn(),
    )
    for _ in loader:
        with glmtrace.span("step"):
            collate.wait_for(3)  # batch 0 taken, batches 1 and 2 made and waiting
        break
    if persistent:
        _train(loader, epochs=1)  # the new epoch's reset discards the waiting batches
    del loader
    spans = traced.spans()
    workers = [s for s in spans if s["name"] == "torch.dataloader.worker"]
    steps = {s["span_id"] for s in spans if s["name"] == "step"}
    taken = [w for w in workers if w["parent_span_id"] in steps]
    left = [w for w in workers if w["parent_span_id"] is None]
    assert len(taken) == (4 if persistent else 1)
    assert len(left) == 2
    assert len({w["trace_id"] for w in left}) == 2  # each a trace of its own
    loads = [s for s in spans if s["name"] == "load item"]
    by_worker = {w["span_id"]: w for w in workers}
    assert all(by_worker[s["parent_span_id"]]["trace_id"] == s["trace_id"] for s in loads)
    assert sorted(s["attributes"]["i"] for s in loads) == sorted(
        list(range(6)) + (list(range(6)) if persistent else [])
    )


class LoggingNumbers(Numbers):
    """Numbers whose items each log a line, as datasets do ("skipping a corrupt sample")."""

    def __getitem__(self, i: int) -> Any:
        logging.getLogger("dataset").warning("loading item %d", i)
        return super().__getitem__(i)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_logs_join_the_step_that_consumes_the_batch(local_store: Path, method: str) -> None:
    """A line logged in Dataset.__getitem__ carries the trace of the step that uses its batch
    and the id of the worker span it was logged in: pulling the step's trace gives its lines."""
    loader = torch.utils.data.DataLoader(
        LoggingNumbers(),
        batch_size=2,
        num_workers=2,
        multiprocessing_context=method,
        worker_init_fn=glmtrace.distributed.worker_init_fn(),
    )
    _train(loader, epochs=1)
    del loader
    glmtrace.shutdown()
    spans = _rows(local_store)
    with sqlite3.connect(local_store) as db:
        logs = [json.loads(doc) for (doc,) in db.execute("SELECT document FROM logs")]
    lines = [d for d in logs if d.get("log.logger") == "dataset"]
    assert len(lines) == 6  # each logged once: none lost, none shipped twice
    by_id = {s["span_id"]: s for s in spans}
    for line in lines:
        worker = by_id[line["span.id"]]
        assert worker["name"] == "torch.dataloader.worker"
        step = by_id[worker["parent_span_id"]]
        assert step["name"] == "step"
        assert line["trace.id"] == step["trace_id"]
        item = int(line["message"].split()[-1])
        assert item in step["attributes"]["items"]


def test_batches_taken_inside_a_span_go_under_it(traced: Any) -> None:
    """Batches taken inside a span, with no span opened per batch, are its children."""
    loader = torch.utils.data.DataLoader(
        Numbers(), batch_size=2, num_workers=2, worker_init_fn=glmtrace.distributed.worker_init_fn()
    )
    with glmtrace.span("epoch") as epoch:
        batches = [b for b in loader]
    assert len(batches) == 3
    spans = traced.spans()
    workers = [s for s in spans if s["name"] == "torch.dataloader.worker"]
    assert len(workers) == 3
    assert {w["parent_span_id"] for w in workers} == {epoch.span_id}
    assert {s["trace_id"] for s in spans} == {epoch.trace_id}
    assert sorted(w["attributes"]["glmtrace.torch.worker.id"] for w in workers) == [0, 0, 1]


def test_a_batch_still_parked_at_shutdown_is_exported(traced: Any) -> None:
    """The last batch, taken with no span after it, reaches the exporter at shutdown."""
    loader = torch.utils.data.DataLoader(
        Numbers(), batch_size=3, num_workers=1, worker_init_fn=glmtrace.distributed.worker_init_fn()
    )
    with glmtrace.span("epoch") as epoch:
        for _ in loader:
            pass
    glmtrace.shutdown()
    spans = [span_to_row(s) for s in traced.exporter.get_finished_spans()]
    workers = [s for s in spans if s["name"] == "torch.dataloader.worker"]
    assert len(workers) == 2
    assert {w["parent_span_id"] for w in workers} == {epoch.span_id}
    assert len([s for s in spans if s["name"] == "load item"]) == 6


def _setup_span(worker_id: int) -> None:
    with glmtrace.span("worker setup", {"worker": worker_id}):
        pass


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_spans_are_flushed_when_the_worker_exits(local_store: Path, method: str) -> None:
    """Spans a worker exports itself reach the store although workers skip atexit."""
    loader = torch.utils.data.DataLoader(
        Numbers(),
        batch_size=6,
        num_workers=2,
        multiprocessing_context=method,
        worker_init_fn=glmtrace.distributed.worker_init_fn(_setup_span),
    )
    assert len(list(loader)) == 1
    del loader  # workers exit
    glmtrace.force_flush()
    setups = [r for r in _rows(local_store) if r["name"] == "worker setup"]
    assert sorted(r["attributes"]["worker"] for r in setups) == [0, 1]


class Broken(Numbers):
    def __getitem__(self, i: int) -> Any:
        if i == 1:
            with glmtrace.span("load item", {"i": i}):
                raise ValueError("corrupt sample")
        return super().__getitem__(i)


def test_a_failing_batch_exports_its_spans_from_the_worker(local_store: Path) -> None:
    """A fetch that raises sends no batch: the worker exports its spans, marked ERROR."""
    loader = torch.utils.data.DataLoader(
        Broken(), batch_size=2, num_workers=1, worker_init_fn=glmtrace.distributed.worker_init_fn()
    )
    with pytest.raises(ValueError, match="corrupt sample") as raised:
        for _ in loader:
            pass
    del raised, loader  # the traceback holds the iterator: release it, so the worker exits
    gc.collect()
    glmtrace.force_flush()
    rows = _rows(local_store)
    # Batches prefetched behind the failing one are exported too, as traces of their own.
    workers = [r for r in rows if r["name"] == "torch.dataloader.worker"]
    (worker,) = [r for r in workers if r["status"] == "ERROR"]
    items = [r for r in rows if r["name"] == "load item" and r["attributes"]["i"] in (0, 1)]
    assert len(items) == 2
    assert {r["parent_span_id"] for r in items} == {worker["span_id"]}
    assert {r["trace_id"] for r in items} == {worker["trace_id"]}


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


_SPAWN_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    import torch.distributed as dist
    import torch.multiprocessing as mp
    import glmtrace, glmtrace.distributed

    def rank_fn(rank, store, port, init_here):
        logging.basicConfig()
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        if init_here:
            glmtrace.init(service_name="spawned", store=store, logs="none")
        dist.init_process_group("gloo", rank=rank, world_size=2)
        for _ in range(2):
            with glmtrace.distributed.share_trace("step"):
                pass
        dist.destroy_process_group()
        glmtrace.shutdown()

    if __name__ == "__main__":
        store, port, where = sys.argv[1:]
        if where == "parent":
            glmtrace.init(service_name="parent", store=store, logs="none")
        mp.spawn(rank_fn, args=(store, port, where == "ranks"), nprocs=2)
    """
)


def _spawn(tmp_path: Path, where: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "spawned.py"
    script.write_text(_SPAWN_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLMTRACE_", "RANK"))}
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "glmtrace.db"), str(_free_port()), where],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_mp_spawn_ranks_get_their_rank_on_the_resource(tmp_path: Path) -> None:
    """Ranks with no RANK in the environment take it from torch.distributed."""
    result = _spawn(tmp_path, "ranks")
    assert result.returncode == 0, result.stderr
    steps = [r for r in _rows(tmp_path / "glmtrace.db") if r["name"] == "step"]
    assert len(steps) == 4
    ranks = sorted(r["resource"]["glmtrace.distributed.rank"] for r in steps)
    assert ranks == [0, 0, 1, 1]
    assert {r["resource"]["glmtrace.distributed.world_size"] for r in steps} == {2}


def test_init_only_in_the_parent_of_mp_spawn_warns(tmp_path: Path) -> None:
    """init() in the parent alone records nothing from the ranks: each rank says so, once."""
    result = _spawn(tmp_path, "parent")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("glmtrace.init() ran in the parent process") == 2


def test_ids_do_not_follow_the_programs_random_seed(traced: Any) -> None:
    """Seeding random alike (DataLoader workers of every rank do) does not repeat span ids."""
    import random

    from glmtrace._internal.runtime import DEFAULT

    for _ in range(2):
        random.seed(7)
        with glmtrace.span("sdk span"):
            lite = DEFAULT.start_span("fast span")
            assert lite is not None
            lite.end()
    spans = traced.spans()
    assert len({s["span_id"] for s in spans}) == 4
    assert len({s["trace_id"] for s in spans}) == 2


def test_tracing_leaves_the_programs_random_state_alone(traced: Any) -> None:
    """A seeded program draws the same numbers with tracing on: no span id comes from random."""
    import random

    from glmtrace._internal.runtime import DEFAULT

    random.seed(0)
    before = random.getstate()
    with glmtrace.span("sdk span"), glmtrace.inference("m"):
        lite = DEFAULT.start_span("fast span")
        assert lite is not None
        lite.end()
    with glmtrace.span("a root of its own"):
        pass
    assert random.getstate() == before
    assert len(traced.spans()) == 4


class Featurized(Numbers):
    """A dataset that runs an instrumented model and a cuda_span on each item."""

    def __init__(self) -> None:
        self.encoder = glmtrace.instrument_torch(torch.nn.Linear(1, 2), depth=0)

    def __getitem__(self, i: int) -> Any:
        with glmtrace.cuda_span("featurize", {"i": i}), torch.no_grad():
            return self.encoder(torch.tensor([float(i)]))


def test_torch_spans_in_a_forked_worker_join_the_step(traced: Any) -> None:
    """Module spans and cuda_spans made in a forked worker nest under its batch span."""
    loader = torch.utils.data.DataLoader(
        Featurized(),
        batch_size=3,
        num_workers=1,
        multiprocessing_context="fork",
        worker_init_fn=glmtrace.distributed.worker_init_fn(),
    )
    for _ in loader:
        with glmtrace.span("step"):
            pass
    del loader
    spans = traced.spans()
    by_id = {s["span_id"]: s for s in spans}
    modules = [s for s in spans if s["name"] == "torch.module Linear"]
    assert len(modules) == 6
    for module in modules:
        featurize = by_id[module["parent_span_id"]]
        worker = by_id[featurize["parent_span_id"]]
        step = by_id[worker["parent_span_id"]]
        assert (featurize["name"], worker["name"], step["name"]) == (
            "featurize",
            "torch.dataloader.worker",
            "step",
        )
        assert module["trace_id"] == step["trace_id"]


def test_batches_of_their_own_are_sampled_like_new_traces(tmp_path: Path) -> None:
    """With sample_rate=0, batches no step adopts are not exported as traces of their own."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    glmtrace.init(
        traces="none", logs="none", store=tmp_path / "s.db", exporter=memory, sample_rate=0.0
    )
    try:
        loader = torch.utils.data.DataLoader(
            Numbers(),
            batch_size=2,
            num_workers=1,
            worker_init_fn=glmtrace.distributed.worker_init_fn(),
        )
        assert len(list(loader)) == 3
        del loader
        glmtrace.force_flush()
        assert memory.get_finished_spans() == ()
    finally:
        glmtrace.shutdown()
