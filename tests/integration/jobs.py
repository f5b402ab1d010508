"""Running a traced program in a fresh interpreter, as users do: one runtime per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def run_traced(code: str, tmp_path: Path, timeout: float = 120) -> dict[str, Any]:
    """Run ``code`` in ``tmp_path`` under strict mode; its last stdout line is JSON."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, "GLMTRACE_STRICT": "1"},
        check=False,
    )
    assert done.returncode == 0, f"job failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
