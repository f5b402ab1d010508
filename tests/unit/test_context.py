"""Context is never lost: threads, executors, processes (fork and spawn), asyncio tasks."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import glmtrace
from glmtrace._internal.store.database import Store
from tests.conftest import Traced


@glmtrace.stage
def child_work(x: int) -> int:
    return x * 2


def test_thread_keeps_parent(traced: Traced) -> None:
    """A plain Thread started inside a span parents its spans to that span."""
    with glmtrace.span("root") as root:
        t = threading.Thread(target=child_work, args=(1,))
        t.start()
        t.join()
    assert traced.one("stage child_work")["parent_span_id"] == root.span_id


def test_thread_pool_keeps_parent(traced: Traced) -> None:
    """ThreadPoolExecutor.submit and map keep the submitting span as parent."""
    with glmtrace.span("root") as root, ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(child_work, range(4))) == [0, 2, 4, 6]
    spans = [s for s in traced.spans() if s["name"] == "stage child_work"]
    assert len(spans) == 4
    assert {s["parent_span_id"] for s in spans} == {root.span_id}
    assert {s["trace_id"] for s in spans} == {root.trace_id}


async def test_asyncio_tasks_keep_parent(traced: Traced) -> None:
    """Tasks created inside a span run with it as parent."""

    @glmtrace.stage
    async def job(i: int) -> int:
        await asyncio.sleep(0)
        return i

    with glmtrace.span("root") as root:
        assert await asyncio.gather(*(asyncio.create_task(job(i)) for i in range(3))) == [0, 1, 2]
    spans = [s for s in traced.spans() if s["name"] == "stage job"]
    assert len(spans) == 3
    assert {s["parent_span_id"] for s in spans} == {root.span_id}


def _store_children(store: Path, trace_id: str, name: str) -> list[dict[str, object]]:
    glmtrace.force_flush()
    return [s for s in Store(store).spans(trace_id) if s["name"] == name]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_with_propagate(local_store: Path, method: str) -> None:
    """ProcessPoolExecutor workers export spans under the submitting span (fork and spawn)."""
    with glmtrace.span("fan-out") as root:
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
            assert list(pool.map(glmtrace.propagate(child_work), range(3))) == [0, 2, 4]
    assert root.trace_id is not None
    spans = _store_children(local_store, root.trace_id, "stage child_work")
    assert len(spans) == 3
    assert {s["parent_span_id"] for s in spans} == {root.span_id}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_process_with_propagate(local_store: Path, method: str) -> None:
    """multiprocessing.Process targets wrapped by propagate() join the trace."""
    ctx = multiprocessing.get_context(method)
    with glmtrace.span("parent") as root:
        proc = ctx.Process(target=glmtrace.propagate(child_work), args=(21,))
        proc.start()
        proc.join(60)
    assert proc.exitcode == 0
    assert root.trace_id is not None
    (span,) = _store_children(local_store, root.trace_id, "stage child_work")
    assert span["parent_span_id"] == root.span_id
    assert span["resource"]["process.pid"] == proc.pid


def test_rank_and_world_size_on_the_resource(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under torchrun (RANK, LOCAL_RANK, WORLD_SIZE) every span's resource names the rank."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    exporter = InMemorySpanExporter()
    glmtrace.init(traces="none", logs="none", exporter=exporter, store=tmp_path / "s.db")
    try:
        with glmtrace.span("step"):
            pass
        glmtrace.force_flush()
        (span,) = exporter.get_finished_spans()
        resource = dict(span.resource.attributes)
        assert resource["glmtrace.distributed.rank"] == 3
        assert resource["glmtrace.distributed.local_rank"] == 1
        assert resource["glmtrace.distributed.world_size"] == 4
    finally:
        glmtrace.shutdown()
