"""Pictures of traces: a terminal tree with its logs, ``ls``'s table and ``--json`` documents.

Every JSON document the CLI writes goes through :func:`dumps` (strict JSON); Perfetto files
are built in :mod:`.perfetto`."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..export.rows import SpanRow
from ..keys import LINK_ROLE
from ..logs import ecs
from ..repair import json_ready
from ..store.database import TraceSummary

# Shown elsewhere (the span name, the root) or only useful in a trace viewer.
_HIDDEN = (
    "thread.",
    "code.",
    "glmtrace.pipeline.file",
    "glmtrace.stage",
    "glmtrace.torch.module.path",
    "glmtrace.torch.module.phase",
    "exception.stacktrace",
    "exception.escaped",
)
_MAX_SHOWN = 4
_MAX_VALUE = 60  # characters of one attribute in the tree; --json has the whole value

Names = Mapping[tuple[str, str], str]  # (trace id, span id) -> span name


def _names(*groups: Sequence[SpanRow] | None) -> Names:
    return {(s["trace_id"], s["span_id"]): s["name"] for spans in groups for s in spans or ()}


def dumps(document: Any, indent: int | None = None) -> str:
    """Strict JSON: NaN and ±Infinity become the strings "NaN", "Infinity", "-Infinity"
    (as OTLP/JSON writes them), anything else JSON cannot hold becomes its text."""
    return json.dumps(json_ready(document), indent=indent, allow_nan=False, ensure_ascii=False)


def shorten(text: str, width: int = _MAX_VALUE) -> str:
    """``text`` cut to ``width`` characters with "…", after a whole word (or a JSON item)
    when one ends in the second half."""
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    boundary = max(cut.rfind(" "), cut.rfind(","))
    if boundary > width // 2:
        cut = cut[:boundary]
    return cut.rstrip() + "…"


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:.1f} ms" if ms < 10_000 else f"{ms / 1000:.2f} s"


def _pairs(attributes: Mapping[str, Any], inherited: Mapping[str, Any], line: int) -> list[str]:
    # Each pair fits one line, so the terminal wraps between pairs, never inside a value.
    return [
        shorten(f"{k}={shorten(str(v))}", line)
        for k, v in attributes.items()
        if not k.startswith(_HIDDEN) and not (k == "session.id" and inherited.get(k) == v)
    ]


def _key_attributes(attributes: Mapping[str, Any], inherited: Mapping[str, Any], line: int) -> str:
    shown = _pairs(attributes, inherited, line)
    text = "  ".join(shown[:_MAX_SHOWN])
    return text + ("  …" if len(shown) > _MAX_SHOWN else "")


def _span_label(span: SpanRow, parent: SpanRow | None, line: int) -> Text:
    label = Text()
    label.append(span["name"], style="bold")
    label.append(f"  {_ms(span['end_ns'] - span['start_ns'])}", style="cyan")
    if span["status"] == "ERROR":
        label.append(f"  ERROR {span.get('status_message') or ''}".rstrip(), style="bold red")
    attrs = _key_attributes(span["attributes"], parent["attributes"] if parent else {}, line)
    if attrs:
        label.append(f"  {attrs}", style="dim")
    label.append(f"  [{span['span_id']}]", style="dim")
    return label


def _link_label(link: dict[str, Any], names: Names) -> Text:
    role = (link.get("attributes") or {}).get(LINK_ROLE)
    label = Text(f"→ linked{f' {role}' if role else ''}: ", style="magenta")
    label.append(f"{link['trace_id']}/{link['span_id']}")
    name = names.get((link["trace_id"], link["span_id"]))
    if name:
        label.append(f" {name}", style="bold")
    return label


def _event_label(event: dict[str, Any], line: int) -> Text:
    label = Text(f"◆ {event['name']}", style="yellow")
    attrs = _key_attributes(event.get("attributes") or {}, {}, line)
    if attrs:
        label.append(f"  {attrs}", style="dim")
    return label


_LEVEL_STYLE = {"ERROR": "red", "CRITICAL": "bold red", "WARNING": "yellow", "DEBUG": "dim"}


def _log_label(doc: dict[str, Any]) -> Text:
    level = str(doc.get(ecs.LOG_LEVEL, "INFO"))
    label = Text()
    label.append(f"{level:<7}", style=_LEVEL_STYLE.get(level, "green"))
    label.append(f" {doc.get(ecs.LOG_LOGGER, '')}: ", style="dim")
    label.append(str(doc.get(ecs.MESSAGE, "")))
    return label


def tree(
    trace_id: str,
    spans: list[SpanRow],
    logs: list[dict[str, Any]],
    linked: Sequence[SpanRow] = (),
    width: int = 200,
) -> Tree:
    """The span tree: under each span its links, then its events, logs and child spans by time.

    ``linked`` are spans of other traces that links point to (they give the links names);
    ``width`` is the terminal's, which attribute values are cut to fit.
    """
    names = _names(spans, linked)
    ids = {s["span_id"] for s in spans}
    # Links, events and logs are drawn when their span's depth (so their indent) is known.
    children: defaultdict[str | None, list[tuple[int, int, Any]]] = defaultdict(list)
    for span in spans:
        parent = span["parent_span_id"] if span["parent_span_id"] in ids else None
        children[parent].append((span["start_ns"], 3, span))
        for link in span.get("links") or []:
            children[span["span_id"]].append((0, 0, link))
        for event in span.get("events") or []:
            children[span["span_id"]].append((int(event.get("timestamp_ns") or 0), 1, event))
    for doc in logs:
        parent = doc.get(ecs.SPAN_ID) if doc.get(ecs.SPAN_ID) in ids else None
        children[parent].append((log_time_ns(doc), 2, doc))

    root = Tree(Text(f"trace {trace_id}", style="bold magenta"))
    by_id = {s["span_id"]: s for s in spans}

    def add(node: Tree, parent: str | None, depth: int) -> None:
        line = max(20, width - 4 * depth - 1)  # rich indents each level by 4 columns
        for _, kind, item in sorted(children[parent], key=lambda c: (c[0], c[1])):
            if kind == 0:
                node.add(_link_label(item, names))
            elif kind == 1:
                node.add(_event_label(item, line))
            elif kind == 2:
                node.add(_log_label(item))
            else:
                label = _span_label(item, by_id.get(parent) if parent else None, line)
                add(node.add(label), item["span_id"], depth + 1)

    add(root, None, 1)
    return root


def log_time_ns(doc: dict[str, Any]) -> int:
    """A log document's time: every source (local store, ``remote.es_logs``) sets it."""
    return int(doc.get(ecs.TIMESTAMP_NS, 0))


