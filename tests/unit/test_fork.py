"""A forked child starts clean: no lock held by a parent thread, no parent counts."""

from __future__ import annotations

from pathlib import Path

from tests.integration.jobs import run_traced

FORK_DURING_SHUTDOWN = """
import json, os, signal, sys, threading
import glmtrace
from glmtrace._internal.runtime import DEFAULT


class SlowPart:
    name = "slow"

    def __init__(self):
        self.entered = threading.Event()
        self.forked = threading.Event()

    def flush(self, timeout):
        if os.getpid() == parent:
            self.entered.set()
            self.forked.wait(10)  # hold shutdown() (and its lock) until the fork is done
        return True


parent = os.getpid()
part = SlowPart()
DEFAULT.register(part)
glmtrace.init(service_name="parent", store="parent.db", shutdown_timeout=10)
closing = threading.Thread(target=glmtrace.shutdown)
closing.start()
assert part.entered.wait(10)  # shutdown() is running now, holding the runtime's lock
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # a hang ends the child with SIGALRM instead of hanging the test
    glmtrace.init(service_name="child", store="child.db", shutdown_timeout=10)
    with glmtrace.span("in child"):
        pass
    os._exit(0 if glmtrace.shutdown() else 3)
part.forked.set()
_, status = os.waitpid(pid, 0)
closing.join()
print(json.dumps({"status": status}))
"""


def test_fork_during_shutdown_does_not_hang_the_child(tmp_path: Path) -> None:
    """A child forked while a parent thread runs shutdown() can init, trace and shut down."""
    assert run_traced(FORK_DURING_SHUTDOWN, tmp_path)["status"] == 0


COUNTS_AFTER_FORK = """
import json, os
import glmtrace
from glmtrace._internal.stats import STATS

STATS.add("some-sink", "exported", 5)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, json.dumps(glmtrace.stats()).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps({"child": json.loads(os.read(read, 65536)), "parent": glmtrace.stats()}))
"""


def test_forked_child_counts_only_its_own_work(tmp_path: Path) -> None:
    """stats() in a forked child starts empty; the parent keeps its counts."""
    result = run_traced(COUNTS_AFTER_FORK, tmp_path)
    assert result == {"child": {}, "parent": {"some-sink": {"exported": 5}}}
