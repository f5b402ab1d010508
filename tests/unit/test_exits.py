"""What is queued at exit is flushed: normal exit, sys.exit, uncaught exception, SIGTERM, fork."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glmtrace._internal.store.database import Store

PROGRAM = """
import logging, os, signal, sys, time
import glmtrace
glmtrace.init(service_name="exits", store=sys.argv[1])
log = logging.getLogger("job")
with glmtrace.span("job") as span:
    for i in range(200):
        log.info("line %d", i)
    print(span.trace_id, flush=True)
    {ending}
"""

ENDINGS = {
    "normal": "pass",
    "sys.exit": "sys.exit(3)",
    "exception": "raise RuntimeError('crash')",
    "sigterm": "os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)",
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_queued_telemetry_survives_exit(tmp_path: Path, ending: str) -> None:
    """Spans and all 200 log lines reach the store however the program ends."""
    store = tmp_path / "exit.db"
    code = textwrap.dedent(PROGRAM).format(ending=ENDINGS[ending])
    env = {k: v for k, v in os.environ.items() if k != "GLMTRACE_STRICT"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(store)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    expected_rc = {"normal": 0, "sys.exit": 3, "exception": 1, "sigterm": 128 + signal.SIGTERM}
    assert proc.returncode == expected_rc[ending], proc.stderr
    trace_id = proc.stdout.split()[0]
    spans = Store(store).spans(trace_id)
    assert [s["name"] for s in spans] == ["job"]
    if ending == "exception":
        assert spans[0]["status"] == "ERROR"
    assert len(Store(store).logs(trace_id)) == 200


FORK_PROGRAM = """
import logging, os, sys
import glmtrace
glmtrace.init(service_name="fork", store=sys.argv[1])
log = logging.getLogger("job")
with glmtrace.span("parent") as parent:
    log.info("before fork")
    pid = os.fork()
    if pid == 0:
        with glmtrace.span("child"):
            log.info("in child")
        glmtrace.shutdown()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    log.info("after fork")
print(parent.trace_id, status, flush=True)
"""


def test_os_fork_child_exports_too(tmp_path: Path) -> None:
    """After os.fork the child's span and log arrive alongside the parent's, none lost."""
    store = tmp_path / "fork.db"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORK_PROGRAM), str(store)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    trace_id, status = proc.stdout.split()
    assert status == "0"
    spans = {s["name"]: s for s in Store(store).spans(trace_id)}
    assert spans["child"]["parent_span_id"] == spans["parent"]["span_id"]
    assert spans["child"]["resource"]["process.pid"] != spans["parent"]["resource"]["process.pid"]
    messages = sorted(d["message"] for d in Store(store).logs(trace_id))
    assert messages == ["after fork", "before fork", "in child"]
