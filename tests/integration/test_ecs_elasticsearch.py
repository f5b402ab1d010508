"""The documents the real Elasticsearch holds, and the mapping it gave them, are ECS's."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from ecs_conformance import FAMILIES, FIELDS, conformance_errors, mapped_types

from glmtrace._internal.logs import ecs

from .backends import Elasticsearch
from .jobs import run_traced

pytestmark = pytest.mark.integration

JOB = """
    import json, logging
    import glmtrace

    glmtrace.init(service_name="ecs-it", traces="none", logs="elasticsearch", es_url={url!r},
                  store="store/glmtrace.db")
    log = logging.getLogger("ecs.it")
    extra = {{"run": {run!r}}}
    with glmtrace.span("job"):
        log.warning("plain", extra=extra)
        log.info("with its stack", extra=extra, stack_info=True)
        try:
            raise ValueError("bad row")
        except ValueError:
            log.exception("failed", extra=extra)
    print(json.dumps({{"flushed": glmtrace.shutdown(20)}}))
"""


def test_shipped_documents_and_their_mapping_are_ecs(
    elasticsearch: Elasticsearch, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex
    assert run_traced(JOB.format(url=elasticsearch.url, run=run), tmp_path)["flushed"]
    docs = elasticsearch.search("logs-glmtrace-*", {"term": {"labels.run": run}}, min_hits=3)
    assert len(docs) == 3
    for doc in docs:
        assert conformance_errors(doc, internal_allowed=False) == []
        assert doc[ecs.ECS_VERSION_KEY] == ecs.ECS_VERSION
    assert {ecs.ERROR_STACK_TRACE, ecs.STACK_INFO, ecs.EVENT_ID} <= set().union(*docs)
    mapping = elasticsearch.ok("GET", "logs-glmtrace-default/_mapping")
    (backing,) = [m for name, m in mapping.items() if name.startswith(".ds-logs-glmtrace-default")]
    mapped = mapped_types(backing["mappings"]["properties"])
    for name in set().union(*docs) & FIELDS.keys():
        assert mapped[name] in FAMILIES[FIELDS[name]["type"]], (name, mapped[name])
