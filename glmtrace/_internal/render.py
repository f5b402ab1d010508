"""Pictures of a trace: a terminal tree with its logs, ``--json``, and Perfetto trace files."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.text import Text
from rich.tree import Tree

# Shown elsewhere (the span name, the root) or only useful in a trace viewer.
_HIDDEN = (
    "thread.",
    "code.",
    "glmtrace.pipeline.file",
    "glmtrace.stage",
    "glmtrace.torch.module.path",
    "glmtrace.torch.module.phase",
)
_MAX_SHOWN = 4


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:.1f} ms" if ms < 10_000 else f"{ms / 1000:.2f} s"


def _key_attributes(span: dict[str, Any], parent: dict[str, Any] | None) -> str:
    inherited = parent["attributes"] if parent else {}
    shown = [
        f"{k}={v}"
        for k, v in span["attributes"].items()
        if not k.startswith(_HIDDEN) and not (k == "session.id" and inherited.get(k) == v)
    ]
    text = "  ".join(str(s)[:60] for s in shown[:_MAX_SHOWN])
    return text + ("  …" if len(shown) > _MAX_SHOWN else "")


def _span_label(span: dict[str, Any], parent: dict[str, Any] | None) -> Text:
    label = Text()
    label.append(span["name"], style="bold")
    label.append(f"  {_ms(span['end_ns'] - span['start_ns'])}", style="cyan")
    if span["status"] == "ERROR":
        label.append(f"  ERROR {span.get('status_message') or ''}".rstrip(), style="bold red")
    attrs = _key_attributes(span, parent)
    if attrs:
        label.append(f"  {attrs}", style="dim")
    label.append(f"  [{span['span_id']}]", style="dim")
    return label


_LEVEL_STYLE = {"ERROR": "red", "CRITICAL": "bold red", "WARNING": "yellow", "DEBUG": "dim"}


def _log_label(doc: dict[str, Any]) -> Text:
    level = str(doc.get("log.level", "INFO"))
    label = Text()
    label.append(f"{level:<7}", style=_LEVEL_STYLE.get(level, "green"))
    label.append(f" {doc.get('log.logger', '')}: ", style="dim")
    label.append(str(doc.get("message", "")))
    return label


def tree(trace_id: str, spans: list[dict[str, Any]], logs: list[dict[str, Any]]) -> Tree:
    """The span tree with each log line under the span that emitted it, ordered by time."""
    ids = {s["span_id"] for s in spans}
    children: defaultdict[str | None, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
    for span in spans:
        parent = span["parent_span_id"] if span["parent_span_id"] in ids else None
        children[parent].append((span["start_ns"], "span", span))
    for doc in logs:
        parent = doc.get("span.id") if doc.get("span.id") in ids else None
        children[parent].append((log_time_ns(doc), "log", doc))

    root = Tree(Text(f"trace {trace_id}", style="bold magenta"))

    by_id = {s["span_id"]: s for s in spans}

    def add(node: Tree, parent: str | None) -> None:
        for _, kind, item in sorted(children[parent], key=lambda c: (c[0], c[1])):
            if kind == "span":
                label = _span_label(item, by_id.get(parent) if parent else None)
                add(node.add(label), item["span_id"])
            else:
                node.add(_log_label(item))

    add(root, None)
    return root


def log_time_ns(doc: dict[str, Any]) -> int:
    """A log document's time: every source (local store, ``remote.es_logs``) sets it."""
    return int(doc.get("timestamp_ns", 0))


def as_json(
    trace_id: str, spans: list[dict[str, Any]], logs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``show --json`` document."""
    return {
        "trace_id": trace_id,
        "spans": [
            {
                "trace_id": s["trace_id"],
                "span_id": s["span_id"],
                "parent_span_id": s["parent_span_id"],
                "name": s["name"],
                "start_time_unix_nano": s["start_ns"],
                "end_time_unix_nano": s["end_ns"],
                "status": s["status"],
                "attributes": s["attributes"],
            }
            for s in spans
        ],
        "logs": [
            {
                "timestamp": d.get("@timestamp"),
                "level": d.get("log.level"),
                "message": d.get("message"),
                "trace.id": d.get("trace.id"),
                "span.id": d.get("span.id"),
                "logger": d.get("log.logger"),
            }
            for d in logs
        ],
    }


def perfetto(spans: list[dict[str, Any]], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Chrome trace-event JSON (Perfetto UI, chrome://tracing): a track per process/thread."""
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

    for s in spans:
        pid = int(s["resource"].get("process.pid", 0))
        tid = int(s["attributes"].get("thread.id", 0))
        track(
            pid,
            tid,
            str(s.get("service_name") or "service"),
            str(s["attributes"].get("thread.name", tid)),
        )
        events.append(
            {
                "ph": "X",
                "name": s["name"],
                "cat": "span",
                "ts": s["start_ns"] / 1000,
                "dur": max(0, s["end_ns"] - s["start_ns"]) / 1000,
                "pid": pid,
                "tid": tid,
                "args": {"span_id": s["span_id"], "status": s["status"], **s["attributes"]},
            }
        )
    for d in logs:
        pid = int(d.get("process.pid", 0))
        tid = int(d.get("process.thread.id", 0))
        track(
            pid, tid, str(d.get("service.name", "service")), str(d.get("process.thread.name", tid))
        )
        events.append(
            {
                "ph": "i",
                "s": "t",
                "name": f"{d.get('log.level')}: {str(d.get('message', ''))[:120]}",
                "cat": "log",
                "ts": log_time_ns(d) / 1000,
                "pid": pid,
                "tid": tid,
                "args": {"logger": d.get("log.logger"), "span.id": d.get("span.id")},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}
