"""The ``glmtrace`` command line: run pipelines, list and show traces, export, push, doctor."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from . import plugins, render
from .config import SECRET_SETTINGS, ElasticsearchOptions, redact_url, resolve
from .errors import GlmtraceError
from .stack.command import stack as stack_command
from .store import Store, StoreError

console = Console()
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Expected failures become one line and exit status 1, never a traceback."""
    try:
        yield
    except (GlmtraceError, StoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _store_path() -> Path:
    options, _ = resolve({})
    return options.store


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
def run(pipeline_file: Path, text: str | None, input_file: Any, session: str | None) -> None:
    """Run PIPELINE_FILE with tracing on; print the trace id and its tree."""
    import glmtrace

    from . import pipeline as pipelines
    from .runtime import DEFAULT

    if (text is None) == (input_file is None):
        raise click.UsageError("give exactly one of --input TEXT or --input-file FILE")
    payload = text if text is not None else input_file.read()
    with _clear_errors():
        spec = pipelines.load(pipeline_file)
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
        store = Store(options.store)
        with _clear_errors():
            console.print(
                render.tree(
                    result.trace_id, store.spans(result.trace_id), store.logs(result.trace_id)
                )
            )
    elif result.trace_id:
        console.print(
            f"spans sent to {options.endpoint}; view: glmtrace show {result.trace_id} --jaeger URL"
        )
    if result.error is not None:
        raise click.ClickException(f"a stage failed: {type(result.error).__name__}: {result.error}")


@main.command(name="ls")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--service", help="Service name (with --jaeger).")
@click.option("--jaeger", envvar="GLMTRACE_JAEGER_URL", help="Jaeger query URL.")
@_store_option
def list_traces(limit: int, service: str | None, jaeger: str | None, store: Path | None) -> None:
    """List recent traces: id, root span, start, duration, span count, errors."""
    with _clear_errors():
        if jaeger:
            from . import remote

            if not service:
                raise click.UsageError("--service NAME is required with --jaeger")
            rows = remote.jaeger_recent(jaeger, service, limit)
        else:
            rows = Store(store or _store_path()).recent(limit)
    if not rows:
        raise click.ClickException("no traces recorded yet")
    table = Table("trace id", "root", "start", "duration", "spans", "errors")
    for r in rows:
        start = dt.datetime.fromtimestamp(r.start_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            r.trace_id,
            r.root_name,
            start,
            f"{r.duration_ns / 1e6:.1f} ms",
            str(r.span_count),
            f"[red]{r.error_count}[/red]" if r.error_count else "0",
        )
    console.print(table)


def _load_trace(
    trace_id: str, store: Path | None, jaeger: str | None, es: str | None
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    if jaeger:
        from . import remote

        spans = remote.jaeger_trace(jaeger, trace_id)
        full_id = spans[0]["trace_id"] if spans else trace_id
        logs = remote.es_logs(_es_options(es), full_id) if es else []
        return full_id, spans, logs
    local = Store(store or _store_path())
    full_id = local.resolve_trace_id(trace_id)
    return full_id, local.spans(full_id), local.logs(full_id)


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
        full_id, spans, logs = _load_trace(trace_id, store, jaeger, es)
    if not spans:
        raise click.ClickException(f"no trace {trace_id}")
    if as_json:
        click.echo(json.dumps(render.as_json(full_id, spans, logs), indent=2, default=str))
    else:
        console.print(render.tree(full_id, spans, logs))


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
    """Write TRACE_ID as a Chrome trace-event file for ui.perfetto.dev or chrome://tracing."""
    with _clear_errors():
        _full_id, spans, logs = _load_trace(trace_id, store, jaeger, es)
        if not spans:
            raise click.ClickException(f"no trace {trace_id}")
        output.write_text(json.dumps(render.perfetto(spans, logs)), encoding="utf-8")
    click.echo(
        f"wrote {output} ({len(spans)} spans, {len(logs)} logs); open it at https://ui.perfetto.dev"
    )


@main.command()
@click.option("--otlp", required=True, help="OTLP endpoint, e.g. http://127.0.0.1:4317.")
@click.option("--es", envvar="GLMTRACE_ES_URL", help="Elasticsearch URL for the logs.")
@_store_option
def push(otlp: str, es: str | None, store: Path | None) -> None:
    """Upload what the local store recorded (no duplicates when run twice)."""
    from rich.progress import Progress

    from . import remote

    with _clear_errors(), Progress(console=console) as progress:
        task = progress.add_task("pushing", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        target = _es_options(es) if es else None
        result = remote.push(Store(store or _store_path()), otlp, target, advance)
    click.echo(f"pushed {result}")


@main.command()
def doctor() -> None:
    """Show the effective configuration, where each value came from, and endpoint health."""
    with _clear_errors():
        options, sources = resolve({})
    table = Table("setting", "value", "source")
    for name, source in sorted(sources.items()):
        value: Any = (
            "***" if name in SECRET_SETTINGS and source != "default" else _value(options, name)
        )
        table.add_row(name, redact_url(str(value)), source)
    console.print(table)
    from . import remote

    health = Table("endpoint", "url", "status")
    for label, url in _endpoint_checks(options):
        ok, detail = remote.probe(label, url, options.elasticsearch, protocol=options.protocol)
        health.add_row(
            label,
            redact_url(url),
            f"[green]ok[/green] {detail}" if ok else f"[red]down[/red] {detail}",
        )
    console.print(health)
    console.print(plugins.table())
    _print_recent_runs(options.store)


def _print_recent_runs(path: Path) -> None:
    """What the last traced processes exported, spooled, replayed and dropped, per sink."""
    try:
        runs = Store(path).recent_runs()
    except StoreError:
        return
    if not runs:
        return
    table = Table("ended", "pid", "service", "sink", "exported", "spooled", "replayed", "dropped")
    for ended_ns, pid, service, stats in runs:
        ended = dt.datetime.fromtimestamp(ended_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
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
    options, _ = resolve({"es_url": url})
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
    checks = [("store", str(options.store))]
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


main.add_command(stack_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
