"""The log document: one flat ECS dict, its keys spelled once.

:func:`~glmtrace._internal.logs.handler.ecs_document` builds it; the store, the Elasticsearch and
Fluent sinks, ``glmtrace push`` and the renderers read it through these names.

Every key is an ECS field of the declared :data:`ECS_VERSION` (dotted, flat), a user extra
under ECS ``labels.*``, or glmtrace's own under ``glmtrace.*``. Two keys are bookkeeping of
the process and the local store only (:data:`INTERNAL_KEYS`): what leaves the process
(:func:`wire`) carries the id as ECS ``event.id`` and the time in ``@timestamp``.
tests/unit/test_ecs.py checks every document against the ECS definitions.
"""

from __future__ import annotations

from typing import Any, Final, TypedDict

ECS_VERSION: Final = "9.4.0"

TIMESTAMP: Final = "@timestamp"
MESSAGE: Final = "message"
ECS_VERSION_KEY: Final = "ecs.version"
LOG_LEVEL: Final = "log.level"
LOG_LOGGER: Final = "log.logger"
LOG_FUNCTION: Final = "log.origin.function"
LOG_FILE_NAME: Final = "log.origin.file.name"
LOG_LINE: Final = "log.origin.file.line"
SERVICE_NAME: Final = "service.name"
PROCESS_PID: Final = "process.pid"
THREAD_NAME: Final = "process.thread.name"
THREAD_ID: Final = "process.thread.id"
HOST_HOSTNAME: Final = "host.hostname"
TRACE_ID: Final = "trace.id"
SPAN_ID: Final = "span.id"
EVENT_ID: Final = "event.id"
ERROR_TYPE: Final = "error.type"
ERROR_MESSAGE: Final = "error.message"
ERROR_STACK_TRACE: Final = "error.stack_trace"

LABELS: Final = "labels."  # user extras (ECS labels)
CUSTOM: Final = "glmtrace."  # glmtrace's own fields, outside ECS
LABEL_SESSION_ID: Final = "labels.session_id"
# ``stack_info=True`` on a record that is no error: ECS's error.stack_trace would claim one.
STACK_INFO: Final = "glmtrace.stack_info"

# Bookkeeping only: the store's primary key and its nanosecond sort key.
LOG_ID: Final = "log.id"
TIMESTAMP_NS: Final = "timestamp_ns"
INTERNAL_KEYS = (LOG_ID, TIMESTAMP_NS)

# The functional syntax because the keys have dots; user extras (labels.*) come on top.
EcsDocument = TypedDict(
    "EcsDocument",
    {
        "@timestamp": str,
        "message": str,
        "ecs.version": str,
        "log.level": str,
        "log.logger": str,
        "log.origin.function": str,
        "log.origin.file.name": str,
        "log.origin.file.line": int,
        "service.name": str,
        "process.pid": int,
        "process.thread.name": str,
        "process.thread.id": int,
        "host.hostname": str,
        "trace.id": str,
        "span.id": str,
        "event.id": str,
        "error.type": str,
        "error.message": str,
        "error.stack_trace": str,
        "labels.session_id": str,
        "glmtrace.stack_info": str,
        "log.id": str,
        "timestamp_ns": int,
    },
    total=False,
)


def wire(doc: EcsDocument | dict[str, Any]) -> dict[str, Any]:
    """``doc`` as it leaves the process: the bookkeeping keys out, the id as ``event.id``."""
    out = {k: v for k, v in doc.items() if k not in INTERNAL_KEYS}
    if LOG_ID in doc:
        out[EVENT_ID] = doc[LOG_ID]
    return out
