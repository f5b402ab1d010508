"""Every log document glmtrace writes conforms to the ECS version it declares.

The definitions come from elastic/ecs's generated/ecs/ecs_flat.yml of that version, reduced
to the fields glmtrace uses (tests/unit/data/ecs_fields.json names the source). A key is
either such an ECS field with a value of its type, a user extra under ECS ``labels.*``,
glmtrace's own under ``glmtrace.*``, or (in the local store only) a bookkeeping key.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any, get_type_hints

import msgpack
import pytest
from opentelemetry import baggage, context

import glmtrace
from glmtrace._internal import ecs, es_bulk
from glmtrace._internal.fluent_sink import _messages
from glmtrace._internal.store import Store

DEFINITIONS = json.loads((Path(__file__).parent / "data" / "ecs_fields.json").read_text())
FIELDS: dict[str, dict[str, str]] = DEFINITIONS["fields"]
# Elasticsearch's type families: a mapping may use any member of the ECS type's family.
FAMILIES = {
    "keyword": {"keyword", "constant_keyword", "wildcard"},
    "wildcard": {"keyword", "constant_keyword", "wildcard"},
    "match_only_text": {"text", "match_only_text"},
    "date": {"date", "date_nanos"},
    "long": {"long"},
}
log = logging.getLogger("ecs-test")


def _is_type(value: Any, ecs_type: str) -> bool:
    if ecs_type == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    if ecs_type == "date":
        return isinstance(value, str) and dt.datetime.fromisoformat(value).tzinfo is not None
    return isinstance(value, str)  # keyword, wildcard, match_only_text


def conformance_errors(doc: dict[str, Any], internal_allowed: bool) -> list[str]:
    errors = []
    for key, value in doc.items():
        if key in ecs.INTERNAL_KEYS:
            if not internal_allowed:
                errors.append(f"{key}: bookkeeping key left the process")
        elif key.startswith(ecs.CUSTOM):
            if key.removeprefix(ecs.CUSTOM) in ("", "labels"):
                errors.append(f"{key}: empty custom name")
        elif key.startswith(ecs.LABELS):
            # glmtrace's own labels are text, as ECS types labels (keyword); user extras keep
            # their JSON type (documented in ecs.py).
            if key.removeprefix(ecs.LABELS).startswith("glmtrace_") and not isinstance(value, str):
                errors.append(f"{key}: glmtrace's label is not text")
        elif key not in FIELDS:
            errors.append(f"{key}: not an ECS {DEFINITIONS['ecs_version']} field")
        elif not _is_type(value, FIELDS[key]["type"]):
            errors.append(f"{key}={value!r}: not of ECS type {FIELDS[key]['type']}")
    return errors


def _emit_every_kind() -> None:
    with glmtrace.span("work"):
        token = context.attach(baggage.set_baggage("session.id", "s-1"))
        try:
            log.warning("plain %s", "arg", extra={"device": "sda", "n": 3})
            log.info("with stack", stack_info=True)
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                log.exception("failed")
        finally:
            context.detach(token)
    log.error("outside a span")


@pytest.fixture
def store_documents(tmp_path: Path) -> list[dict[str, Any]]:
    glmtrace.init(service_name="ecs", store=tmp_path / "s.db")
    try:
        _emit_every_kind()
        glmtrace.force_flush()
        docs = Store(tmp_path / "s.db").all_logs()
    finally:
        glmtrace.shutdown()
    assert len(docs) == 4
    return docs


def test_declared_version_matches_the_definitions() -> None:
    assert DEFINITIONS["ecs_version"] == ecs.ECS_VERSION
    assert ecs.ECS_VERSION in DEFINITIONS["source"]


def test_store_documents_conform(store_documents: list[dict[str, Any]]) -> None:
    for doc in store_documents:
        assert conformance_errors(doc, internal_allowed=True) == []
        assert doc["ecs.version"] == ecs.ECS_VERSION
    keys = set().union(*store_documents)
    # The kinds emitted above exercise the error, stack, trace and label fields.
    assert {"error.stack_trace", "glmtrace.stack_info", "trace.id", "labels.session_id"} <= keys


def test_elasticsearch_bulk_bodies_conform(store_documents: list[dict[str, Any]]) -> None:
    rejected = [es_bulk.core(d) for d in store_documents]
    bodies = []
    for _, body in es_bulk.chunks("logs-glmtrace-default", store_documents + rejected):
        bodies.extend(json.loads(line) for line in body.decode().splitlines()[1::2])
    assert len(bodies) == 8
    for body in bodies:
        assert conformance_errors(body, internal_allowed=False) == []
        assert isinstance(body["event.id"], str)


def test_fluent_records_conform(store_documents: list[dict[str, Any]]) -> None:
    records = [
        record
        for _, message in _messages("glmtrace", store_documents)
        for _, record in msgpack.unpackb(message)[1]
    ]
    assert len(records) == 4
    for record in records:
        assert conformance_errors(record, internal_allowed=False) == []


def test_level_is_logging_s_own_name(store_documents: list[dict[str, Any]]) -> None:
    """ECS log.level keeps the source's spelling: what logging calls the level."""
    assert [d["log.level"] for d in store_documents] == ["WARNING", "INFO", "ERROR", "ERROR"]


def test_stack_info_is_carried(store_documents: list[dict[str, Any]]) -> None:
    """stack_info=True keeps the stack, in glmtrace's field (it is no error's stack trace)."""
    (with_stack,) = [d for d in store_documents if d["message"] == "with stack"]
    # A deep stack (pytest's) is cut at its start: the frame that logged is kept.
    stack = with_stack["glmtrace.stack_info"]
    assert "in _emit_every_kind" in stack
    assert stack.endswith('log.info("with stack", stack_info=True)')
    assert "error.stack_trace" not in with_stack


def test_document_type_names_only_ecs_or_custom_fields() -> None:
    """EcsDocument's keys are the module's constants, each ECS with the ECS type or custom."""
    keys = set(get_type_hints(ecs.EcsDocument))
    constants = {
        v
        for k, v in vars(ecs).items()
        if k.isupper() and isinstance(v, str) and k not in ("ECS_VERSION", "LABELS", "CUSTOM")
    }
    assert keys == constants
    python_type = {"keyword": str, "wildcard": str, "match_only_text": str, "date": str}
    for key, hint in get_type_hints(ecs.EcsDocument).items():
        if key in FIELDS:
            assert hint is python_type.get(FIELDS[key]["type"], int), key
        else:
            assert key in ecs.INTERNAL_KEYS or key.startswith((ecs.CUSTOM, ecs.LABELS)), key


def _mapped_types(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, spec in properties.items():
        if "properties" in spec:
            out.update(_mapped_types(spec["properties"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = spec["type"]
    return out


@pytest.mark.parametrize(
    "path",
    [
        Path(__file__).parents[2] / "exporters" / "elasticsearch" / "index-template.json",
        Path(__file__).parents[2] / "glmtrace" / "_internal" / "data" / "es_index_template.json",
    ],
)
def test_index_templates_map_fields_with_ecs_types(path: Path) -> None:
    mapped = _mapped_types(json.loads(path.read_text())["template"]["mappings"]["properties"])
    for name, definition in FIELDS.items():
        if name == "labels":
            assert mapped[name] == "object"
            continue
        assert name in mapped, f"{path.name} does not map {name}"
        assert mapped[name] in FAMILIES[definition["type"]], (name, mapped[name])
