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
from typing import Any

from ..keys import STAGE
from ..render import log_time_ns
from ..torch import keys as torch_keys
from .queries import MODEL

RANK = torch_keys.RANK


def _lane_key(span: dict[str, Any]) -> str:
    rank = span["resource"].get(RANK, span["attributes"].get(RANK))
    service = span.get("service_name") or "service"
    if rank is not None:
        return f"rank {rank} · {service}"
    pid = span["resource"].get("process.pid")
    return f"{service} · pid {pid}" if pid is not None else service


def _kind(span: dict[str, Any]) -> str:
    attrs = span["attributes"]
    if torch_keys.GPU_DEVICE in attrs:
        return "gpu"
    if STAGE in attrs:
        return "stage"
    if MODEL in attrs or span["name"].startswith("batch "):
        return "inference"
    if torch_keys.MODULE_PATH in attrs:
        return "module"
    if torch_keys.EVENT_KIND in attrs:
        return "op"
    return "span"


def _critical_path(
    spans: dict[str, dict[str, Any]], children: dict[str, list[str]], roots: list[str]
) -> set[str]:
    """Span ids on the critical path of every root (GPU spans excluded: they run async).

    Walking back from a span's end: the child that finished last is on the path, then the
    child that finished last before that one started, and so on; children that overlap a
    chosen sibling were not what the parent waited for.
    """
    on_path: set[str] = set()
    stack = list(roots)
    while stack:
        span_id = stack.pop()
        on_path.add(span_id)
        span = spans[span_id]
        t = span["end_ns"]
        kids = sorted(
            children.get(span_id, ()),
            key=lambda c: min(spans[c]["end_ns"], span["end_ns"]),
            reverse=True,
        )
        for kid in kids:
            end = min(spans[kid]["end_ns"], span["end_ns"])  # a child outliving its parent
            if end <= t and end > span["start_ns"]:
                stack.append(kid)
                t = spans[kid]["start_ns"]
    return on_path


def _pack(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Greedy interval packing: each span on the first row where it overlaps nothing."""
    rows: list[list[dict[str, Any]]] = []
    ends: list[int] = []
    for span in sorted(items, key=lambda s: s["start_ns"]):
        for i, end in enumerate(ends):
            if span["start_ns"] >= end:
                rows[i].append(span)
                ends[i] = span["end_ns"]
                break
        else:
            rows.append([span])
            ends.append(span["end_ns"])
    return rows


def _bar(span: dict[str, Any], start: int) -> dict[str, Any]:
    return {
        "id": span["span_id"],
        "n": span["name"],
        "s": span["start_ns"] - start,
        "d": span["end_ns"] - span["start_ns"],
        "e": span["status"] == "ERROR",
        "p": span["parent_span_id"],
    }


def build(trace_id: str, spans: list[dict[str, Any]], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON the trace page draws: header figures, rows, tracks, logs."""
    by_id = {s["span_id"]: s for s in spans}
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    kinds = {s["span_id"]: _kind(s) for s in spans}
    lanes = {s["span_id"]: _lane_key(s) for s in spans}

    # CPU tree: GPU spans leave it; their children (rare) hang from the GPU span's parent.
    def cpu_parent(span: dict[str, Any]) -> str | None:
        parent = span["parent_span_id"]
        while parent in by_id and kinds[parent] == "gpu":
            parent = by_id[parent]["parent_span_id"]
        return parent if parent in by_id else None

    children: defaultdict[str, list[str]] = defaultdict(list)
    heads: defaultdict[str, list[str]] = defaultdict(list)  # lane -> subtree heads
    roots: list[str] = []
    gpu: defaultdict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        sid = span["span_id"]
        if kinds[sid] == "gpu":
            attrs = span["attributes"]
            device = str(attrs.get(torch_keys.GPU_DEVICE))
            gpu[(device, str(attrs.get(torch_keys.GPU_STREAM, "")))].append(span)
            continue
        parent = cpu_parent(span)
        if parent is None:
            roots.append(sid)
        else:
            children[parent].append(sid)
        if parent is None or lanes[parent] != lanes[sid]:
            heads[lanes[sid]].append(sid)
    critical = _critical_path(by_id, children, roots)

    rows: list[dict[str, Any]] = []

    def row(span: dict[str, Any], depth: int, lane: int) -> dict[str, Any]:
        sid = span["span_id"]
        return {
            "id": sid,
            "n": span["name"],
            "s": span["start_ns"] - start,
            "d": span["end_ns"] - span["start_ns"],
            "e": span["status"] == "ERROR",
            "k": kinds[sid],
            "c": sid in critical,
            "dp": depth,
            "l": lane,
            "p": span["parent_span_id"],
        }

    lane_list = []
    for lane_no, (lane, lane_heads) in enumerate(sorted(heads.items())):
        lane_list.append({"label": lane})
        for head in sorted(lane_heads, key=lambda h: by_id[h]["start_ns"]):
            stack = [(head, 0)]
            while stack:  # depth first, children in start order; iterative for deep trees
                sid, depth = stack.pop()
                rows.append(row(by_id[sid], depth, lane_no))
                kids = [k for k in children.get(sid, ()) if lanes[k] == lane]
                kids.sort(key=lambda k: by_id[k]["start_ns"], reverse=True)
                stack.extend((k, depth + 1) for k in kids)
    # Subtree sizes let the page collapse a row by skipping the rows after it.
    sizes = [1] * len(rows)
    for i in range(len(rows) - 1, -1, -1):
        j = i + 1
        while j < len(rows) and rows[j]["l"] == rows[i]["l"] and rows[j]["dp"] > rows[i]["dp"]:
            sizes[i] += sizes[j]
            j += sizes[j]
        rows[i]["z"] = sizes[i]

    tracks = []
    for (device, stream), items in sorted(gpu.items()):
        packed = [[_bar(s, start) for s in line] for line in _pack(items)]
        label = f"GPU {device}" + (f" · stream {stream}" if stream else "")
        tracks.append({"label": label, "rows": packed, "count": len(items)})

    log_rows = [
        {
            "t": log_time_ns(doc) - start,
            "level": str(doc.get("log.level", "INFO")),
            "logger": str(doc.get("log.logger", "")),
            "msg": str(doc.get("message", "")),
            "span": doc.get("span.id") if doc.get("span.id") in by_id else None,
        }
        for doc in logs
    ]
    root = by_id[roots[0]] if roots else spans[0]
    return {
        "trace_id": trace_id,
        "root_name": root["name"],
        "start_ns": start,
        "duration_ns": end - start,
        "span_count": len(spans),
        "error_count": sum(1 for s in spans if s["status"] == "ERROR"),
        "services": sorted({str(s.get("service_name") or "") for s in spans}),
        "lanes": lane_list,
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
