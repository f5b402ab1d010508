"""ECS conformance of glmtrace's log documents, shared by the unit and integration tests.

The definitions (tests/data/ecs_fields.json) come from elastic/ecs's generated/ecs/ecs_flat.yml
of the version glmtrace declares, reduced to the fields glmtrace uses; the file names its
source. A key is such an ECS field with a value of its type, a user extra under ECS
``labels.*``, glmtrace's own under ``glmtrace.*``, or (in the local store only) a
bookkeeping key of :data:`glmtrace._internal.logs.ecs.INTERNAL_KEYS`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from glmtrace._internal.logs import ecs

DEFINITIONS = json.loads((Path(__file__).parent / "data" / "ecs_fields.json").read_text())
FIELDS: dict[str, dict[str, str]] = DEFINITIONS["fields"]
# Elasticsearch's type families: a mapping may use any member of the ECS type's family. The
# template sticks to the types of a minimal Elasticsearch (no wildcard, no match_only_text
# module), as ECS's own generator does with its --oss flag (wildcard -> keyword).
FAMILIES = {
    "keyword": {"keyword", "constant_keyword", "wildcard"},
    "wildcard": {"keyword", "constant_keyword", "wildcard"},
    "match_only_text": {"text", "match_only_text"},
    "date": {"date", "date_nanos"},
    "long": {"long"},
}


def _is_type(value: Any, ecs_type: str) -> bool:
    if ecs_type == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    if ecs_type == "date":
        return isinstance(value, str) and dt.datetime.fromisoformat(value).tzinfo is not None
    return isinstance(value, str)  # keyword, wildcard, match_only_text


def conformance_errors(doc: dict[str, Any], internal_allowed: bool) -> list[str]:
    """What in ``doc`` breaks the rules above (empty when it conforms)."""
    errors = []
    for key, value in doc.items():
        if key in ecs.INTERNAL_KEYS:
            if not internal_allowed:
                errors.append(f"{key}: bookkeeping key left the process")
        elif key.startswith(ecs.CUSTOM):
            if not key.removeprefix(ecs.CUSTOM):
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


def mapped_types(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """An Elasticsearch mapping's ``properties`` as ``{dotted field: type}``."""
    out: dict[str, str] = {}
    for name, spec in properties.items():
        if "properties" in spec:
            out.update(mapped_types(spec["properties"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = spec["type"]
    return out
