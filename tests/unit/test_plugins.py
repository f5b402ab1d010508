"""Plugins through entry points: the example package end to end, and broken ones contained.

The example (examples/plugins/glmtrace-jsonl) is installed in the test environment by
scripts/setup.sh. Broken plugins are real distributions too: a ``*.dist-info`` with an
``entry_points.txt`` written into a directory put on ``sys.path`` (in-process) or
``PYTHONPATH`` (in a child interpreter), which is how ``importlib.metadata`` finds any package.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from glmtrace import ConfigError
from glmtrace._internal.cli.main import main
from glmtrace._internal.config import resolve
from glmtrace._internal.runtime import Runtime

BROKEN_MODULE = """
from glmtrace_jsonl import JsonlLogSink, JsonlSpanExporter

def refuse(options):
    raise RuntimeError("no license key for the log service")

def not_a_sink(options):
    return print  # callable, but no watch_queue/close

class FailingSink(JsonlLogSink):
    def __call__(self, batch):
        raise ConnectionError("log service unreachable")

class FailingExporter(JsonlSpanExporter):
    def export(self, spans):
        raise ConnectionError("trace service unreachable")

def failing_sink(options):
    return FailingSink(None)

def failing_exporter(options):
    return FailingExporter(None)
"""
ENTRY_POINTS = """
[glmtrace.log_sinks]
badimport = glmtrace_no_such_module:create
refuses = glmtrace_broken:refuse
notasink = glmtrace_broken:not_a_sink
failing = glmtrace_broken:failing_sink

[glmtrace.span_exporters]
badimport = glmtrace_no_such_module:create
refuses = glmtrace_broken:refuse
failing = glmtrace_broken:failing_exporter
"""


def _require_example() -> None:
    names = {ep.name for ep in entry_points(group="glmtrace.log_sinks")}
    if "jsonl" not in names:
        pytest.fail(
            "the example plugin is not installed; run: bash scripts/setup.sh "
            "(pip install examples/plugins/glmtrace-jsonl)",
            pytrace=False,
        )


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding the broken plugins' distribution, on sys.path for this test."""
    _require_example()
    site = tmp_path / "site"
    info = site / "glmtrace_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: glmtrace-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "glmtrace_broken.py").write_text(BROKEN_MODULE)
    monkeypatch.syspath_prepend(str(site))
    return site


def _job(tmp_path: Path, code: str, **env: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter as a user would (not strict); last line is JSON."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k != "GLMTRACE_STRICT"}
    if "PYTHONPATH" in env:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env["PYTHONPATH"], *sys.path]))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**clean, "GLMTRACE_JSONL_DIR": str(tmp_path / "out"), **env},
        check=False,
    )
    assert done.returncode == 0, f"job failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


JOB = """
    import json, logging, glmtrace
    glmtrace.init(service_name="plugin-job", store="local.db")
    with glmtrace.span("step") as span:
        logging.getLogger("job").warning("inside the step")
        trace_id = glmtrace.current_trace_id()
    glmtrace.shutdown(5)
    print(json.dumps({"trace_id": trace_id, "stats": glmtrace.stats()}))
"""


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_example_plugin_selected_by_environment_receives_spans_and_logs(tmp_path: Path) -> None:
    _require_example()
    result = _job(tmp_path, JOB, GLMTRACE_TRACES="jsonl", GLMTRACE_LOGS="jsonl")
    spans = _lines(tmp_path / "out" / "spans.jsonl")
    logs = _lines(tmp_path / "out" / "logs.jsonl")
    assert [s["name"] for s in spans] == ["step"]
    assert spans[0]["context"]["trace_id"] == f"0x{result['trace_id']}"
    (record,) = [d for d in logs if d["message"] == "inside the step"]
    assert record["trace.id"] == result["trace_id"]
    assert result["stats"]["jsonl"]["exported"] == 1
    assert result["stats"]["logs-jsonl"]["exported"] == len(logs)


def test_example_plugin_selected_by_init_arguments(tmp_path: Path) -> None:
    _require_example()
    code = JOB.replace(
        'store="local.db"', 'store="local.db", traces="jsonl", logs=["local", "jsonl"]'
    )
    result = _job(tmp_path, code)
    assert [s["name"] for s in _lines(tmp_path / "out" / "spans.jsonl")] == ["step"]
    assert any(d["message"] == "inside the step" for d in _lines(tmp_path / "out" / "logs.jsonl"))
    assert result["stats"]["logs-local"]["exported"] >= 1


@pytest.mark.parametrize(
    ("arguments", "named", "cause"),
    [
        ({"logs": ["badimport"]}, "'badimport' (glmtrace_no_such_module:create)", "import"),
        ({"traces": "refuses"}, "span exporter plugin 'refuses'", "no license key"),
        ({"logs": ["refuses"]}, "log sink plugin 'refuses'", "no license key"),
        ({"logs": ["notasink"]}, "log sink plugin 'notasink'", "lacks watch_queue, close"),
    ],
)
def test_broken_plugin_given_to_init_is_a_config_error_naming_it_and_the_cause(
    broken: Path, tmp_path: Path, arguments: dict[str, Any], named: str, cause: str
) -> None:
    runtime = Runtime()
    with pytest.raises(ConfigError) as info:
        runtime.init(service_name="t", store=tmp_path / "db", **arguments)
    assert named in str(info.value) and cause in str(info.value)
    assert runtime.tracer is None  # nothing left half-running


def test_unknown_sink_name_lists_the_installed_plugins(broken: Path) -> None:
    with pytest.raises(ConfigError, match=r"not one of .*'jsonl'"):
        resolve({"logs": ["jsnol"]})


@pytest.mark.parametrize("variable", ["GLMTRACE_LOGS", "GLMTRACE_TRACES"])
@pytest.mark.parametrize("plugin", ["badimport", "refuses"])
def test_broken_plugin_from_the_environment_never_stops_the_program(
    broken: Path, tmp_path: Path, variable: str, plugin: str
) -> None:
    result = _job(tmp_path, JOB, PYTHONPATH=str(broken), **{variable: plugin})
    assert result["trace_id"]
    assert f"plugin {plugin!r}" in result["stderr"], result["stderr"]


def test_plugin_failing_at_runtime_is_counted_and_contained(broken: Path, tmp_path: Path) -> None:
    result = _job(
        tmp_path, JOB, PYTHONPATH=str(broken), GLMTRACE_TRACES="failing", GLMTRACE_LOGS="failing"
    )
    assert result["trace_id"]
    assert result["stats"]["failing"] == {"dropped": 1}
    assert result["stats"]["logs-failing"]["dropped"] >= 1
    assert "exported" not in result["stats"]["logs-failing"]


def test_doctor_lists_the_plugins_found(broken: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    out = CliRunner().invoke(main, ["doctor"], env={"COLUMNS": "200"}).output
    assert "glmtrace_jsonl:create_log_sink" in out and "glmtrace-jsonl 0.1.0" in out
    assert "glmtrace_no_such_module:create" in out  # listed even though it cannot be imported
