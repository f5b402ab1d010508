"""Pipeline files: validation errors name the file, stage and key; stages get their config."""

from __future__ import annotations

import sys
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


def test_missing_module_is_a_config_error(tmp_path: Path) -> None:
    """A module that is not next to the file names the stage index, the module and the flag."""
    path = write(tmp_path, "pipeline:\n  - {stage: a, module: no_such_module_xyz}\n")
    with pytest.raises(
        glmtrace.ConfigError,
        match=r"pipeline\[0\]\.module: no module 'no_such_module_xyz'.*--allow-outside-modules",
    ):
        pipeline.load(path)


@pytest.mark.parametrize(
    "source",
    [
        "def invoke(envelope, config)\n    return envelope\n",  # SyntaxError
        "raise RuntimeError('no GPU here')\ndef invoke(envelope, config):\n    return envelope\n",
    ],
    ids=["syntax-error", "raises-at-import"],
)
def test_module_failing_at_import_is_recorded_on_its_stage_span(
    tmp_path: Path, traced: Traced, source: str
) -> None:
    """A module that fails to import: no stage runs, the run returns a clean error naming the
    module and file, and the trace holds the stage span with the error and its stack trace."""
    (tmp_path / "fine.py").write_text("def invoke(envelope, config):\n    return envelope\n")
    (tmp_path / "broken.py").write_text(source)
    path = write(
        tmp_path, "pipeline:\n  - {stage: first, module: fine}\n  - {stage: b, module: broken}\n"
    )
    result = pipeline.run(DEFAULT, pipeline.load(path), pipeline.new_envelope("hi"))
    assert isinstance(result.error, pipeline.StageImportError)
    assert "'broken'" in str(result.error) and str(tmp_path / "broken.py") in str(result.error)
    assert "pipeline[1] (stage 'b')" in str(result.error)
    stage = traced.one("stage b")
    assert stage["trace_id"] == result.trace_id
    assert stage["status"] == "ERROR"
    assert stage["parent_span_id"] == traced.one("pipeline p")["span_id"]
    (event,) = stage["events"]
    assert event["name"] == "exception"
    assert "broken.py" in event["attributes"]["exception.stacktrace"]
    assert "stage first" not in [s["name"] for s in traced.spans()]  # nothing ran


@pytest.mark.parametrize(
    "module",
    ["", "../outside", "../../etc/passwd", "/tmp/outside", "sub/../../outside", "a..b", "x.py"],
)
def test_module_must_be_a_name_inside_the_folder(tmp_path: Path, module: str) -> None:
    """Paths, empty and malformed module names are a ConfigError at load, nothing imported."""
    folder = tmp_path / "pipe"
    folder.mkdir()
    (tmp_path / "outside.py").write_text(
        f"open({str(tmp_path / 'ran')!r}, 'w').close()\ndef invoke(e, c):\n    return e\n"
    )
    path = write(folder, f"pipeline:\n  - {{stage: a, module: {module!r}}}\n")
    with pytest.raises(glmtrace.ConfigError, match=r"pipeline\[0\]\.module: .* is not a module"):
        pipeline.load(path)
    assert not (tmp_path / "ran").exists()


def test_sys_path_modules_need_the_opt_in(
    tmp_path: Path, traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module found only on sys.path is refused by default and runs with the opt-in."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = tmp_path / "imported"
    (elsewhere / "glmtrace_test_outside_stage.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def invoke(envelope, config):\n    return {**envelope, 'payload': 'outside'}\n"
    )
    monkeypatch.syspath_prepend(str(elsewhere))
    folder = tmp_path / "pipe"
    folder.mkdir()
    path = write(folder, "pipeline:\n  - {stage: a, module: glmtrace_test_outside_stage}\n")
    with pytest.raises(glmtrace.ConfigError, match="--allow-outside-modules"):
        pipeline.load(path)
    assert not marker.exists()
    allowed = pipeline.load(path, allow_outside_modules=True)
    result = pipeline.run(DEFAULT, allowed, pipeline.new_envelope("x"))
    assert result.envelope is not None and result.envelope["payload"] == "outside"
    sys.modules.pop("glmtrace_test_outside_stage", None)


def test_opted_in_package_module_keeps_its_relative_imports(
    tmp_path: Path, traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module of an installed package is imported by name, so `from . import x` works."""
    package = tmp_path / "site" / "glmtrace_test_stages"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "words.py").write_text("SUFFIX = '!'\n")
    (package / "shout.py").write_text(
        "from .words import SUFFIX\n"
        "def invoke(envelope, config):\n"
        "    return {**envelope, 'payload': envelope['payload'] + SUFFIX}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = write(tmp_path, "pipeline:\n  - {stage: a, module: glmtrace_test_stages.shout}\n")
    loaded = pipeline.load(path, allow_outside_modules=True)
    result = pipeline.run(DEFAULT, loaded, pipeline.new_envelope("hi"))
    assert result.error is None and result.envelope is not None
    assert result.envelope["payload"] == "hi!"
    for name in [m for m in sys.modules if m.startswith("glmtrace_test_stages")]:
        del sys.modules[name]


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    """A module file that links outside the pipeline's folder needs the opt-in."""
    folder = tmp_path / "pipe"
    folder.mkdir()
    (tmp_path / "real.py").write_text("def invoke(envelope, config):\n    return envelope\n")
    (folder / "linked.py").symlink_to(tmp_path / "real.py")
    path = write(folder, "pipeline:\n  - {stage: a, module: linked}\n")
    with pytest.raises(glmtrace.ConfigError, match="outside the pipeline's folder"):
        pipeline.load(path)
    code = pipeline.load(path, allow_outside_modules=True).stages[0].code
    assert code is not None and code.file == tmp_path / "real.py"


def test_module_without_invoke_is_refused_before_its_import_runs(tmp_path: Path) -> None:
    """The invoke check parses the module: its import side effects never run."""
    marker = tmp_path / "imported"
    (tmp_path / "noinvoke.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef run(envelope, config):\n    return envelope\n"
    )
    path = write(tmp_path, "pipeline:\n  - {stage: a, module: noinvoke}\n")
    with pytest.raises(glmtrace.ConfigError, match=r"'noinvoke' .* has no top-level invoke"):
        pipeline.load(path)
    assert not marker.exists()


def test_dotted_module_is_a_file_in_a_subfolder(tmp_path: Path, traced: Traced) -> None:
    """`module: stages.upper` is stages/upper.py next to the pipeline file."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "upper.py").write_text(
        "def invoke(envelope, config):\n    return {**envelope, 'payload': 'UP'}\n"
    )
    path = write(tmp_path, "pipeline:\n  - {stage: a, module: stages.upper}\n")
    result = pipeline.run(DEFAULT, pipeline.load(path), pipeline.new_envelope("x"))
    assert result.envelope is not None and result.envelope["payload"] == "UP"


_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]\n"
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("\n".join("      " + line for line in _LAUGHS.splitlines()), "aliases"),
        ("      loop: &loop [1, *loop]", "cycle"),
    ],
    ids=["billion-laughs", "recursive-alias"],
)
def test_yaml_aliases_are_bounded(tmp_path: Path, config: str, message: str) -> None:
    """A few hundred bytes of YAML aliases expanding to a billion values are refused at load."""
    (tmp_path / "m.py").write_text("def invoke(envelope, config):\n    return envelope\n")
    text = f"pipeline:\n  - stage: a\n    module: m\n    config:\n{config}\n"
    assert len(text) < 600
    with pytest.raises(glmtrace.ConfigError, match=message):
        pipeline.load(write(tmp_path, text))