_LOG_KEYS = {
    "timestamp": ecs.TIMESTAMP,
    "level": ecs.LOG_LEVEL,
    "message": ecs.MESSAGE,
    ecs.TRACE_ID: ecs.TRACE_ID,
    ecs.SPAN_ID: ecs.SPAN_ID,
    "logger": ecs.LOG_LOGGER,
}


def as_json(
    trace_id: str,
    spans: list[SpanRow],
    logs: list[dict[str, Any]],
    linked: Sequence[SpanRow] = (),
) -> dict[str, Any]:
    """The ``show --json`` document: every field the store (or Jaeger and ES) holds.

    A link carries the name of the span it points to when that span is in ``spans`` or
    ``linked`` (spans of other traces).
    """
    names = _names(spans, linked)
    return {
        "trace_id": trace_id,
        "spans": [_span_json(s, names) for s in spans],
        "logs": [
            {
                **{key: d.get(field) for key, field in _LOG_KEYS.items()},
                "fields": {k: v for k, v in d.items() if k not in _LOG_KEYS.values()},
            }
            for d in logs
        ],
    }


def _span_json(span: SpanRow, names: Names) -> dict[str, Any]:
    return {
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
        "parent_span_id": span["parent_span_id"],
        "name": span["name"],
        "kind": span.get("kind"),
        "start_time_unix_nano": span["start_ns"],
        "end_time_unix_nano": span["end_ns"],
        "status": span["status"],
        "status_message": span.get("status_message"),
        "service_name": span.get("service_name"),
        "attributes": span["attributes"],
        "events": [
            {
                "name": e["name"],
                "time_unix_nano": e.get("timestamp_ns"),
                "attributes": e.get("attributes") or {},
            }
            for e in span.get("events") or []
        ],
        "links": [
            {
                "trace_id": li["trace_id"],
                "span_id": li["span_id"],
                "name": names.get((li["trace_id"], li["span_id"])),
                "attributes": li.get("attributes") or {},
            }
            for li in span.get("links") or []
        ],
        "resource": span.get("resource") or {},
    }


def traces_table(rows: Sequence[TraceSummary]) -> Table:
    """``glmtrace ls``: ids are never cut (other columns wrap instead), so they can be copied."""
    table = Table(box=None, pad_edge=False, collapse_padding=True, header_style="bold")
    table.add_column("trace id", no_wrap=True, min_width=32)
    table.add_column("root", overflow="fold", ratio=1)
    table.add_column("start", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("spans", justify="right", no_wrap=True)
    table.add_column("errors", justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            r.trace_id,
            r.root_name,
            _local_time(r.start_ns).strftime("%m-%d %H:%M:%S"),  # the year: in --json
            _ms(r.duration_ns),
            str(r.span_count),
            Text(str(r.error_count), style="red") if r.error_count else "0",
        )
    return table


def traces_json(rows: Sequence[TraceSummary]) -> list[dict[str, Any]]:
    """``glmtrace ls --json``."""
    return [
        {
            "trace_id": r.trace_id,
            "root": r.root_name,
            "start_time_unix_nano": r.start_ns,
            "start": _local_time(r.start_ns).isoformat(),
            "duration_ns": r.duration_ns,
            "span_count": r.span_count,
            "error_count": r.error_count,
        }
        for r in rows
    ]


def _local_time(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9).astimezone()
