"""A store with known contents for the UI tests: written through the store's own write API.

Trace "pipeline": stages with logs, an inference call linked both ways with a batch in
another trace, torch module spans, kernels on two CUDA streams, a span on a second rank, a
failed stage with a stack trace, and hostile names. Plus ``extra`` short traces for paging.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from glmtrace._internal.store.database import Store

BASE_NS = 1_764_590_000 * 10**9  # a fixed wall clock keeps screenshots and ids stable
MS = 1_000_000
PIPELINE = "a1" * 16
BATCH = "b2" * 16
LONE_REQUEST = f"{60:032x}"  # the newest of the extra traces
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_LOG = "<script>alert('log')</script> and <b>bold</b>"
STACK = (
    "Traceback (most recent call last):\n"
    '  File "postprocess.py", line 12, in invoke\n'
    '    raise ValueError("empty answer")\n'
    "ValueError: empty answer\n"
)


def span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    start_ms: float,
    end_ms: float,
    *,
    base_ns: int = BASE_NS,
    status: str = "UNSET",
    attributes: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    links: list[dict[str, Any]] | None = None,
    service: str = "autoglm",
    pid: int = 4242,
    resource: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": "INTERNAL",
        "start_ns": base_ns + int(start_ms * MS),
        "end_ns": base_ns + int(end_ms * MS),
        "status": status,
        "status_message": "ValueError: empty answer" if status == "ERROR" else None,
        "service_name": service,
        "attributes": attributes or {},
        "events": events or [],
        "links": links or [],
        "resource": {"service.name": service, "process.pid": pid, **(resource or {})},
    }


def log(
    trace_id: str, span_id: str | None, at_ms: float, level: str, message: str, n: int
) -> dict[str, Any]:
    return {
        "log.id": f"{trace_id[:8]}-{n}",
        "timestamp_ns": BASE_NS + int(at_ms * MS),
        "@timestamp": "2025-12-01T12:00:00Z",
        "trace.id": trace_id,
        "span.id": span_id,
        "log.level": level,
        "log.logger": "app",
        "message": message,
        "service.name": "autoglm",
    }


def sid(n: int) -> str:
    return f"{n:016x}"


def pipeline_trace() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    t = PIPELINE
    stage = "glmtrace.stage"
    sess = {"session.id": "sess-demo"}
    kernel = {"glmtrace.torch.event.kind": "kernel", "glmtrace.clock": "gpu"}
    spans = [
        span(t, sid(1), None, "pipeline autoglm", 0, 100, attributes=sess),
        span(
            t, sid(2), sid(1), "stage preprocess", 2, 22, attributes={stage: "preprocess", **sess}
        ),
        span(t, sid(3), sid(2), XSS_NAME, 5, 9, attributes={"note": XSS_NAME}),
        span(t, sid(4), sid(1), "stage infer", 25, 85, attributes={stage: "infer", **sess}),
        span(
            t,
            sid(5),
            sid(4),
            "chat chatglm3",
            28,
            82,
            attributes={
                "gen_ai.request.model": "chatglm3",
                "glmtrace.batch.trace_id": BATCH,
                "glmtrace.batch.span_id": sid(100),
            },
            events=[
                {
                    "name": "gen_ai.first_token",
                    "timestamp_ns": BASE_NS + 45 * MS,
                    "attributes": {"tokens": 1},
                }
            ],
            links=[
                {
                    "trace_id": BATCH,
                    "span_id": sid(100),
                    "attributes": {"glmtrace.link.role": "batch"},
                }
            ],
        ),
        span(
            t,
            sid(6),
            sid(5),
            "GLMModel.forward",
            30,
            70,
            attributes={"glmtrace.torch.module.path": "", "glmtrace.torch.module.type": "GLMModel"},
        ),
        span(
            t,
            sid(7),
            sid(6),
            "layers.0",
            31,
            50,
            attributes={"glmtrace.torch.module.path": "layers.0"},
        ),
        span(
            t,
            sid(8),
            sid(6),
            "layers.1",
            50,
            69,
            attributes={"glmtrace.torch.module.path": "layers.1"},
        ),
        span(t, sid(11), sid(4), "cache lookup", 26, 31),
        span(
            t,
            sid(9),
            sid(4),
            "all_reduce",
            82,
            84,
            pid=4243,
            resource={"glmtrace.distributed.rank": 1},
        ),
        span(
            t,
            sid(10),
            sid(1),
            "stage postprocess",
            86,
            98,
            status="ERROR",
            attributes={stage: "postprocess", **sess},
            events=[
                {
                    "name": "exception",
                    "timestamp_ns": BASE_NS + 97 * MS,
                    "attributes": {
                        "exception.type": "ValueError",
                        "exception.message": "empty answer",
                        "exception.stacktrace": STACK,
                    },
                }
            ],
        ),
    ]
    for i in range(6):  # kernels: four on stream 7, two on stream 13
        stream = 7 if i < 4 else 13
        start = 32 + i * 6
        spans.append(
            span(
                t,
                sid(20 + i),
                sid(7 if i < 3 else 8),
                f"cuda.kernel gemm_{i}",
                start,
                start + 4,
                attributes={
                    **kernel,
                    "glmtrace.gpu.device": "cuda:0",
                    "glmtrace.gpu.stream": stream,
                },
            )
        )
    logs = [
        log(t, sid(2), 3, "INFO", "cleaning 42 chars", 1),
        log(t, sid(2), 10, "DEBUG", "removed html tags", 2),
        log(t, sid(3), 6, "WARNING", XSS_LOG, 3),
        log(t, sid(5), 40, "INFO", "prompt has 17 tokens", 4),
        log(t, sid(10), 97, "ERROR", "postprocess failed: empty answer", 5),
        log(t, sid(1), 99, "INFO", "pipeline finished", 6),
    ]
    return spans, logs


def batch_trace() -> list[dict[str, Any]]:
    return [
        span(
            BATCH,
            sid(100),
            None,
            "batch inference",
            29,
            81,
            service="glm-server",
            attributes={"glmtrace.batch.size": 1, "gen_ai.request.model": "chatglm3"},
            links=[
                {
                    "trace_id": PIPELINE,
                    "span_id": sid(5),
                    "attributes": {"glmtrace.link.role": "request"},
                },
                {  # a request from another process: it has no link back to the batch
                    "trace_id": LONE_REQUEST,
                    "span_id": sid(3),
                    "attributes": {"glmtrace.link.role": "request"},
                },
            ],
        ),
    ]


def extra_traces(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Short two-stage traces before the pipeline, one a second; some fail."""
    rng = random.Random(seed)
    spans = []
    for i in range(count):
        t = f"{i + 1:032x}"
        base = BASE_NS - (count - i) * 10**9
        pre = rng.uniform(1, 30)
        infer = rng.uniform(5, 120)
        failed = i % 7 == 3
        spans += [
            span(
                t,
                sid(1),
                None,
                "pipeline autoglm",
                0,
                pre + infer + 2,
                base_ns=base,
                attributes={"session.id": f"sess-{i % 5}"},
                service="autoglm" if i % 2 else "autoglm-batch",
            ),
            span(
                t,
                sid(2),
                sid(1),
                "stage preprocess",
                0.5,
                0.5 + pre,
                base_ns=base,
                attributes={"glmtrace.stage": "preprocess"},
            ),
            span(
                t,
                sid(3),
                sid(1),
                "stage infer",
                1 + pre,
                1 + pre + infer,
                base_ns=base,
                status="ERROR" if failed else "UNSET",
                attributes={"glmtrace.stage": "infer", "gen_ai.request.model": "chatglm3"},
            ),
        ]
    return spans


def build(path: Path, extra: int = 60) -> Path:
    store = Store(path)
    spans, logs = pipeline_trace()
    store.write_spans(spans + batch_trace() + extra_traces(extra))
    store.write_logs(logs)
    store.close()
    return path
