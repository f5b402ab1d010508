"""The glmtrace CLI end to end on the example pipeline and the local store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "autoglm" / "pipeline.yaml"


def glmtrace_cli(*args: str, store: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GLMTRACE_STORE": str(store), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "glmtrace", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("cli") / "glmtrace.db"
    out = glmtrace_cli(
        "run", str(EXAMPLE), "--input", "<p>Hello <b>GLM</b></p>", "--session", "s-1", store=store
    )
    match = re.search(r"trace_id: ([0-9a-f]{32})", out.stdout)
    assert match, out.stdout
    return store, match.group(1)


def test_run_prints_trace_id_and_tree(example_run: tuple[Path, str]) -> None:
    """`glmtrace run` prints the trace id and a tree with both stages and their logs."""
    store, trace_id = example_run
    out = glmtrace_cli("show", trace_id, store=store).stdout
    for text in (
        "pipeline autoglm",
        "stage preprocess",
        "stage infer",
        "cleaned text",
        "routing request",
    ):
        assert text in out


def test_show_json_has_stages_under_root_with_logs(example_run: tuple[Path, str]) -> None:
    """show --json: root with preprocess and infer children; each stage logged with its span id."""
    store, trace_id = example_run
    doc = json.loads(glmtrace_cli("show", trace_id[:10], "--json", store=store).stdout)
    assert doc["trace_id"] == trace_id
    spans = {s["name"]: s for s in doc["spans"]}
    root = spans["pipeline autoglm"]
    assert root["parent_span_id"] is None
    for stage in ("stage preprocess", "stage infer"):
        assert spans[stage]["parent_span_id"] == root["span_id"]
        assert spans[stage]["trace_id"] == trace_id
        assert spans[stage]["attributes"]["session.id"] == "s-1"
        logged = [entry for entry in doc["logs"] if entry["span.id"] == spans[stage]["span_id"]]
        assert logged and all(entry["trace.id"] == trace_id for entry in logged)
    assert spans["stage infer"]["attributes"]["glmtrace.config.model_hint"] == "chatglm3"
    assert set(doc["spans"][0]) == {
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "status",
        "attributes",
    }
    assert set(doc["logs"][0]) == {"timestamp", "level", "message", "trace.id", "span.id", "logger"}


def test_ls_lists_the_trace(example_run: tuple[Path, str]) -> None:
    """`glmtrace ls` lists the trace with its root span name."""
    store, trace_id = example_run
    out = glmtrace_cli("ls", "--limit", "5", store=store).stdout
    assert trace_id in out and "pipeline autoglm" in out


def test_export_perfetto(example_run: tuple[Path, str], tmp_path: Path) -> None:
    """export --format perfetto writes trace events: complete spans and instant logs."""
    store, trace_id = example_run
    target = tmp_path / "t.json"
    glmtrace_cli("export", trace_id, "--format", "perfetto", "-o", str(target), store=store)
    events = json.loads(target.read_text())["traceEvents"]
    phases = {e["ph"] for e in events}
    assert {"X", "i", "M"} <= phases
    names = {e["name"] for e in events if e["ph"] == "X"}
    assert {"pipeline autoglm", "stage preprocess", "stage infer"} <= names


@pytest.mark.parametrize(
    "args",
    [
        ("show", "ffffffffffffffff"),
        ("show", "xyz"),
        ("ls",),
        ("export", "abcdef12", "-o", "x.json"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A missing store or unknown id exits non-zero with one clear line, no traceback."""
    out = glmtrace_cli(*args, store=tmp_path / "missing.db", check=False)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("Error:")


def test_unknown_trace_in_existing_store(example_run: tuple[Path, str]) -> None:
    """An id that is not in the store is reported as such."""
    store, _ = example_run
    out = glmtrace_cli("show", "0123456789abcdef", store=store, check=False)
    assert out.returncode == 1 and "no trace 0123456789abcdef" in out.stderr


def test_bad_pipeline_names_file_index_and_key(tmp_path: Path) -> None:
    """`glmtrace run` on an invalid pipeline prints the file, stage index and key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline:\n  - stage: a\n    module: m\n    colour: blue\n")
    out = glmtrace_cli("run", str(bad), "--input", "x", store=tmp_path / "s.db", check=False)
    assert out.returncode == 1
    assert "bad.yaml: pipeline[0]: unknown key 'colour'" in out.stderr


def test_doctor_shows_sources_and_hides_secrets(tmp_path: Path) -> None:
    """doctor prints each setting's source and never a credential."""
    env = {
        **os.environ,
        "GLMTRACE_STORE": str(tmp_path / "d.db"),
        "COLUMNS": "200",
        "OTEL_SERVICE_NAME": "svc",
        "GLMTRACE_ES_URL": "http://elastic:url-secret-77@127.0.0.1:1",
        "GLMTRACE_ES_PASSWORD": "hunter2-secret",
    }
    out = subprocess.run(
        [sys.executable, "-m", "glmtrace", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "OTEL_SERVICE_NAME" in out.stdout and "svc" in out.stdout
    assert "hunter2-secret" not in out.stdout + out.stderr
    assert "url-secret-77" not in out.stdout + out.stderr
    assert "elastic:***@127.0.0.1:1" in out.stdout


def test_doctor_shows_what_the_last_run_exported(example_run: tuple[Path, str]) -> None:
    """doctor lists the example run's counters per sink: spans and logs exported, none dropped."""
    store, _ = example_run
    out = glmtrace_cli("doctor", store=store).stdout
    rows = [line for line in out.splitlines() if "autoglm" in line]
    sinks = {row.split("│")[4].strip(): row for row in rows}
    assert {"local", "logs-local"} <= set(sinks)
    exported = int(sinks["local"].split("│")[5])
    assert exported >= 4  # pipeline root, two stages, the chat span
    assert all(row.split("│")[8].strip() == "0" for row in rows)  # nothing dropped
