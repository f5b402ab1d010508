"""What README shows a user typing works as shown."""

from __future__ import annotations

import subprocess
import sys


def test_readme_torch_snippet_reaches_glmtrace_distributed_after_import_glmtrace() -> None:
    """A fresh interpreter, as a user copying README's snippet has one (``glmtrace.testing``
    too: both are submodules that ``import glmtrace`` alone once left unreachable)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import glmtrace; glmtrace.distributed.worker_init_fn; glmtrace.testing.capture",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
