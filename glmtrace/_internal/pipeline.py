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

Modules come from the pipeline file's folder unless ``allow_outside_modules`` (the CLI's
``--allow-outside-modules``); see :mod:`.stage_modules`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict

import yaml

from .carriers import attach, inject
from .errors import ConfigError, GlmtraceError
from .keys import CONFIG_PREFIX, MODULE, PAYLOAD, STAGE
from .runtime import Runtime
from .stage_modules import StageModule, find_module

_STAGE_KEYS = {
    "stage": str,
    "module": str,
    "config": dict,
    "model_hint": str,
    "capture_payload": bool,
}
_TOP_KEYS = {"pipeline", "name"}
# A pipeline file has tens of values; aliases can make a few hundred bytes expand to
# billions (and every value ends up in span attributes), so the expanded size is bounded.
MAX_YAML_NODES = 100_000


class StageImportError(GlmtraceError):
    """A stage module raised while being imported (its span in the trace holds the error)."""


class Envelope(TypedDict):
    """The message passed from stage to stage."""

    session_id: str
    payload: Any
    metadata: dict[str, str]


@dataclass(frozen=True)
class StageSpec:
    """One validated stage of a pipeline file.

    ``code`` is where :func:`load` found ``module`` (None until then).
    """

    name: str
    module: str
    config: Mapping[str, Any] = field(default_factory=dict)
    capture_payload: bool = False
    code: StageModule | None = None


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline file."""

    name: str
    path: Path
    stages: tuple[StageSpec, ...]


def load(path: str | Path, *, allow_outside_modules: bool = False) -> Pipeline:
    """Read and validate a pipeline file; errors name the file, stage index and key.

    Nothing is imported: each stage's module is found (in the file's folder, or also on
    ``sys.path`` with ``allow_outside_modules``) and parsed to check it defines ``invoke``.
    """
    file = Path(path)
    where = str(file)
    try:
        document = _parse(file.read_text(encoding="utf-8"), where)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such pipeline file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the pipeline file: {exc}") from None
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
    specs = [_stage(where, i, raw) for i, raw in enumerate(stages)]
    folder = file.parent.resolve()
    found = tuple(
        replace(
            s,
            code=find_module(
                f"{where}: pipeline[{i}].module", s.module, folder, allow_outside_modules
            ),
        )
        for i, s in enumerate(specs)
    )
    name = document.get("name", file.stem)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: 'name' must be a string, got {name!r}")
    return Pipeline(name=name, path=file, stages=found)


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents too large once aliases are expanded."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expanded_size(node, MAX_YAML_NODES)
        return super().construct_document(node)


class _TooLarge(Exception):
    pass


def _parse(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    except _TooLarge as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: the YAML is nested too deeply") from None


def _check_expanded_size(root: yaml.Node, limit: int) -> None:
    """Count the nodes of ``root`` as if every alias were a copy (each node visited once)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > limit:
                raise _TooLarge(
                    f"more than {limit} values once its aliases (*name) are expanded; "
                    "refusing a file this large"
                )
        elif key not in sizes:
            if key in open_nodes:  # only a node's own descendants are on the stack above it
                raise _TooLarge("an alias refers to a node that contains it (a cycle)")
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


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

    Every module is imported before the root span starts (so its time is the stages' work).
    A module that raises while being imported, or an exception from a stage, is recorded on
    the stage's span and returned in :class:`RunResult` with the trace id; an import failure
    as :class:`StageImportError`, with no stage run.
    """
    modules: list[ModuleType] = []
    failure: tuple[int, StageSpec, Exception] | None = None
    for index, spec in enumerate(pipeline.stages):
        try:
            modules.append(_import(spec))
        except Exception as exc:
            failure = (index, spec, exc)
            break
    root_attributes = {
        "glmtrace.pipeline": pipeline.name,
        "glmtrace.pipeline.file": str(pipeline.path),
    }
    trace_id = None
    try:
        with attach(envelope), runtime.span(f"pipeline {pipeline.name}", root_attributes) as root:
            trace_id = root.trace_id
            inject(envelope)
            if failure is not None:
                error = _import_failed(runtime, pipeline, envelope, *failure)
                root.record_exception(failure[2])  # the cause, not the CLI's long message
                return RunResult(None, trace_id, error)
            for spec, module in zip(pipeline.stages, modules, strict=True):
                envelope = _dispatch(runtime, spec, module, envelope)
    except Exception as exc:
        return RunResult(None, trace_id, exc)
    return RunResult(envelope, trace_id, None)


def _import(spec: StageSpec) -> ModuleType:
    assert spec.code is not None, "load() finds every stage's module"
    module = spec.code.load()
    if not callable(getattr(module, "invoke", None)):
        raise TypeError(f"{spec.module}.invoke is not a function")
    return module


def _import_failed(
    runtime: Runtime,
    pipeline: Pipeline,
    envelope: Envelope,
    index: int,
    spec: StageSpec,
    exc: Exception,
) -> StageImportError:
    """Record ``exc`` on the span of the stage that never ran; the error naming it all."""
    with attach(envelope), runtime.span(f"stage {spec.name}", _attributes(spec)) as span:
        span.record_exception(exc)
    error = StageImportError(
        f"{pipeline.path}: pipeline[{index}] (stage {spec.name!r}): importing module "
        f"{spec.module!r} ({_where(spec)}) failed: {type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


def _where(spec: StageSpec) -> str:
    return str(spec.code.file) if spec.code and spec.code.file else "sys.path"


def _attributes(spec: StageSpec) -> dict[str, Any]:
    attributes: dict[str, Any] = {STAGE: spec.name, MODULE: spec.module}
    attributes.update({f"{CONFIG_PREFIX}{k}": v for k, v in spec.config.items()})
    return attributes


def _dispatch(
    runtime: Runtime, spec: StageSpec, module: ModuleType, envelope: Envelope
) -> Envelope:
    # The envelope's metadata, not the ambient context, decides the parent: this is what a
    # stage on the far side of a queue would see.
    metadata_before = dict(envelope["metadata"])
    with attach(envelope), runtime.span(f"stage {spec.name}", _attributes(spec)) as span:
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
