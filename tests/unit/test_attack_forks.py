"""Forks while spans are being made: every child exports its own spans, once, and none hangs.

Each test runs a fresh interpreter (one runtime per process, as users run glmtrace) against a
real OTLP/HTTP receiver in the test process, which decodes every request it gets. The tests
run on whichever export path is active: native, or Python with ``GLMTRACE_NATIVE=0``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver:
    """An OTLP/HTTP trace receiver keeping every span it decoded.

    ``flaky``: each request is first answered 503 (retry later) and accepted when sent again,
    so that every export is still unfinished when the program does what it does next.
    """

    def __init__(self, flaky: bool = False) -> None:
        self.spans: list[Span] = []
        self.flaky = flaky
        seen: set[bytes] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                if receiver.flaky and body not in seen:
                    seen.add(body)
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self) -> collections.Counter[str]:
        return collections.Counter(span.name for span in list(self.spans))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def flaky_receiver() -> Iterator[Receiver]:
    made = Receiver(flaky=True)
    yield made
    made.close()


def init_line(endpoint: str, **extra: Any) -> str:
    """The ``glmtrace.init(...)`` call of a job exporting to ``endpoint`` over OTLP/HTTP."""
    arguments = {
        "service_name": "attack",
        "traces": "otlp",
        "endpoint": endpoint,
        "protocol": "http/protobuf",
        "logs": "none",
        **extra,
    }
    return "glmtrace.init(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")"


def run_job(
    code: str, tmp_path: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in ``tmp_path``; ``timeout`` only guards a hang."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, **env},
        check=False,
    )


BUSY = """
    import os, sys, threading
    import glmtrace

    {init}
    stop = threading.Event()
    made = [0] * 4


    def busy(i):  # four threads making spans the whole time
        while not stop.is_set():
            with glmtrace.span(f"busy {{i}}"):
                made[i] += 1


    threads = [threading.Thread(target=busy, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
"""


def test_os_fork_children_export_their_own_spans_while_threads_make_spans(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Ten forks under load: each child's 50 spans arrive once; no parent span is sent twice."""
    job = textwrap.dedent(BUSY.format(init=init_line(receiver.url))) + textwrap.dedent("""
        import json, time
        time.sleep(0.1)
        children = []
        for k in range(10):
            pid = os.fork()
            if pid == 0:
                for j in range(50):
                    with glmtrace.span(f"child {k} {j}"):
                        pass
                ok = glmtrace.force_flush(10)
                otlp = glmtrace.stats()["otlp"]
                os._exit(0 if ok and otlp["exported"] == 50 and not otlp.get("dropped") else 3)
            children.append(pid)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
        stop.set()
        for t in threads:
            t.join()
        glmtrace.shutdown(10)
        otlp = glmtrace.stats()["otlp"]
        print(json.dumps({"codes": codes, "made": sum(made), **otlp}))
    """)
    done = run_job(job, tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["codes"] == [0] * 10
    names = receiver.names()
    assert {n: c for n, c in names.items() if n.startswith("child")} == {
        f"child {k} {j}": 1 for k in range(10) for j in range(50)
    }
    busy = sum(c for n, c in names.items() if n.startswith("busy"))
    # Every span the parent made is exported once or counted dropped (a slow Python receiver
    # cannot keep up with four threads): none twice, none lost silently.
    assert busy == out["exported"]
    assert out["exported"] + out.get("dropped", 0) == out["made"]
    assert len({span.span_id for span in receiver.spans}) == len(receiver.spans)
    assert "Traceback" not in done.stderr


POOL = """
    import os
    import multiprocessing
    import glmtrace

    {init}


    def task(n):
        with glmtrace.span(f"task {{n}}"):
            return os.getpid()


    with glmtrace.span("fan-out"):
        with multiprocessing.get_context("fork").Pool(4) as pool:
            pids = pool.map(glmtrace.propagate(task), range(40), chunksize=1)
    print(len(set(pids)), glmtrace.shutdown(10))
"""


def test_spans_of_pool_workers_survive_the_pools_terminate(
    flaky_receiver: Receiver, tmp_path: Path
) -> None:
    """``with Pool() as pool`` ends with ``terminate()``: SIGTERM to workers that are already
    flushing their spans at exit. The flush finishes (within its budget) before the worker
    dies, so every task's span arrives."""
    # The receiver's 503 costs each worker a retry after a backoff of about a second: a
    # budget of 10 s keeps a loaded machine from turning the test into one of the deadline.
    init = init_line(flaky_receiver.url, shutdown_timeout=10)
    done = run_job(POOL.format(init=init), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "True"
    expected = {"fan-out": 1, **{f"task {n}": 1 for n in range(40)}}
    assert flaky_receiver.names() == expected, done.stderr
    assert "Traceback" not in done.stderr


EXITING = """
    import multiprocessing, multiprocessing.util, os, signal
    import glmtrace

    {init}


    def work():
        with glmtrace.span("work"):
            pass
        # SIGTERM once the exit sequence has begun, just before glmtrace's flush (priority 10)
        me = os.getpid()
        multiprocessing.util.Finalize(None, os.kill, (me, signal.SIGTERM), exitpriority=20)


    with glmtrace.span("parent"):
        child = multiprocessing.get_context("fork").Process(target=work)
        child.start()
        child.join()
    print(child.exitcode, glmtrace.shutdown(10))
"""


def test_sigterm_in_a_workers_exit_sequence_waits_for_its_flush(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The window ``terminate()`` hits under load: a worker has taken its stop sentinel and is
    running multiprocessing's exit finalizers when SIGTERM comes. Its span still arrives, and
    it still dies by the signal, as it would have without glmtrace."""
    done = run_job(EXITING.format(init=init_line(receiver.url)), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(-signal.SIGTERM), "True"], done.stderr
    assert receiver.names() == {"parent": 1, "work": 1}
    assert "Traceback" not in done.stderr


CYCLES = """
    import multiprocessing
    import glmtrace

    {init}


    def task(n):
        with glmtrace.span(f"task {{n}}"):
            return n


    for cycle in range(20):  # a quick map, then terminate(): workers are told to stop young
        with multiprocessing.get_context("fork").Pool(4) as pool:
            pool.map(glmtrace.propagate(task), range(8), chunksize=1)
    print("done")
"""


def test_terminating_young_pool_workers_neither_hangs_nor_prints_tracebacks(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Twenty ``with Pool()`` blocks around a quick ``map``: ``terminate()`` reaches workers
    still running their fork hooks (where ``SignalExit`` was printed and swallowed, the signal
    lost) or waiting for a task in a semaphore that SIGTERM did not interrupt (where the
    inherited handler never ran: the pool waited for ever). The timeout only guards the hang."""
    done = run_job(CYCLES.format(init=init_line(receiver.url)), tmp_path, timeout=90)
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr


CONCURRENT_FORKS = """
    import os, signal, threading
    import glmtrace

    glmtrace.init(service_name="forks", traces="none", logs="none")
    start = threading.Barrier(4)
    masks = []


    def fork_many():
        start.wait()
        for _ in range(25):
            pid = os.fork()
            if pid == 0:
                blocked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
                os._exit(3 if blocked else 0)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        masks.append(signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []))


    threads = [threading.Thread(target=fork_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(masks)
"""


def test_forking_from_several_threads_at_once_leaves_sigterm_deliverable(tmp_path: Path) -> None:
    """fork() holds SIGTERM back in the forking thread only while it forks: neither a child
    nor any of four threads forking at the same time is left with it blocked."""
    done = run_job(CONCURRENT_FORKS, tmp_path)
    assert (done.returncode, done.stdout) == (0, "[False, False, False, False]\n"), done.stderr
