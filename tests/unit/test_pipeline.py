"""Pipeline files: validation errors name the file, stage and key; stages get their config."""

from __future__ import annotations

from pathlib import Path

import pytest

import glmtrace
from glmtrace._internal import pipeline
from glmtrace._internal.runtime import DEFAULT
from tests.conftest import Traced


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pipeline: []", "non-empty list"),
        ("stages: []", "expected a mapping with a 'pipeline'"),
        ("pipeline:\n  - module: m", "pipeline[0]: missing required key 'stage'"),
        ("pipeline:\n  - stage: a", "pipeline[0]: missing required key 'module'"),
        ("pipeline:\n  - {stage: a, module: m, config: 3}", "pipeline[0].config: expected dict"),
        (
            "pipeline:\n  - {stage: a, module: m}\n  - {stage: 5, module: m}",
            "pipeline[1].stage: expected str",
        ),
        ("pipeline: [", "not valid YAML"),
        ("pipeline:\n  - {stage: a, module: m}\nextra: 1", "unknown top-level key"),
    ],
)
def test_invalid_pipeline(tmp_path: Path, text: str, message: str) -> None:
    """Each schema error raises ConfigError with the file name and the location."""
    with pytest.raises(glmtrace.ConfigError) as info:
        pipeline.load(write(tmp_path, text))
    assert str(tmp_path / "p.yaml") in str(info.value)
    assert message in str(info.value)


def test_stages_run_in_order_with_redacted_config(tmp_path: Path, traced: Traced) -> None:
    """Stage modules from the YAML's folder are invoked in order; secrets in config are redacted."""
    (tmp_path / "upper.py").write_text(
        "def invoke(envelope, config):\n"
        "    return {**envelope, 'payload': envelope['payload'].upper() + config['suffix']}\n"
    )
    path = write(
        tmp_path,
        "pipeline:\n"
        "  - {stage: shout, module: upper, config: {suffix: '!', api_key: sk-123}}\n"
        "  - {stage: again, module: upper, config: {suffix: '?'}}\n",
    )
    result = pipeline.run(DEFAULT, pipeline.load(path), pipeline.new_envelope("hi", "s1"))
    assert result.error is None and result.envelope is not None
    assert result.envelope["payload"] == "HI!?"
    shout = traced.one("stage shout")
    assert shout["attributes"]["glmtrace.config.api_key"] == "[REDACTED]"
    assert shout["attributes"]["glmtrace.module"] == "upper"
    assert shout["parent_span_id"] == traced.one("pipeline p")["span_id"]


def test_failing_stage_is_recorded_and_returned(tmp_path: Path, traced: Traced) -> None:
    """A stage that raises: its span is ERROR, the run returns the error and the trace id."""
    (tmp_path / "broken.py").write_text("def invoke(envelope, config):\n    raise KeyError('x')\n")
    path = write(tmp_path, "pipeline:\n  - {stage: b, module: broken}\n")
    result = pipeline.run(DEFAULT, pipeline.load(path), pipeline.new_envelope("hi"))
    assert isinstance(result.error, KeyError)
    assert result.trace_id == traced.one("stage b")["trace_id"]
    assert traced.one("stage b")["status"] == "ERROR"


def test_missing_module_is_a_config_error(tmp_path: Path, traced: Traced) -> None:
    """An unimportable module names the stage index and the module."""
    path = write(tmp_path, "pipeline:\n  - {stage: a, module: no_such_module_xyz}\n")
    with pytest.raises(
        glmtrace.ConfigError, match=r"pipeline\[0\]\.module: cannot import 'no_such_module_xyz'"
    ):
        pipeline.run(DEFAULT, pipeline.load(path), pipeline.new_envelope("x"))
