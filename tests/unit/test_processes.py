"""glmtrace.propagate(): tasks in process pools join the trace; workers flush once, at exit."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

import glmtrace
from glmtrace._internal.runtime import DEFAULT
from tests.conftest import Traced
from tests.integration.jobs import run_traced


def _double(x: int) -> int:
    return 2 * x


def test_task_never_waits_for_a_flush(traced: Traced, monkeypatch: pytest.MonkeyPatch) -> None:
    """Running a propagated task flushes nothing on the task's way out."""
    calls: list[object] = []
    monkeypatch.setattr(DEFAULT, "force_flush", lambda *a: calls.append(a) or True)
    monkeypatch.setattr(DEFAULT, "shutdown", lambda *a: calls.append(a) or True)
    with glmtrace.span("fan-out"):
        assert glmtrace.propagate(_double)(21) == 42
    assert calls == []


POOL = """
import json, os, sys
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
import glmtrace

def work(i):
    with glmtrace.span("task", {"i": i}):
        return i * i

if __name__ == "__main__":
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = "service.name=from-env"  # inherited by workers
    glmtrace.init(store="pool.db")
    context = multiprocessing.get_context(sys.argv[1])
    with glmtrace.span("fan-out") as parent:
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            results = list(pool.map(glmtrace.propagate(work), range(6)))
    glmtrace.shutdown()
    from glmtrace._internal.store.database import Store
    spans = Store("pool.db").spans(parent.trace_id)
    tasks = [s for s in spans if s["name"] == "task"]
    print(json.dumps({
        "results": results,
        "tasks": sorted(s["attributes"]["i"] for s in tasks),
        "parents": sorted({s["parent_span_id"] for s in tasks}),
        "parent": parent.span_id,
        "services": sorted({s["service_name"] for s in spans}),
    }))
"""


@pytest.mark.parametrize("method", sorted(multiprocessing.get_all_start_methods()))
def test_worker_spans_arrive_when_the_pool_shuts_down(tmp_path: Path, method: str) -> None:
    """Every task span of a ProcessPoolExecutor reaches the store, under the caller's span,
    named like the caller's service."""
    result = run_traced(POOL.replace("sys.argv[1]", repr(method)), tmp_path)
    assert result["results"] == [i * i for i in range(6)]
    assert result["tasks"] == list(range(6))
    assert result["parents"] == [result["parent"]]
    assert result["services"] == ["from-env"]


PROCESS = """
import json, multiprocessing
import glmtrace

def work(i):
    with glmtrace.span("child", {"i": i}):
        pass

if __name__ == "__main__":
    glmtrace.init(store="process.db")
    context = multiprocessing.get_context("fork")
    with glmtrace.span("parent") as parent:
        children = [context.Process(target=work, args=(i,)) for i in range(3)]
        for child in children:
            child.start()
        for child in children:
            child.join()
    glmtrace.shutdown()
    from glmtrace._internal.store.database import Store
    spans = Store("process.db").spans(parent.trace_id)
    print(json.dumps({
        "exit": [c.exitcode for c in children],
        "children": sorted(s["attributes"]["i"] for s in spans if s["name"] == "child"),
    }))
"""


def test_forked_process_spans_arrive_without_propagate(tmp_path: Path) -> None:
    """A fork-started multiprocessing.Process (which exits through os._exit) flushes its spans."""
    result = run_traced(PROCESS, tmp_path)
    assert result == {"exit": [0, 0, 0], "children": [0, 1, 2]}
