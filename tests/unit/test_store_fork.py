"""Processes forked while other threads write to the store can write to it themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glmtrace._internal.store.database import Store

# Three threads trace spans and log records into the local store without pause while the main
# thread forks 40 children (os.fork) and runs 16 tasks on a forked ProcessPoolExecutor through
# glmtrace.propagate. Every child writes its own span and record. Run in a fresh interpreter:
# pytest's own threads and state stay out of the forks.
_LOAD = textwrap.dedent(
    """
    import json, logging, os, sys, threading, time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import glmtrace

    store, out = sys.argv[1], sys.argv[2]
    glmtrace.init(service_name="load", store=store, shutdown_timeout=10)
    log = logging.getLogger("load")
    stop = threading.Event()

    started = threading.Barrier(4)

    def busy(n):
        i = 0
        while not stop.is_set():
            with glmtrace.span("busy", {"thread": n}):
                log.info("busy %d %d", n, i)
            i += 1
            if i == 5:
                started.wait(30)  # each thread is writing before the first fork
            if i % 5 == 0:
                glmtrace.force_flush()  # many small transactions: forks land inside them

    def pool_work(k):
        with glmtrace.span("pool-work", {"k": k}):
            log.info("pool-work %d", k)
        return os.getpid()

    threads = [threading.Thread(target=busy, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    started.wait(30)
    children = {}
    for k in range(40):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with glmtrace.span("child", {"k": k}):
                    log.info("child %d", k)
                done = glmtrace.shutdown(15)
                with open(os.path.join(out, f"{k}.json"), "w") as f:
                    json.dump({"done": done, "stats": glmtrace.stats()}, f)
                code = 0
            finally:
                os._exit(code)
        children[k] = pid
        time.sleep(0.02)
    with glmtrace.span("fan-out"):
        with ProcessPoolExecutor(4, mp_context=get_context("fork")) as pool:
            futures = [pool.submit(glmtrace.propagate(pool_work), k) for k in range(16)]
            pool_ok = all(f.result(timeout=30) for f in futures)
    deadline = time.monotonic() + 60
    hung = []
    for k, pid in children.items():
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                hung.append(k)
                break
            time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(10)
    done = glmtrace.shutdown(20)
    print(json.dumps({"hung": hung, "pool_ok": pool_ok, "done": done, "stats": glmtrace.stats()}))
    """
)


def _drops(stats: dict[str, dict[str, int]]) -> dict[str, int]:
    return {sink: counts["dropped"] for sink, counts in stats.items() if counts.get("dropped")}


def test_children_forked_under_load_store_everything(tmp_path: Path) -> None:
    """40 forks and a process pool under three tracing threads: every child's span and record."""
    store, out = tmp_path / "glmtrace.db", tmp_path / "children"
    out.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", _LOAD, str(store), str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "GLMTRACE_STRICT": "0"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    parent = json.loads(run.stdout.strip().splitlines()[-1])
    reports = {int(p.stem): json.loads(p.read_text()) for p in out.glob("*.json")}
    spans = Store(store).all_spans()
    messages = {d["message"] for d in Store(store).all_logs()}
    stored = {
        "child": {s["attributes"]["k"] for s in spans if s["name"] == "child"},
        "pool-work": {s["attributes"]["k"] for s in spans if s["name"] == "pool-work"},
    }
    counts = {"child": 40, "pool-work": 16}
    problems = {
        "hung children": parent["hung"],
        "pool failed": not parent["pool_ok"],
        "parent drops": _drops(parent["stats"]),
        "children without a report": sorted(set(range(40)) - set(reports)),
        "child drops": {k: _drops(r["stats"]) for k, r in reports.items() if _drops(r["stats"])},
        "spans missing": {n: sorted(set(range(c)) - stored[n]) for n, c in counts.items()},
        "logs missing": {
            n: [k for k in range(c) if f"{n} {k}" not in messages] for n, c in counts.items()
        },
    }
    assert problems == {
        "hung children": [],
        "pool failed": False,
        "parent drops": {},
        "children without a report": [],
        "child drops": {},
        "spans missing": {"child": [], "pool-work": []},
        "logs missing": {"child": [], "pool-work": []},
    }, run.stderr[-3000:]


def _posix_locks(pid: int, inode: int) -> list[str]:
    """The POSIX locks ``pid`` holds on the file with ``inode``, from /proc/locks."""
    held = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.replace(" -> ", " ").split()
        if fields[4] == str(pid) and fields[5].endswith(f":{inode}"):
            held.append(line)
    return held


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
def test_forked_child_holds_its_own_file_locks(tmp_path: Path) -> None:
    """A child writes under real POSIX locks of its own, not SQLite's memory of its parent's."""
    store = Store(tmp_path / "s.db")
    store.write_logs(
        [
            {
                "log.id": "1",
                "timestamp_ns": 1,
                "log.level": "I",
                "log.logger": "t",
                "message": "parent",
            }
        ]
    )
    inode = (tmp_path / "s.db").stat().st_ino
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            store.write_logs(
                [
                    {
                        "log.id": "2",
                        "timestamp_ns": 2,
                        "log.level": "I",
                        "log.logger": "t",
                        "message": "child",
                    }
                ]
            )
            os.write(write, json.dumps(_posix_locks(os.getpid(), inode)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_locks = json.loads(pipe.read() or "null")
    os.waitpid(pid, 0)
    assert child_locks, "the child wrote without holding any lock on the database file"
