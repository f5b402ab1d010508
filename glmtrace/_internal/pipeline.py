"""YAML-driven stage pipelines: validate, import each stage module, dispatch the envelope.

```yaml
pipeline:
  - stage: "preprocess"
    module: "text_cleaner"
    config: {remove_html: true}
  - stage: "infer"
    module: "glm_router"
    model_hint: "chatglm3"
```

Each stage module exposes ``invoke(envelope, config) -> envelope``. Every stage runs in a span
``stage <name>`` whose parent is read from the envelope's ``metadata`` (W3C ``traceparent``),
so the same envelope could as well cross a queue or a process between stages.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict

import yaml

from .errors import ConfigError
from .keys import CONFIG_PREFIX, MODULE, PAYLOAD, STAGE
from .propagation import attach, inject
from .runtime import Runtime

_STAGE_KEYS = {
    "stage": str,
    "module": str,
    "config": dict,
    "model_hint": str,
    "capture_payload": bool,
}
_TOP_KEYS = {"pipeline", "name"}


class Envelope(TypedDict):
    """The message passed from stage to stage."""

    session_id: str
    payload: Any
    metadata: dict[str, str]


@dataclass(frozen=True)
class StageSpec:
    """One validated stage of a pipeline file."""

    name: str
    module: str
    config: Mapping[str, Any] = field(default_factory=dict)
    capture_payload: bool = False


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline file."""

    name: str
    path: Path
    stages: tuple[StageSpec, ...]


def load(path: str | Path) -> Pipeline:
    """Read and validate a pipeline file; errors name the file, stage index and key."""
    file = Path(path)
    where = str(file)
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such pipeline file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or "pipeline" not in document:
        raise ConfigError(f"{where}: expected a mapping with a 'pipeline' list at the top")
    extra = set(document) - _TOP_KEYS
    if extra:
        raise ConfigError(
            f"{where}: unknown top-level key(s) {sorted(extra)}; allowed {sorted(_TOP_KEYS)}"
        )
    stages = document["pipeline"]
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{where}: 'pipeline' must be a non-empty list of stages")
    specs = tuple(_stage(where, i, raw) for i, raw in enumerate(stages))
    name = document.get("name", file.stem)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: 'name' must be a string, got {name!r}")
    return Pipeline(name=name, path=file, stages=specs)


def _stage(where: str, index: int, raw: Any) -> StageSpec:
    at = f"{where}: pipeline[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{at}: a stage must be a mapping, got {raw!r}")
    for key, value in raw.items():
        if key not in _STAGE_KEYS:
            raise ConfigError(f"{at}: unknown key {key!r}; allowed {sorted(_STAGE_KEYS)}")
        expected = _STAGE_KEYS[key]
        if not isinstance(value, expected):
            raise ConfigError(
                f"{at}.{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}"
            )
    for key in ("stage", "module"):
        if key not in raw:
            raise ConfigError(f"{at}: missing required key {key!r}")
    config = dict(raw.get("config", {}))
    if "model_hint" in raw:
        config["model_hint"] = raw["model_hint"]
    return StageSpec(raw["stage"], raw["module"], config, raw.get("capture_payload", False))


def import_stage_module(name: str, folder: Path) -> ModuleType:
    """Import ``name`` from ``folder`` first, then from ``sys.path``."""
    candidate = folder / f"{name}.py"
    if candidate.is_file():
        key = f"glmtrace_pipeline_{abs(hash(str(candidate.resolve())))}_{name}"
        if key in sys.modules:
            return sys.modules[key]
        spec = importlib.util.spec_from_file_location(key, candidate)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name)


def new_envelope(payload: Any, session_id: str | None = None) -> Envelope:
    """A fresh envelope with an empty ``metadata`` header dict."""
    return Envelope(session_id=session_id or uuid.uuid4().hex[:12], payload=payload, metadata={})


@dataclass(frozen=True)
class RunResult:
    """What a pipeline run produced: the final envelope, or the error a stage raised."""

    envelope: Envelope | None
    trace_id: str | None
    error: Exception | None


def run(runtime: Runtime, pipeline: Pipeline, envelope: Envelope) -> RunResult:
    """Run every stage in order under one root span ``pipeline <name>``.

    A bad pipeline raises :class:`ConfigError` before anything runs; an exception from a
    stage is recorded on its span and returned in :class:`RunResult` with the trace id.
    """
    modules = []
    for index, spec in enumerate(pipeline.stages):
        try:
            module = import_stage_module(spec.module, pipeline.path.parent)
        except ImportError as exc:
            raise ConfigError(
                f"{pipeline.path}: pipeline[{index}].module: cannot import {spec.module!r}: {exc}"
            ) from None
        if not callable(getattr(module, "invoke", None)):
            raise ConfigError(
                f"{pipeline.path}: pipeline[{index}].module: {spec.module!r} has no "
                "invoke(envelope, config)"
            )
        modules.append(module)

    root_attributes = {
        "glmtrace.pipeline": pipeline.name,
        "glmtrace.pipeline.file": str(pipeline.path),
    }
    trace_id = None
    try:
        with attach(envelope), runtime.span(f"pipeline {pipeline.name}", root_attributes) as root:
            trace_id = root.trace_id
            inject(envelope)
            for spec, module in zip(pipeline.stages, modules, strict=True):
                envelope = _dispatch(runtime, spec, module, envelope)
    except Exception as exc:
        return RunResult(None, trace_id, exc)
    return RunResult(envelope, trace_id, None)


def _dispatch(
    runtime: Runtime, spec: StageSpec, module: ModuleType, envelope: Envelope
) -> Envelope:
    attributes: dict[str, Any] = {STAGE: spec.name, MODULE: spec.module}
    attributes.update({f"{CONFIG_PREFIX}{k}": v for k, v in spec.config.items()})
    # The envelope's metadata, not the ambient context, decides the parent: this is what a
    # stage on the far side of a queue would see.
    metadata_before = dict(envelope["metadata"])
    with attach(envelope), runtime.span(f"stage {spec.name}", attributes) as span:
        if spec.capture_payload:
            span.set_attribute(PAYLOAD, envelope["payload"])
        result = module.invoke(envelope, dict(spec.config))
        if spec.capture_payload:
            span.set_attribute(f"{PAYLOAD}.out", _payload_of(result))
    if not isinstance(result, dict) or "payload" not in result:
        raise TypeError(
            f"stage {spec.name!r} ({spec.module}.invoke) must return the envelope, "
            f"got {type(result).__name__}"
        )
    result.setdefault("session_id", envelope["session_id"])
    result["metadata"] = metadata_before
    return result  # type: ignore[return-value]


def _payload_of(result: Any) -> Any:
    return result.get("payload") if isinstance(result, dict) else result
