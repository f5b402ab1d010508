"""Turning one window of torch.profiler (Kineto) events into spans.

Input: the window's events, the glmtrace spans that finished meanwhile (the *timeline*:
thread, start, end, context), and clock markers that :mod:`.profiler` recorded (a
``record_function`` named ``glmtrace.clock <thread ident>`` bracketed by ``time.time_ns()``).
The markers give the offset from the profiler's clock to epoch nanoseconds and the profiler's
id of each Python thread.

Parents: a CPU op's parent is the nearest enclosing op that is also converted, else the
innermost glmtrace span open on its thread at its start, else the span that was current when
the window began. A GPU event (kernel, memcpy, memset) is parented like the runtime call that
launched it (matched by correlation id), so it sits under the span active at launch.
Bounded: at most ``max_spans`` events (the longest; an op is never shorter than its children,
so kept ops keep their ancestors), the rest only counted in the window's summary span.
"""

from __future__ import annotations

import gc
import heapq
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanContext

from ..attributes import AttributeValue
from ..emitter import SAMPLED, Emitter, new_span_context, span_id
from . import keys

MARKER = "glmtrace.clock "
_CPU_TYPES = frozenset(("cpu_op", "user_annotation"))
_GPU_TYPES = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}
_RUNTIME_TYPES = frozenset(("cuda_runtime", "cuda_driver", "privateuse1_runtime"))
_COLLECTIVE_OPS = ("c10d::", "nccl:", "gloo:", "record_param_comms")
_GRID = re.compile(r'"grid"\s*:\s*\[([0-9,\s]+)\]')
_BLOCK = re.compile(r'"block"\s*:\s*\[([0-9,\s]+)\]')

# One timeline entry: (thread ident, start_ns, end_ns, context).
TimelineEntry = tuple[int, int, int, SpanContext]


@dataclass
class Window:
    """Everything one conversion needs, captured on the training thread."""

    index: int
    events: Sequence[Any]
    markers: list[tuple[int, int, int]]  # (thread ident, epoch before, epoch after)
    timeline: list[TimelineEntry]
    fallback: SpanContext | None
    max_spans: int
    top: int = 10
    record_shapes: bool = False
    start_ns: int = 0  # epoch time the window began recording
    end_ns: int = 0  # epoch time torch handed it over


@dataclass(slots=True)
class _Ev:
    kind: str
    name: str
    start: int
    end: int
    tid: int
    raw: Any
    gpu: bool
    ctx: SpanContext | None = None
    parent: SpanContext | None = None
    launch_op: str | None = None
    selected: bool = False


@dataclass
class Result:
    """What a window produced."""

    events: int = 0
    spans: int = 0
    aggregated: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)


def _kind(activity: str, name: str) -> tuple[str, bool] | None:
    """(kind, on the GPU) of an event, or None for events that are not converted."""
    if activity in _CPU_TYPES:
        return ("collective" if name.startswith(_COLLECTIVE_OPS) else "cpu_op"), False
    gpu = _GPU_TYPES.get(activity)
    if gpu == "kernel" and name.startswith("nccl"):
        return "collective", True
    if gpu is not None:
        return gpu, True
    if activity in _RUNTIME_TYPES:
        return "runtime", False
    return None


