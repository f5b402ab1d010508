"""``glmtrace stack``: up, the main job against it, status, logs, down; real processes throughout.

The stack is started through the command line in a child process, so it really is left running
detached after the command exits; it gets free ports and its own directory (the defaults,
4317/9200/16686, may be taken on a developer's machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from glmtrace._internal.stack import local

from .backends import REPO, backends_dir, free_port, http

pytestmark = pytest.mark.integration


def glmtrace_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "glmtrace._internal.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"glmtrace {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    """A stack directory Elasticsearch's user can reach (pytest's tmp is closed to it as root)."""
    run = backends_dir() / "run"
    run.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="stack-", dir=run))
    os.chmod(directory, 0o755)
    try:
        yield directory
    finally:
        local.down(directory)  # whatever the test left running
        shutil.rmtree(directory, ignore_errors=True)


T = TypeVar("T")


def poll(get: Callable[[], T], done: Callable[[T], bool], timeout: float = 60) -> T:
    """``get()`` until ``done`` holds or ``timeout`` seconds pass; the last value either way."""
    deadline = time.monotonic() + timeout
    value = get()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = get()
    return value


def _span_names(jaeger: str, trace_id: str) -> set[str]:
    reply = http("GET", f"{jaeger}/api/v3/traces/{trace_id}")
    if reply.status != 200:
        return set()
    return {
        span["name"]
        for rs in reply.json()["result"]["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    }


def _log_messages(es: str, trace_id: str) -> list[str]:
    http("POST", f"{es}/logs-glmtrace-*/_refresh?ignore_unavailable=true")
    reply = http(
        "POST",
        f"{es}/logs-glmtrace-*/_search?ignore_unavailable=true",
        {"query": {"term": {"trace.id": trace_id}}, "size": 50},
    )
    if reply.status != 200:
        return []
    return [str(hit["_source"].get("message")) for hit in reply.json()["hits"]["hits"]]


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (its reaper may not have collected it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stack_up_then_the_main_job_shows_its_trace_in_jaeger_and_its_logs_in_es(
    stack_dir: Path, tmp_path: Path
) -> None:
    ports = [f"--port={name}={free_port()}" for name in local.PORTS]
    out = glmtrace_cli("stack", "up", "--dir", str(stack_dir), "--no-provision", *ports)
    exported = dict(
        line.removeprefix("export ").split("=", 1)
        for line in out.splitlines()
        if line.startswith("export ")
    )
    assert set(exported) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "GLMTRACE_ES_URL",
        "GLMTRACE_JAEGER_URL",
    }
    # up has returned: every backend runs detached, under a pid file
    stack = local.load(stack_dir)
    assert stack is not None
    assert all(stack.service(name) for name in local.NAMES)

    job = glmtrace_cli(
        "run",
        str(REPO / "examples" / "autoglm" / "pipeline.yaml"),
        "--input",
        "<b>Hello</b> from the stack",
        env=exported,
        cwd=tmp_path,
    )
    trace_id = next(ln.split()[-1] for ln in job.splitlines() if ln.startswith("trace_id:"))

    jaeger = exported["GLMTRACE_JAEGER_URL"]
    want = {"pipeline autoglm", "stage preprocess", "stage infer"}
    names = poll(lambda: _span_names(jaeger, trace_id), lambda got: want <= got)
    assert want <= names, names

    es = exported["GLMTRACE_ES_URL"]
    messages = poll(lambda: _log_messages(es, trace_id), lambda got: len(got) >= 2)
    assert any(m.startswith("routing request") for m in messages), messages
    assert any(m.startswith("generated") for m in messages), messages

    status = glmtrace_cli("stack", "status", "--dir", str(stack_dir))
    assert status.count("running") == 3, status
    logs = glmtrace_cli("stack", "logs", "--dir", str(stack_dir), "-n", "3", "collector")
    assert logs.startswith("collector | "), logs
    again = glmtrace_cli("stack", "up", "--dir", str(stack_dir), "--no-provision")
    assert exported["GLMTRACE_ES_URL"] in again  # already up: same stack, nothing restarted

    pids = [stack.service(name).pid for name in local.NAMES]  # type: ignore[union-attr]
    down = glmtrace_cli("stack", "down", "--dir", str(stack_dir))
    assert down.strip() == "stopped: collector, jaeger, elasticsearch"
    assert not any(_running(pid) for pid in pids)
    assert "stopped" in glmtrace_cli("stack", "status", "--dir", str(stack_dir))
