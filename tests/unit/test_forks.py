"""The fork helper: hooks run in a forked child only, and hold bound methods weakly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.integration.jobs import run_traced

HOOKS = """
import json, os, weakref
from glmtrace._internal import forks

ran = []


class Part:
    def __init__(self, name):
        self.name = name

    def reset(self):
        ran.append(self.name)


kept, gone = Part("kept"), Part("collected")
forks.after_fork_in_child(kept.reset)
forks.after_fork_in_child(gone.reset)
forks.after_fork_in_child(lambda: ran.append("function"))
registered = len(forks._hooks)
collected = weakref.ref(gone)
del gone
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, json.dumps(ran).encode())
    os._exit(0)
os.close(write)
child = json.loads(os.read(read, 65536))
_, status = os.waitpid(pid, 0)
print(json.dumps({
    "parent": ran,
    "child": child,
    "status": status,
    "collected": collected() is None,
    "forgotten": registered - len(forks._hooks),
}))
"""


def test_hooks_run_in_the_child_in_order_and_never_in_the_parent(tmp_path: Path) -> None:
    """After a fork the child runs the live hooks in registration order; the parent none."""
    result = run_traced(HOOKS, tmp_path)
    assert (result["parent"], result["child"], result["status"]) == ([], ["kept", "function"], 0)


def test_a_bound_method_does_not_keep_its_object_alive(tmp_path: Path) -> None:
    """Registering an object's method leaves it collectable; its hook is then forgotten."""
    result = run_traced(HOOKS, tmp_path)
    assert (result["collected"], result["forgotten"]) == (True, 1)


FAILING_HOOK = """
import json, os
from glmtrace._internal.forks import after_fork_in_child

ran = []


def broken():
    raise RuntimeError("bug in a fork hook")


after_fork_in_child(broken)
after_fork_in_child(lambda: ran.append("next"))
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, json.dumps(ran).encode())
    os._exit(0)
os.close(write)
print(json.loads(os.read(read, 65536)))
os.waitpid(pid, 0)
"""


def test_a_failing_hook_is_reported_and_the_next_one_runs(tmp_path: Path) -> None:
    """Outside strict mode one hook's error is logged and the hooks after it still run."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(FAILING_HOOK), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "GLMTRACE_STRICT"}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env
    )
    assert (done.returncode, done.stdout.strip()) == (0, "['next']")
    assert "glmtrace internal error in broken after fork" in done.stderr