def _offset(events: list[_Ev], markers: list[tuple[int, int, int]]) -> tuple[int, dict[int, int]]:
    """Profiler-clock -> epoch offset and profiler thread id -> Python thread ident.

    Each marker event is paired with its own epoch bracket (per thread, in order); the
    narrowest bracket gives the offset: a bracket the scheduler stretched (a preemption inside
    ``record_function``) misplaces every event by half its width, more than thin spans last.
    """
    threads: dict[int, int] = {}
    brackets: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for ident, before, after in markers:
        brackets[f"{MARKER}{ident}"].append((before, after))
    seen: dict[str, list[_Ev]] = defaultdict(list)
    for ev in events:
        if ev.name.startswith(MARKER):
            try:
                threads[ev.tid] = int(ev.name[len(MARKER) :])
            except ValueError:
                continue
            seen[ev.name].append(ev)
    best: tuple[int, int] | None = None  # (bracket width, offset)
    for name, marks in seen.items():
        marks.sort(key=lambda e: e.start)
        for ev, (before, after) in zip(marks, brackets.get(name, ()), strict=False):
            candidate = (after - before, (before + after) // 2 - (ev.start + ev.end) // 2)
            if best is None or candidate[0] < best[0]:
                best = candidate
    return (best[1] if best is not None else 0), threads


class _Threadline:
    """Innermost glmtrace span open on one thread at increasing times (a merge sweep)."""

    def __init__(self, entries: list[TimelineEntry]) -> None:
        self._entries: list[TimelineEntry] = sorted(entries, key=lambda e: (e[1], -e[2]))
        self._next = 0
        self._stack: list[TimelineEntry] = []

    def at(self, t: int) -> TimelineEntry | None:
        entries, stack = self._entries, self._stack
        while self._next < len(entries) and entries[self._next][1] <= t:
            entry = entries[self._next]
            self._next += 1
            while stack and stack[-1][2] < entry[1]:
                stack.pop()
            stack.append(entry)
        while stack and stack[-1][2] < t:
            stack.pop()
        return stack[-1] if stack else None


def _new_context(trace_id: int) -> SpanContext:
    return new_span_context(trace_id, span_id(), SAMPLED)


def _attributes(ev: _Ev, record_shapes: bool) -> dict[str, AttributeValue]:
    raw = ev.raw
    attrs: dict[str, AttributeValue] = {
        keys.EVENT_KIND: ev.kind,
        keys.EVENT_NAME: ev.name[:1024],
        keys.EVENT_THREAD: ev.tid,
    }
    if not ev.gpu:
        if record_shapes:
            shapes = raw.shapes()
            if shapes:
                attrs[keys.EVENT_SHAPES] = json.dumps(shapes)[:1024]
        return attrs
    attrs[keys.GPU_DEVICE] = f"cuda:{raw.device_index()}"
    attrs[keys.GPU_STREAM] = raw.device_resource_id()
    attrs[keys.EVENT_CORRELATION] = raw.correlation_id()
    attrs[keys.CLOCK] = "gpu"
    attrs[keys.GPU_DURATION_MS] = (ev.end - ev.start) / 1e6
    if ev.launch_op:
        attrs[keys.EVENT_LAUNCH_OP] = ev.launch_op
    if ev.kind != "memcpy":
        meta = raw.metadata_json()
        for pattern, key in ((_GRID, keys.KERNEL_GRID), (_BLOCK, keys.KERNEL_BLOCK)):
            found = pattern.search(meta) if meta else None
            if found:
                attrs[key] = tuple(int(x) for x in found.group(1).split(","))
    return attrs


def span_name(kind: str, name: str) -> str:
    """Low-cardinality span names: op names as they are, kernels cut before their templates."""
    if kind == "cpu_op":
        return name[:96]
    if kind == "collective" and "::" in name:
        return name[:96]
    short = re.split(r"[<(]", name, maxsplit=1)[0][:64]
    if kind == "memcpy":
        return "cuda.memcpy " + (name.split(" ")[1] if " " in name else name)[:32]
    if kind == "memset":
        return "cuda.memset"
    if kind == "collective":
        return f"collective {short}"
    return f"cuda.kernel {short}"


def convert(window: Window, em: Emitter, window_ctx: SpanContext) -> Result:
    """Emit the window's events as spans under their parents; returns what was done.

    The cyclic garbage collector is paused meanwhile: the tens of thousands of small objects
    made here would trigger repeated full passes, more than halving the throughput.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _convert(window, em, window_ctx)
    finally:
        if paused:
            gc.enable()


def _convert(window: Window, em: Emitter, window_ctx: SpanContext) -> Result:
    events: list[_Ev] = []
    for raw in window.events:
        name = raw.name()
        found = _kind(raw.activity_type(), name)
        if found is None:
            continue
        start = raw.start_ns()
        end = start + raw.duration_ns()
        events.append(_Ev(found[0], name, start, end, raw.start_thread_id(), raw, found[1]))
    offset, threads = _offset(events, window.markers)
    spannable: list[_Ev] = []
    result = Result()
    counts = result.counts
    for ev in events:
        ev.start += offset
        ev.end += offset
        if ev.kind != "runtime" and not ev.name.startswith(MARKER):
            spannable.append(ev)
            counts[ev.kind] = counts.get(ev.kind, 0) + 1
    result.events = len(spannable)
    result.top = _top(spannable, window.top)
    if len(spannable) > window.max_spans:
        keep = heapq.nlargest(window.max_spans, spannable, key=lambda e: e.end - e.start)
    else:
        keep = spannable
    for ev in keep:
        ev.selected = True

    timeline_by_thread: dict[int, list[TimelineEntry]] = defaultdict(list)
    for entry in window.timeline:
        timeline_by_thread[entry[0]].append(entry)
    fallback = window_ctx

    # CPU side, per profiler thread: op nesting and the glmtrace span open at each start.
    cpu_by_thread: dict[int, list[_Ev]] = defaultdict(list)
    for ev in events:
        if not ev.gpu:
            cpu_by_thread[ev.tid].append(ev)
    launches: dict[int, tuple[SpanContext, str | None]] = {}
    for tid, evs in cpu_by_thread.items():
        evs.sort(key=lambda e: (e.start, -e.end))
        ident = threads.get(tid)
        line = _Threadline(timeline_by_thread.get(ident, []) if ident is not None else [])
        stack: list[_Ev] = []
        for ev in evs:
            while stack and stack[-1].end < ev.start:
                stack.pop()
            outer = stack[-1] if stack else None
            around = line.at(ev.start)
            # The innermost container is whichever of the two started last.
            if outer is not None and (around is None or around[1] < outer.start):
                parent = (outer.ctx if outer.selected else outer.parent) or fallback
            else:
                parent = around[3] if around is not None else fallback
            if ev.kind == "runtime":
                launches[ev.raw.correlation_id()] = (parent, outer.name if outer else None)
                continue
            ev.parent = parent
            if ev.selected:
                ev.ctx = _new_context(parent.trace_id)
            stack.append(ev)

    # GPU side: under the parent of the runtime call that launched it.
    for ev in keep:
        if ev.gpu:
            launch = launches.get(ev.raw.correlation_id())
            if launch is not None:
                ev.parent, ev.launch_op = launch
            else:
                ev.parent = fallback
            ev.ctx = _new_context(ev.parent.trace_id)

    record_shapes = window.record_shapes
    em.hand_off_children(  # span_name() keeps names short
        (
            span_name(ev.kind, ev.name),
            ev.ctx,
            ev.parent,
            ev.start,
            ev.end,
            _attributes(ev, record_shapes),
        )
        for ev in keep
        if ev.ctx is not None and ev.parent is not None
    )
    result.spans = len(keep)
    result.aggregated = len(spannable) - len(keep)
    return result


def _top(events: list[_Ev], n: int) -> list[dict[str, Any]]:
    """The ``n`` event names with the largest total time (GPU events first when any ran)."""
    totals: dict[tuple[str, str], list[int]] = {}
    for ev in events:
        entry = totals.get((ev.kind, ev.name))
        if entry is None:
            entry = totals[(ev.kind, ev.name)] = [0, 0, int(ev.gpu)]
        entry[0] += 1
        entry[1] += ev.end - ev.start
    gpu = [k for k, v in totals.items() if v[2]]
    pool = gpu if gpu else list(totals)
    best = heapq.nlargest(n, pool, key=lambda k: totals[k][1])
    return [
        {"kind": k[0], "name": k[1][:200], "count": totals[k][0], "total_ms": totals[k][1] / 1e6}
        for k in best
    ]
