"""One trace shaped for the waterfall: rows in tree order, lanes, GPU tracks, critical path.

The page gets a compact row per span (no attributes: those come per span on demand), so a
profiled step of 50,000 spans stays a few megabytes and the browser draws only what shows.

- Lanes: one per rank (``glmtrace.distributed.rank``) or else per process (service, pid).
  A span whose parent runs in another lane heads its own subtree in its lane.
- GPU tracks: spans measured on a device (kernels, memcpy, CUDA-event timings) leave the CPU
  tree and go on a track per (device, stream), packed into as few rows as overlaps allow.
- Critical path: from each root, the chain of children that finished last before the
  parent (or the next chosen sibling) needed them, as in Jaeger's trace view.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NamedTuple

from opentelemetry.sdk.resources import PROCESS_PID

from ..cli.render import log_time_ns
from ..keys import GEN_AI_REQUEST_MODEL as MODEL
from ..keys import STAGE
from ..logs import ecs
from ..torch import keys as torch_keys


class Brief(NamedTuple):
    """What the waterfall needs of one span (``LocalSource.briefs`` selects just this)."""

    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status: str
    service: str | None
    pid: Any
    rank: Any
    gpu_device: Any
    gpu_stream: Any
    stage: Any
    model: Any
    module_path: Any
    event_kind: Any


def brief(span: dict[str, Any]) -> Brief:
    """A full span dict (the store's, or a remote reader's) cut down to a :class:`Brief`."""
    attrs, resource = span["attributes"], span["resource"]
    return Brief(
        span["span_id"],
        span["parent_span_id"],
        span["name"],
        span["start_ns"],
        span["end_ns"],
        span["status"],
        span.get("service_name"),
        resource.get(PROCESS_PID),
        resource.get(torch_keys.RANK, attrs.get(torch_keys.RANK)),
        attrs.get(torch_keys.GPU_DEVICE),
        attrs.get(torch_keys.GPU_STREAM),
        attrs.get(STAGE),
        attrs.get(MODEL),
        attrs.get(torch_keys.MODULE_PATH),
        attrs.get(torch_keys.EVENT_KIND),
    )


def _lane(span: Brief) -> str:
    service = span.service or "service"
    if span.rank is not None:
        return f"rank {span.rank} · {service}"
    return f"{service} · pid {span.pid}" if span.pid is not None else service


def _kind(span: Brief) -> str:
    if span.gpu_device is not None:
        return "gpu"
    if span.stage is not None:
        return "stage"
    if span.model is not None or span.name.startswith("batch "):
        return "inference"
    if span.module_path is not None:
        return "module"
    if span.event_kind is not None:
        return "op"
    return "span"


def _critical_path(spans: list[Brief], children: list[list[int]], roots: list[int]) -> set[int]:
    """Indexes of the spans on the critical path of every root (GPU spans run async: left out).

    Walking back from a span's end: the child that finished last is on the path, then the
    child that finished last before that one started, and so on; children that overlap a
    chosen sibling were not what the parent waited for.
    """
    on_path: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        on_path.add(i)
        first, last = spans[i].start_ns, spans[i].end_ns
        t = last
        ends = sorted(((min(spans[k].end_ns, last), k) for k in children[i]), reverse=True)
        for end, kid in ends:  # a child outliving its parent counts until the parent's end
            if first < end <= t:
                stack.append(kid)
                t = spans[kid].start_ns
    return on_path


def _pack(items: list[Brief]) -> list[list[Brief]]:
    """Greedy interval packing: each span on the first row where it overlaps nothing."""
    rows: list[list[Brief]] = []
    ends: list[int] = []
    for span in sorted(items, key=lambda s: s.start_ns):
        for i, end in enumerate(ends):
            if span.start_ns >= end:
                rows[i].append(span)
                ends[i] = span.end_ns
                break
        else:
            rows.append([span])
            ends.append(span.end_ns)
    return rows


# Column order of the page's rows and bars (arrays: half the bytes of objects at 50k spans).
ROW_COLUMNS = ("id", "n", "s", "d", "k", "e", "c", "dp", "l", "z", "p")
BAR_COLUMNS = ("id", "n", "s", "d", "e", "p")


def build(trace_id: str, spans: list[Brief], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON the trace page draws: header figures, rows, tracks, logs.

    ``spans`` are in start order (as the store returns them), so children come out sorted.
    """
    spans = sorted(spans, key=lambda s: s.start_ns)
    index = {s.span_id: i for i, s in enumerate(spans)}
    start = spans[0].start_ns
    end = max(s.end_ns for s in spans)
    kinds = [_kind(s) for s in spans]
    lane_names: dict[tuple[Any, ...], str] = {}
    lanes = [
        lane_names.get((s.service, s.pid, s.rank))
        or lane_names.setdefault((s.service, s.pid, s.rank), _lane(s))
        for s in spans
    ]

    children: list[list[int]] = [[] for _ in spans]
    heads: defaultdict[str, list[int]] = defaultdict(list)  # lane -> subtree heads
    roots: list[int] = []
    gpu: defaultdict[tuple[str, str], list[Brief]] = defaultdict(list)
    for i, span in enumerate(spans):
        if kinds[i] == "gpu":
            stream = "" if span.gpu_stream is None else str(span.gpu_stream)
            gpu[(str(span.gpu_device), stream)].append(span)
            continue
        # GPU spans leave the CPU tree; their children (rare) hang from the GPU span's parent.
        parent = index.get(span.parent_span_id or "", -1)
        while parent >= 0 and kinds[parent] == "gpu":
            parent = index.get(spans[parent].parent_span_id or "", -1)
        if parent < 0:
            roots.append(i)
        else:
            children[parent].append(i)
        if parent < 0 or lanes[parent] != lanes[i]:
            heads[lanes[i]].append(i)
    critical = _critical_path(spans, children, roots)

    rows: list[list[Any]] = []
    lane_list = []
    for lane_no, (lane, lane_heads) in enumerate(sorted(heads.items())):
        lane_list.append({"label": lane})
        stack = [(head, 0) for head in reversed(lane_heads)]
        while stack:  # depth first, children in start order; iterative for deep trees
            i, depth = stack.pop()
            s = spans[i]
            rows.append(
                [
                    s.span_id,
                    s.name,
                    s.start_ns - start,
                    s.end_ns - s.start_ns,
                    kinds[i],
                    s.status == "ERROR",
                    i in critical,
                    depth,
                    lane_no,
                    1,
                    s.parent_span_id,
                ]
            )
            stack.extend((k, depth + 1) for k in reversed(children[i]) if lanes[k] == lane)
    # Subtree sizes let the page collapse a row by skipping the rows after it: a row's
    # subtree ends where a row of its lane at its depth or above, or another lane, begins.
    open_rows: list[int] = []
    for r, row in enumerate([*rows, [None] * len(ROW_COLUMNS)]):
        while open_rows and (
            r == len(rows) or rows[open_rows[-1]][8] != row[8] or rows[open_rows[-1]][7] >= row[7]
        ):
            top = open_rows.pop()
            rows[top][9] = r - top
        open_rows.append(r)

    tracks = []
    for (device, stream), items in sorted(gpu.items()):
        packed = [
            [
                [
                    s.span_id,
                    s.name,
                    s.start_ns - start,
                    s.end_ns - s.start_ns,
                    s.status == "ERROR",
                    s.parent_span_id,
                ]
                for s in line
            ]
            for line in _pack(items)
        ]
        label = f"GPU {device}" + (f" · stream {stream}" if stream else "")
        tracks.append({"label": label, "rows": packed, "count": len(items)})

    log_rows = [
        {
            "t": log_time_ns(doc) - start,
            "level": str(doc.get(ecs.LOG_LEVEL, "INFO")),
            "logger": str(doc.get(ecs.LOG_LOGGER, "")),
            "msg": str(doc.get(ecs.MESSAGE, "")),
            "span": doc.get(ecs.SPAN_ID) if doc.get(ecs.SPAN_ID) in index else None,
        }
        for doc in logs
    ]
    root = spans[roots[0]] if roots else spans[0]
    return {
        "trace_id": trace_id,
        "root_name": root.name,
        "start_ns": start,
        "duration_ns": end - start,
        "span_count": len(spans),
        "error_count": sum(1 for s in spans if s.status == "ERROR"),
        "services": sorted({s.service or "" for s in spans}),
        "lanes": lane_list,
        "row_columns": ROW_COLUMNS,
        "bar_columns": BAR_COLUMNS,
        "rows": rows,
        "tracks": tracks,
        "logs": log_rows,
    }


def compare(
    a: tuple[str, list[dict[str, Any]]], b: tuple[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Per-stage (or, without stages, per span name) total durations of two traces."""

    def totals(spans: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
        staged = [s for s in spans if STAGE in s["attributes"]] or spans
        out: dict[str, tuple[int, int]] = {}
        for s in staged:
            key = str(s["attributes"].get(STAGE, s["name"]))
            count, total = out.get(key, (0, 0))
            out[key] = (count + 1, total + s["end_ns"] - s["start_ns"])
        return out

    ta, tb = totals(a[1]), totals(b[1])
    stages = []
    for key in [*ta, *(k for k in tb if k not in ta)]:  # in A's order, then B's new ones
        ca, da = ta.get(key, (0, 0))
        cb, db = tb.get(key, (0, 0))
        stages.append({"stage": key, "a_count": ca, "a_ns": da, "b_count": cb, "b_ns": db})

    def whole(spans: list[dict[str, Any]]) -> int:
        return int(max(s["end_ns"] for s in spans) - min(s["start_ns"] for s in spans))

    return {
        "a": {"trace_id": a[0], "duration_ns": whole(a[1])},
        "b": {"trace_id": b[0], "duration_ns": whole(b[1])},
        "stages": stages,
    }
