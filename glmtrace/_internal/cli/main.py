"""The ``glmtrace`` command line: run pipelines, list and show traces, export, push, doctor."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from .. import plugins
from ..config import (
    SECRET_SETTINGS,
    ElasticsearchOptions,
    check_store_path,
    redact_url,
    resolve,
)
from ..errors import ConfigError, GlmtraceError
from ..export.rows import SpanRow
from ..stack.command import stack as stack_command
from ..store.database import Store, StoreError
from . import perfetto, render

console = Console()
F = TypeVar("F", bound=Callable[..., Any])
Rows = list[SpanRow]
Docs = list[dict[str, Any]]
_MAX_LINKED_TRACES = 50  # other traces read for the spans that links point to


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Expected failures become one line and exit status 1, never a traceback."""
    try:
        yield
    except (GlmtraceError, StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.Error as exc:  # a store file SQLite cannot use
        raise click.ClickException(f"the local store cannot be used: {exc}") from None


def _local_store(path: Path | None) -> Store:
    """The store at ``path`` (default: the configured one), refused early if it is a folder."""
    if path is None:
        path = resolve({}, check_store=False)[0].store
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a glmtrace store file (see GLMTRACE_STORE)")
    return Store(path)


def _store_option(fn: F) -> F:
    return click.option(
        "--store",
        type=click.Path(path_type=Path),
        default=None,
        help="Local store file (default: GLMTRACE_STORE or ./.glmtrace/glmtrace.db).",
    )(fn)


def _remote_options(fn: F) -> F:
    fn = click.option("--jaeger", envvar="GLMTRACE_JAEGER_URL", help="Jaeger query URL.")(fn)
    fn = click.option("--es", envvar="GLMTRACE_ES_URL", help="Elasticsearch URL for logs.")(fn)
    return fn


@click.group()
@click.version_option(package_name="glmtrace")
def main() -> None:
    """glmtrace: traces and logs of ML pipelines, from the local store or Jaeger/ES."""


@main.command()
@click.argument("pipeline_file", type=click.Path(path_type=Path))
@click.option("--input", "text", help="Input text for the first stage.")
@click.option(
    "--input-file", type=click.File("r"), help="Read the input from a file ('-' = stdin)."
)
@click.option("--session", help="Session id carried as baggage on every span.")
@click.option(
    "--allow-outside-modules",
    is_flag=True,
    help="Also run stage modules found on sys.path or linked from outside the file's folder.",
)
def run(
    pipeline_file: Path,
    text: str | None,
    input_file: Any,
    session: str | None,
    allow_outside_modules: bool,
) -> None:
    """Run PIPELINE_FILE with tracing on; print the trace id and its tree.

    Stage modules are looked up next to PIPELINE_FILE only, unless --allow-outside-modules.
    """
    import glmtrace

    from .. import pipeline as pipelines
    from ..runtime import DEFAULT

    if (text is None) == (input_file is None):
        raise click.UsageError("give exactly one of --input TEXT or --input-file FILE")
    payload = text if text is not None else input_file.read()
    with _clear_errors():
        spec = pipelines.load(pipeline_file, allow_outside_modules=allow_outside_modules)
        planned, _ = resolve({}, check_store=False)
        if planned.traces == "local" or "local" in planned.logs:
            _local_store(planned.store)  # an unusable store fails here, before any stage runs
        named = os.environ.get("GLMTRACE_SERVICE_NAME") or os.environ.get("OTEL_SERVICE_NAME")
        options = glmtrace.init(service_name=None if named else spec.name)
        result = pipelines.run(DEFAULT, spec, pipelines.new_envelope(payload, session))
        # A command line can wait longer than a library at exit for its last batch.
        glmtrace.shutdown(max(options.shutdown_timeout, 10.0))
    if result.envelope is not None:
        output = json.dumps(result.envelope["payload"], ensure_ascii=False, default=str)
        console.print(f"output: {output[:500]}", markup=False)
    click.echo(f"trace_id: {result.trace_id}")
    if options.traces == "local" and result.trace_id:
        with _clear_errors():
            store = _local_store(options.store)
            console.print(
                render.tree(
                    result.trace_id,
                    store.spans(result.trace_id),
                    store.logs(result.trace_id),
                    width=console.width,
                )
            )
    elif result.trace_id:
        console.print(
            f"spans sent to {options.endpoint}; view: glmtrace show {result.trace_id} --jaeger URL"
        )
    if isinstance(result.error, pipelines.StageImportError):
        raise click.ClickException(str(result.error))
    if result.error is not None:
        raise click.ClickException(f"a stage failed: {type(result.error).__name__}: {result.error}")


@main.command(name="ls")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--service", help="Service name (with --jaeger).")
@click.option("--jaeger", envvar="GLMTRACE_JAEGER_URL", help="Jaeger query URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the traces as JSON.")
@_store_option
def list_traces(
    limit: int, service: str | None, jaeger: str | None, as_json: bool, store: Path | None
) -> None:
    """List recent traces: id, root span, start, duration, span count, errors."""
    with _clear_errors():
        if jaeger:
            from ..remote.jaeger import jaeger_recent

            if not service:
                raise click.UsageError("--service NAME is required with --jaeger")
            rows = jaeger_recent(jaeger, service, limit)
        else:
            rows = _local_store(store).recent(limit)
    if as_json:
        click.echo(render.dumps(render.traces_json(rows), indent=2))
        return
    if not rows:
        raise click.ClickException("no traces recorded yet")
    console.print(render.traces_table(rows))


def _load_trace(
    trace_id: str, store: Path | None, jaeger: str | None, es: str | None
) -> tuple[str, Rows, Docs, Rows]:
    """The trace's spans and logs, and the spans of the other traces its links point to."""
    spans_of: Callable[[str], Rows]
    if jaeger:
        from ..remote.es_query import es_logs
        from ..remote.jaeger import jaeger_trace

        spans_of = functools.partial(jaeger_trace, jaeger)
        spans = spans_of(trace_id)
        full_id = spans[0]["trace_id"] if spans else trace_id
        logs = es_logs(_es_options(es), full_id) if es else []
    else:
        local = _local_store(store)
        spans_of = local.spans
        full_id = local.resolve_trace_id(trace_id)
        spans, logs = local.spans(full_id), local.logs(full_id)
    return full_id, spans, logs, _linked_traces(full_id, spans, spans_of)


def _linked_traces(trace_id: str, spans: Rows, spans_of: Callable[[str], Rows]) -> Rows:
    others = {li["trace_id"] for s in spans for li in s["links"]} - {trace_id}
    rows: Rows = []
    for other in sorted(others)[:_MAX_LINKED_TRACES]:
        try:
            rows.extend(spans_of(other))
        except (GlmtraceError, StoreError, OSError, sqlite3.Error):
            continue  # the link is still shown, by id
    return rows


@main.command()
@click.argument("trace_id")
@click.option("--json", "as_json", is_flag=True, help="Print spans and logs as JSON.")
@_remote_options
@_store_option
def show(
    trace_id: str, as_json: bool, jaeger: str | None, es: str | None, store: Path | None
) -> None:
    """Show TRACE_ID (or a unique 8+ character prefix) as a tree with its log lines."""
    with _clear_errors():
        full_id, spans, logs, linked = _load_trace(trace_id, store, jaeger, es)
    if not spans:
        raise click.ClickException(f"no trace {trace_id}")
    if as_json:
        click.echo(render.dumps(render.as_json(full_id, spans, logs, linked), indent=2))
    else:
        console.print(render.tree(full_id, spans, logs, linked, width=console.width))


@main.command()
@click.argument("trace_id")
@click.option(
    "--format", "fmt", type=click.Choice(["perfetto"]), default="perfetto", show_default=True
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@_remote_options
@_store_option
def export(
    trace_id: str, fmt: str, output: Path, jaeger: str | None, es: str | None, store: Path | None
) -> None:
    """Write TRACE_ID as a Chrome trace-event file for ui.perfetto.dev or chrome://tracing.

    The traces its links point to (batch <-> requests) come along, links drawn as arrows.
    """
    with _clear_errors():
        _full_id, spans, logs, linked = _load_trace(trace_id, store, jaeger, es)
        if not spans:
            raise click.ClickException(f"no trace {trace_id}")
        # The linked traces come along, so each link is an arrow between two slices.
        output.write_text(
            render.dumps(perfetto.trace_events(spans + linked, logs)), encoding="utf-8"
        )
    others = len({s["trace_id"] for s in linked})
    click.echo(
        f"wrote {output} ({len(spans)} spans, {len(logs)} logs"
        + (f", {len(linked)} spans of {others} linked traces" if linked else "")
        + "); open it at https://ui.perfetto.dev"
    )


@main.command()
@click.option("--otlp", required=True, help="OTLP endpoint, e.g. http://127.0.0.1:4317.")
@click.option("--es", envvar="GLMTRACE_ES_URL", help="Elasticsearch URL for the logs.")
@_store_option
def push(otlp: str, es: str | None, store: Path | None) -> None:
    """Upload what the local store recorded (no duplicates when run twice)."""
    from rich.progress import Progress

    from ..remote.push import push as push_store

    with _clear_errors(), Progress(console=console) as progress:
        task = progress.add_task("pushing", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        target = _es_options(es) if es else None
        result = push_store(_local_store(store), otlp, target, advance)
    click.echo(f"pushed {result}")


@main.command()
def doctor() -> None:
    """Show the effective configuration, where each value came from, and endpoint health."""
    with _clear_errors():
        options, sources = resolve({}, check_store=False)  # the health table checks it
    table = Table("setting", "value", "source")
    for name, source in sorted(sources.items()):
        value: Any = (
            "***" if name in SECRET_SETTINGS and source != "default" else _value(options, name)
        )
        table.add_row(name, redact_url(str(value)), source)
    console.print(table)
    from .. import native_export
    from ..remote.probe import probe

    health = Table("endpoint", "url", "status")
    health.add_row("store", str(options.store), _store_health(options.store))
    for label, url in _endpoint_checks(options):
        ok, detail = probe(label, url, options.elasticsearch, protocol=options.protocol)
        health.add_row(
            label,
            redact_url(url),
            f"[green]ok[/green] {detail}" if ok else f"[red]down[/red] {detail}",
        )
    console.print(health)
    if options.traces == "otlp":
        console.print(f"span export: {native_export.describe(options)}")
    elif options.traces == "local":
        from ..store import native_writer

        console.print(f"span store: {native_writer.describe()}")
    console.print(plugins.table())
    _print_recent_runs(options.store)


def _store_health(path: Path) -> str:
    """Whether the local store can be read; a store not created yet is not a fault."""
    if path.is_dir():
        return "[red]down[/red] is a directory, not a store file"
    try:
        check_store_path(path)
    except ConfigError as exc:
        return f"[red]down[/red] {exc}"
    if not path.exists():
        return "[yellow]not created yet[/yellow] (the first traced run creates it)"
    try:
        Store(path).recent_runs(1)
    except (StoreError, OSError, sqlite3.Error) as exc:
        return f"[red]down[/red] {exc}"
    return f"[green]ok[/green] {path.stat().st_size} bytes"


def _print_recent_runs(path: Path) -> None:
    """What the last traced processes exported, spooled, replayed and dropped, per sink."""
    try:
        runs = Store(path).recent_runs()
    except (StoreError, OSError, sqlite3.Error):
        return  # the health table said why
    if not runs:
        return
    # Unboxed, so the eight columns fit 80 terminal columns.
    table = Table(title="last runs", box=None, collapse_padding=True, header_style="bold")
    for column in ("ended", "pid", "service", "sink"):
        table.add_column(column, no_wrap=column != "service")
    for column in ("exported", "spooled", "replayed", "dropped"):
        table.add_column(column, justify="right")
    for ended_ns, pid, service, stats in runs:
        ended = dt.datetime.fromtimestamp(ended_ns / 1e9).strftime("%m-%d %H:%M:%S")
        for sink, counts in sorted(stats.items()):
            dropped = counts.get("dropped", 0)
            table.add_row(
                ended,
                str(pid),
                service,
                sink,
                *(str(counts.get(k, 0)) for k in ("exported", "spooled", "replayed")),
                f"[red]{dropped}[/red]" if dropped else "0",
            )
    console.print(table)


def _es_options(url: str) -> ElasticsearchOptions:
    """``url`` with the credentials and TLS settings of the GLMTRACE_ES_* environment."""
    options, _ = resolve({"es_url": url}, check_store=False)
    assert options.elasticsearch is not None
    return options.elasticsearch


def _value(options: Any, name: str) -> Any:
    if name.startswith("es_"):
        es = options.elasticsearch
        field = name[3:]
        return getattr(es, field, None) if es else None
    if name.startswith("fluent_"):
        fluent = options.fluent
        return getattr(fluent, name[7:], None) if fluent else None
    return getattr(options, name)


def _endpoint_checks(options: Any) -> list[tuple[str, str]]:
    checks = []
    if options.endpoint:
        checks.append(("otlp", options.endpoint))
    if options.elasticsearch:
        checks.append(("elasticsearch", options.elasticsearch.url))
    if options.fluent:
        checks.append(("fluent", f"tcp://{options.fluent.host}:{options.fluent.port}"))
    jaeger = os.environ.get("GLMTRACE_JAEGER_URL")
    if jaeger:
        checks.append(("jaeger", jaeger))
    return checks


from ..ui.command import stats_command, ui_command  # noqa: E402

main.add_command(ui_command)
main.add_command(stats_command)
main.add_command(stack_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
