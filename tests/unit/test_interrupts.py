"""Spans a signal cuts short are marked interrupted; a signal during exit stays quiet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import glmtrace
from glmtrace._internal.store.database import Store
from tests.conftest import Traced

SIGTERM_PROGRAM = """
import os, signal, sys, time
import glmtrace

glmtrace.init(service_name="interrupted", store=sys.argv[1])


@glmtrace.stage("train")
def train():
    with glmtrace.span("step") as step:
        print(step.trace_id, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)


train()
"""


def _interruption(span: dict[str, object]) -> tuple[object, ...]:
    events = [
        (e["name"], e["attributes"])  # type: ignore[index]
        for e in span["events"]  # type: ignore[attr-defined]
    ]
    return span["status"], span["status_message"], events


def test_spans_open_at_sigterm_end_in_error_naming_the_signal(tmp_path: Path) -> None:
    """Every span open when SIGTERM arrives ends ERROR with a glmtrace.interrupted event."""
    store = tmp_path / "t.db"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SIGTERM_PROGRAM), str(store)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    spans = {s["name"]: s for s in Store(store).spans(proc.stdout.split()[0])}
    assert set(spans) == {"stage train", "step"}
    for span in spans.values():
        assert _interruption(span) == (
            "ERROR",
            "interrupted by SIGTERM",
            [("glmtrace.interrupted", {"signal": "SIGTERM"})],
        )


def test_keyboard_interrupt_marks_spans_interrupted_by_sigint(traced: Traced) -> None:
    """Ctrl-C (KeyboardInterrupt) through a span and a stage marks both interrupted."""

    @glmtrace.stage("work")
    def work() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), glmtrace.span("outer"):
        work()
    for name in ("outer", "stage work"):
        assert _interruption(traced.one(name)) == (
            "ERROR",
            "interrupted by SIGINT",
            [("glmtrace.interrupted", {"signal": "SIGINT"})],
        )


def test_sys_exit_is_no_failure(traced: Traced) -> None:
    """sys.exit() through a span leaves its status alone."""
    with pytest.raises(SystemExit), glmtrace.span("done"):
        sys.exit(0)
    assert _interruption(traced.one("done")) == ("UNSET", None, [])


SLOW_EXIT_PROGRAM = """
import sys, time
import glmtrace
from glmtrace._internal.runtime import DEFAULT


class SlowPart:
    name = "slow"

    def flush(self, timeout):
        print("flushing", flush=True)
        time.sleep(60)
        return True


glmtrace.init(service_name="slow-exit", store=sys.argv[1], shutdown_timeout=60)
DEFAULT.register(SlowPart())
print("exiting", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_exit_time_shutdown_is_quiet(tmp_path: Path, signum: int) -> None:
    """Ctrl-C or SIGTERM while the exit hook flushes ends the program without a traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SLOW_EXIT_PROGRAM), str(tmp_path / "s.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "exiting\n"
        assert proc.stdout.readline() == "flushing\n"  # the atexit hook is waiting now
        os.kill(proc.pid, signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "Exception ignored" not in stderr
    assert "Traceback" not in stderr


HELD_OPEN_PROGRAM = """
import os, signal, sys, threading, time
import glmtrace

glmtrace.init(service_name="held", store=sys.argv[1])


def serve():  # a non-daemon loop: the interpreter waits for it before running atexit
    while True:
        time.sleep(0.05)


if sys.argv[2] == "thread":
    threading.Thread(target=serve).start()
try:
    with glmtrace.span("work") as work:
        print(work.trace_id, flush=True)
        time.sleep(60)
except BaseException:
    if sys.argv[2] == "swallow":  # a program that ignores SystemExit and carries on
        time.sleep(60)
    raise
"""


@pytest.mark.parametrize("holder", ["thread", "swallow"])
def test_sigterm_ends_a_process_that_systemexit_cannot(tmp_path: Path, holder: str) -> None:
    """A non-daemon thread or a swallowed SystemExit: SIGTERM still kills, after a flush."""
    store = tmp_path / "t.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HELD_OPEN_PROGRAM), str(store), holder],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GLMTRACE_SHUTDOWN_TIMEOUT": "1"},
    )
    try:
        assert proc.stdout is not None
        trace_id = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # still running: the bug; do not leave it behind
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGTERM, err
    (span,) = Store(store).spans(trace_id)
    assert span["name"] == "work"
    assert span["status"] == "ERROR"


BLOCKED_IN_C_PROGRAM = """
import hashlib, sys, threading, time
import glmtrace

glmtrace.init(service_name="blocked", store=sys.argv[1])
with glmtrace.span("before") as before:
    pass


def announce():
    # Ready once the main thread is on the line of the C call and lets this thread run:
    # it has released the GIL, inside the call.
    main = threading.main_thread().ident
    while sys._current_frames()[main].f_lineno != BLOCKED_LINE:
        time.sleep(0.01)
    time.sleep(0.2)
    print(before.trace_id, flush=True)


BLOCKED_LINE = sys._getframe().f_lineno + 4
threading.Thread(target=announce, daemon=True).start()
# Minutes of C code that releases the GIL and never returns to the interpreter, as a hung
# collective does: Python's SIGTERM handler cannot run until it returns.
hashlib.pbkdf2_hmac("sha512", b"password", b"salt", 10**9)
print("returned", flush=True)
"""


def test_sigterm_ends_a_process_whose_main_thread_is_blocked_in_c(tmp_path: Path) -> None:
    """Without glmtrace SIGTERM kills such a process at once; with it, the process still dies
    by the signal (after flushing what had finished), not when the C call returns."""
    store = tmp_path / "t.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(BLOCKED_IN_C_PROGRAM), str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        trace_id = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # minutes of C code otherwise, when the test fails
    assert proc.returncode == -signal.SIGTERM, err
    assert "returned" not in out
    assert [s["name"] for s in Store(store).spans(trace_id)] == ["before"]


FORKED_CHILD_SIGTERM_PROGRAM = """
import os, signal, sys, time
import glmtrace
from glmtrace._internal import signals

glmtrace.init(service_name="parent", store=sys.argv[1])
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
_, status = os.waitpid(pid, 0)
time.sleep(signals._GRACE_S + 1.0)  # what the listener would wait before acting
print("alive", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_a_forked_childs_sigterm_does_not_reach_the_parents_listener(tmp_path: Path) -> None:
    """The child inherits the parent's wakeup pipe: its signals must not end the parent."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(FORKED_CHILD_SIGTERM_PROGRAM),
            str(tmp_path / "t.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout.split()) == (0, ["alive", str(128 + signal.SIGTERM)])
