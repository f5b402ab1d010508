"""What a program prints through logging is the same before init(), while traced, and after."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from glmtrace._internal.store.database import Store

PROGRAM = """
import logging, sys
import glmtrace
from glmtrace._internal.stats import STATS

lib = logging.getLogger("lib")  # its own handler, no level: WARNING through the root's level
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("lib %(levelname)s %(message)s"))
lib.addHandler(handler)
app = logging.getLogger("app")  # no handler anywhere: logging's last-resort printer


def emit(phase):
    for logger in (lib, app):
        logger.info("info %s", phase)
        logger.warning("warning %s", phase)
        logger.error("error %s", phase)


emit("before")
glmtrace.init(service_name="console", store=sys.argv[1])
emit("traced")
STATS.add("some-sink", "dropped")  # glmtrace's own warning, through its logger
glmtrace.shutdown()
emit("after")
"""


def _run(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROGRAM), str(tmp_path / "c.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _phase(lines: list[str], phase: str) -> list[str]:
    return [line.replace(phase, "PHASE") for line in lines if line.endswith(phase)]


def test_handlers_of_the_program_print_the_same_while_traced(tmp_path: Path) -> None:
    """A logger with its own StreamHandler and no level prints no INFO after init()."""
    out = _run(tmp_path).stdout.splitlines()
    before = _phase(out, "before")
    assert before == ["lib WARNING warning PHASE", "lib ERROR error PHASE"]
    assert _phase(out, "traced") == before
    assert _phase(out, "after") == before


def test_last_resort_printer_still_prints(tmp_path: Path) -> None:
    """Unhandled warnings (the program's and glmtrace's own) still reach stderr when traced."""
    err = _run(tmp_path).stderr.splitlines()
    before = _phase(err, "before")
    assert before == ["warning PHASE", "error PHASE"]
    assert _phase(err, "traced") == before
    assert _phase(err, "after") == before
    assert any("dropping telemetry for sink 'some-sink'" in line for line in err), err


def test_info_records_are_captured_all_the_same(tmp_path: Path) -> None:
    """What no console shows is still captured: INFO lines of both loggers are stored."""
    _run(tmp_path)
    messages = {d["message"] for d in Store(tmp_path / "c.db").all_logs()}
    assert {"info traced", "warning traced", "error traced"} <= messages
    assert not {"info before", "info after"} & messages
