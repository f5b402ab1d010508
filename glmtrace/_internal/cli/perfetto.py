"""Chrome trace-event files (Perfetto UI, chrome://tracing) of traces and their logs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import PROCESS_PID

from ..keys import LINK_ROLE, THREAD_ID, THREAD_NAME
from ..logs import ecs
from .render import log_time_ns


def _int(item: Mapping[str, Any], key: str) -> int:
    return int(item.get(key) or 0)


def trace_events(spans: Sequence[Mapping[str, Any]], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Chrome trace-event JSON (Perfetto UI, chrome://tracing): a track per process/thread,
    and a flow arrow from each linked span to the span that links to it."""
    events: list[dict[str, Any]] = []
    named: set[tuple[str, int, int]] = set()

    def track(pid: int, tid: int, service: str, thread: str) -> None:
        if ("p", pid, 0) not in named:
            named.add(("p", pid, 0))
            events.append(
                {
                    "ph": "M",
                    "name": "process_name",
                    "pid": pid,
                    "tid": 0,
                    "args": {"name": f"{service} (pid {pid})"},
                }
            )
        if ("t", pid, tid) not in named:
            named.add(("t", pid, tid))
            events.append(
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": thread}}
            )

    where: dict[tuple[str, str], tuple[int, int, float]] = {}
    for s in spans:
        pid, tid = _int(s["resource"], PROCESS_PID), _int(s["attributes"], THREAD_ID)
        # Flow ends sit just inside their slice: Perfetto binds them to the slice open at that
        # time, and at the very start the slice may not be open yet (µs floats keep ~0.25 µs).
        inside = s["start_ns"] + min(1000, max(0, s["end_ns"] - s["start_ns"]) // 2)
        where[(s["trace_id"], s["span_id"])] = (pid, tid, inside / 1000)
        track(
            pid,
            tid,
            str(s.get("service_name") or "service"),
            str(s["attributes"].get(THREAD_NAME, tid)),
        )
        args = {"span_id": s["span_id"], "status": s["status"], **s["attributes"]}
        if s.get("status_message"):
            args["status_message"] = s["status_message"]
        if s.get("links"):
            args["links"] = [f"{li['trace_id']}/{li['span_id']}" for li in s["links"]]
        events.append(
            {
                "ph": "X",
                "name": s["name"],
                "cat": "span",
                "ts": s["start_ns"] / 1000,
                "dur": max(0, s["end_ns"] - s["start_ns"]) / 1000,
                "pid": pid,
                "tid": tid,
                "args": args,
            }
        )
    events.extend(_flows(spans, where))
    for d in logs:
        pid, tid = _int(d, ecs.PROCESS_PID), _int(d, ecs.THREAD_ID)
        track(pid, tid, str(d.get(ecs.SERVICE_NAME, "service")), str(d.get(ecs.THREAD_NAME, tid)))
        events.append(
            {
                "ph": "i",
                "s": "t",
                "name": f"{d.get('log.level')}: {str(d.get('message', ''))[:120]}",
                "cat": "log",
                "ts": log_time_ns(d) / 1000,
                "pid": pid,
                "tid": tid,
                "args": {"logger": d.get(ecs.LOG_LOGGER), ecs.SPAN_ID: d.get(ecs.SPAN_ID)},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _flows(
    spans: Sequence[Mapping[str, Any]], where: Mapping[tuple[str, str], tuple[int, int, float]]
) -> list[dict[str, Any]]:
    """Flow events ("s" in the linked span, "f" in the linking span, both bound to the
    enclosing slice) for every link whose two ends are in the file."""
    flows: list[dict[str, Any]] = []
    for s in spans:
        for link in s.get("links") or []:
            source = where.get((link["trace_id"], link["span_id"]))
            if source is None:
                continue
            target = where[(s["trace_id"], s["span_id"])]
            flow_id = len(flows) // 2 + 1
            role = (link.get("attributes") or {}).get(LINK_ROLE, "link")
            for ph, (pid, tid, ts) in (("s", source), ("f", target)):
                flows.append(
                    {
                        "ph": ph,
                        "id": flow_id,
                        "bp": "e",
                        "name": f"link {role}",
                        "cat": "link",
                        "ts": ts,
                        "pid": pid,
                        "tid": tid,
                    }
                )
    return flows
