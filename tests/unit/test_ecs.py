"""Every log document glmtrace writes conforms to the ECS version it declares: the local
store's, the Elasticsearch bulk bodies, the Fluent records (rules in ecs_conformance.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, get_type_hints

import msgpack
import pytest
from ecs_conformance import DEFINITIONS, FAMILIES, FIELDS, conformance_errors, mapped_types
from opentelemetry import baggage, context

import glmtrace
from glmtrace._internal.logs import ecs, es_bulk
from glmtrace._internal.logs.fluent_sink import _messages
from glmtrace._internal.store.database import Store

log = logging.getLogger("ecs-test")


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


@pytest.mark.parametrize(
    "path",
    [
        Path(__file__).parents[2] / "exporters" / "elasticsearch" / "index-template.json",
        Path(__file__).parents[2] / "glmtrace" / "_internal" / "data" / "es_index_template.json",
    ],
)
def test_index_templates_map_fields_with_ecs_types(path: Path) -> None:
    mapped = mapped_types(json.loads(path.read_text())["template"]["mappings"]["properties"])
    for name, definition in FIELDS.items():
        if name == "labels":
            assert mapped[name] == "object"
            continue
        assert name in mapped, f"{path.name} does not map {name}"
        assert mapped[name] in FAMILIES[definition["type"]], (name, mapped[name])
