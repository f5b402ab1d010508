"""``glmtrace doctor`` on a bad configuration: one clean message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glmtrace", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, "GLMTRACE_STORE": str(tmp_path / "g.db"), "COLUMNS": "1000", **env},
        cwd=tmp_path,
        timeout=120,
    )


def test_doctor_names_an_endpoint_with_a_bad_port(tmp_path: Path) -> None:
    out = doctor(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://u:SECRET@127.0.0.1:99999")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in out.stderr and "1-65535" in out.stderr
    assert "SECRET" not in out.stderr + out.stdout


def test_doctor_says_the_store_is_not_sqlite(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database\n")
    out = doctor(tmp_path, GLMTRACE_STORE=str(tmp_path / "notes.txt"))
    assert out.returncode == 0, out.stderr
    assert "not a SQLite database" in out.stdout
