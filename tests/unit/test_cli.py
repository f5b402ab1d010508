"""The glmtrace CLI end to end on the example pipeline and the local store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.store.database import Store
from tests.unit.batch_job import SENTENCE

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
        "kind",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "status",
        "status_message",
        "service_name",
        "attributes",
        "events",
        "links",
        "resource",
    }
    assert set(doc["logs"][0]) == {
        "timestamp",
        "level",
        "message",
        "trace.id",
        "span.id",
        "logger",
        "fields",
    }


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
    runs = out[out.index("last runs") :]
    # ended (date, time), pid, service, sink, exported, spooled, replayed, dropped
    rows = [line.split() for line in runs.splitlines() if "autoglm" in line]
    sinks = {row[4]: row for row in rows}
    assert {"local", "logs-local"} <= set(sinks)
    exported = int(sinks["local"][5])
    assert exported >= 4  # pipeline root, two stages, the chat span
    assert all(row[8] == "0" for row in rows)  # nothing dropped


BATCH_JOB = Path(__file__).with_name("batch_job.py")


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding batch_job.py's traces; returns it and the batch's trace id."""
    store = tmp_path_factory.mktemp("batch") / "glmtrace.db"
    done = subprocess.run(
        [sys.executable, str(BATCH_JOB)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GLMTRACE_STORE": str(store)},
        check=True,
    )
    return store, done.stdout.strip()


def _strict_json(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_show_json_has_every_field_the_store_holds(batch_run: tuple[Path, str]) -> None:
    """show --json keeps kind, status message, service, resource, events and named links."""
    store, trace_id = batch_run
    doc = json.loads(glmtrace_cli("show", trace_id, "--json", store=store).stdout)
    spans = {s["name"]: s for s in doc["spans"]}
    fail = spans["fail"]
    assert fail["status_message"] == "ValueError: bad value"
    assert fail["kind"] == "INTERNAL" and fail["service_name"] == "batcher"
    assert fail["resource"]["service.name"] == "batcher" and fail["resource"]["process.pid"]
    (event,) = fail["events"]
    assert event["name"] == "exception"
    assert fail["start_time_unix_nano"] <= event["time_unix_nano"] <= fail["end_time_unix_nano"]
    assert "raise ValueError" in event["attributes"]["exception.stacktrace"]
    links = spans["batch decode"]["links"]
    assert len(links) == 3
    assert {li["name"] for li in links} == {"chat chatglm3"}
    assert {li["attributes"]["glmtrace.link.role"] for li in links} == {"request"}
    assert all(li["trace_id"] != trace_id for li in links)
    (log,) = doc["logs"]
    assert "raise ValueError" in log["fields"]["error.stack_trace"]


def test_show_tree_shows_links_to_other_traces(batch_run: tuple[Path, str]) -> None:
    """The tree names each span the batch links to, with its full trace and span id."""
    store, trace_id = batch_run
    doc = json.loads(glmtrace_cli("show", trace_id, "--json", store=store).stdout)
    links = next(s for s in doc["spans"] if s["name"] == "batch decode")["links"]
    out = glmtrace_cli("show", trace_id, store=store).stdout
    for link in links:
        assert f"→ linked request: {link['trace_id']}/{link['span_id']} chat chatglm3" in out


def test_json_outputs_are_strict_for_nan_and_infinity(
    batch_run: tuple[Path, str], tmp_path: Path
) -> None:
    """show --json and export write NaN/Infinity as strings: strict JSON parsers accept both."""
    store, trace_id = batch_run
    doc = _strict_json(glmtrace_cli("show", trace_id, "--json", store=store).stdout)
    assert isinstance(doc, dict)
    serve = next(s for s in doc["spans"] if s["name"] == "serve")
    assert (serve["attributes"]["loss"], serve["attributes"]["best"]) == ("NaN", "Infinity")
    target = tmp_path / "t.json"
    glmtrace_cli("export", trace_id, "-o", str(target), store=store)
    _strict_json(target.read_text())


def test_export_draws_links_as_flow_events(batch_run: tuple[Path, str], tmp_path: Path) -> None:
    """export brings the linked request traces along and joins each link by an s/f flow pair
    that starts at the request's slice and ends at the batch's."""
    store, trace_id = batch_run
    target = tmp_path / "t.json"
    glmtrace_cli("export", trace_id, "-o", str(target), store=store)
    events = json.loads(target.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]

    def enclosing(flow: dict[str, Any]) -> str:
        """The innermost slice on the flow event's thread that is open at its time."""
        open_then = [
            e
            for e in slices
            if (e["pid"], e["tid"]) == (flow["pid"], flow["tid"])
            and e["ts"] < flow["ts"] < e["ts"] + e["dur"]
        ]
        return str(max(open_then, key=lambda e: e["ts"])["name"])

    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert len(starts) == 3 and starts.keys() == ends.keys()
    for flow_id, start in starts.items():
        assert enclosing(start) == "chat chatglm3"
        assert enclosing(ends[flow_id]) == "batch decode"
        assert ends[flow_id]["bp"] == "e"


def test_ls_never_cuts_trace_ids_at_80_columns(batch_run: tuple[Path, str]) -> None:
    """At 80 columns every trace id is printed whole, and no line is wider."""
    store, _ = batch_run
    env = {**os.environ, "GLMTRACE_STORE": str(store), "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "glmtrace", "ls"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    trace_ids = [summary.trace_id for summary in Store(store).recent(10)]
    assert len(trace_ids) == 4
    for trace_id in trace_ids:
        assert trace_id in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_ls_json(batch_run: tuple[Path, str]) -> None:
    """ls --json lists every trace, newest first, with its root, counts and start time."""
    store, trace_id = batch_run
    rows = json.loads(glmtrace_cli("ls", "--json", store=store).stdout)
    assert len(rows) == 4
    assert [r["root"] for r in rows] == ["serve", "request 2", "request 1", "request 0"]
    assert rows[0]["trace_id"] == trace_id
    assert (rows[0]["span_count"], rows[0]["error_count"]) == (3, 1)
    # The trace's start and length are those of its spans, as the store holds them.
    spans = Store(store).spans(trace_id)
    start = min(s["start_ns"] for s in spans)
    assert rows[0]["start_time_unix_nano"] == start
    assert rows[0]["duration_ns"] == max(s["end_ns"] for s in spans) - start


def test_tree_ellipsizes_attribute_values_at_a_word(batch_run: tuple[Path, str]) -> None:
    """A long attribute value is cut after a whole word and marked with "…"."""
    store, trace_id = batch_run
    out = glmtrace_cli("show", trace_id, store=store).stdout
    shown = re.search(r"prompt=([^…]*)…", out)
    assert shown, out
    words = shown.group(1).split()
    assert words and words == SENTENCE.split()[: len(words)]


def test_doctor_says_a_missing_store_is_not_created_yet(tmp_path: Path) -> None:
    """A store that does not exist yet is reported as such, not as down."""
    out = glmtrace_cli("doctor", store=tmp_path / "later.db").stdout
    health = out[out.index("┃ endpoint") :]  # the health table follows the settings table
    (row,) = [line for line in health.splitlines() if "later.db" in line]
    assert "not created yet" in row and "down" not in row


@pytest.mark.parametrize(
    "args",
    [
        ("ls",),
        ("ls", "--json"),
        ("show", "abcdef12"),
        ("export", "abcdef12", "-o", "x.json"),
        ("push", "--otlp", "http://127.0.0.1:9"),
        ("run", str(EXAMPLE), "--input", "x"),
    ],
)
def test_store_that_is_a_directory_is_a_one_line_error(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """GLMTRACE_STORE naming a directory: exit 1 and one line naming it, no traceback."""
    out = glmtrace_cli(*args, store=tmp_path, check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert (
        out.stderr.strip() == f"Error: {tmp_path} is a directory, not a glmtrace store file "
        "(see GLMTRACE_STORE)"
    )


def test_doctor_reports_a_store_that_is_a_directory(tmp_path: Path) -> None:
    """doctor keeps going and says the store is a directory."""
    out = glmtrace_cli("doctor", store=tmp_path)
    assert "is a directory" in out.stdout and "Traceback" not in out.stderr


def test_run_with_a_module_failing_at_import(tmp_path: Path) -> None:
    """A stage module raising at import: one clean error naming module and file, exit 1, and
    the recorded trace's stage span holds the error."""
    (tmp_path / "broken.py").write_text(
        "raise RuntimeError('no GPU here')\ndef invoke(envelope, config):\n    return envelope\n"
    )
    (tmp_path / "p.yaml").write_text("pipeline:\n  - {stage: boom, module: broken}\n")
    store = tmp_path / "s.db"
    out = glmtrace_cli("run", str(tmp_path / "p.yaml"), "--input", "x", store=store, check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    (error,) = out.stderr.strip().splitlines()
    assert "'broken'" in error and str(tmp_path / "broken.py") in error
    assert "RuntimeError: no GPU here" in error
    trace_id = re.search(r"trace_id: ([0-9a-f]{32})", out.stdout)
    assert trace_id, out.stdout
    doc = json.loads(glmtrace_cli("show", trace_id.group(1), "--json", store=store).stdout)
    stage = next(s for s in doc["spans"] if s["name"] == "stage boom")
    assert stage["status"] == "ERROR"
    assert stage["events"][0]["attributes"]["exception.type"] == "RuntimeError"


def test_run_refuses_modules_outside_the_folder_without_the_flag(tmp_path: Path) -> None:
    """A module only on sys.path needs --allow-outside-modules; with it the pipeline runs."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "outside_stage.py").write_text(
        "def invoke(envelope, config):\n    return {**envelope, 'payload': 'from outside'}\n"
    )
    (tmp_path / "p.yaml").write_text("pipeline:\n  - {stage: a, module: outside_stage}\n")
    env = {
        **os.environ,
        "GLMTRACE_STORE": str(tmp_path / "s.db"),
        "PYTHONPATH": os.pathsep.join([str(elsewhere), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "glmtrace", "run", str(tmp_path / "p.yaml"), "--input", "x"]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 1 and "--allow-outside-modules" in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = subprocess.run(
        [*command, "--allow-outside-modules"], capture_output=True, text=True, env=env, timeout=60
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "from outside" in allowed.stdout
