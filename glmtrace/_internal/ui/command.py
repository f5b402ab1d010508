"""The ``glmtrace ui`` and ``glmtrace stats`` commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..config import ElasticsearchOptions, resolve
from ..errors import GlmtraceError
from . import metrics
from .queries import LocalSource, QueryError, Source
from .server import App, make_server

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _store(path: Path | None) -> Path:
    if path is not None:
        return path
    options, _ = resolve({}, check_store=False)
    return options.store


def _es_options(url: str) -> ElasticsearchOptions:
    """``url`` with the credentials and TLS settings of the GLMTRACE_ES_* environment."""
    options, _ = resolve({"es_url": url}, check_store=False)
    assert options.elasticsearch is not None
    return options.elasticsearch


_store_option = click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="Local store file (default: GLMTRACE_STORE or ./.glmtrace/glmtrace.db).",
)


@click.command(name="ui")
@_store_option
@click.option("--port", default=7080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback shows your traces to the network.",
)
@click.option("--jaeger", help="Read traces from this Jaeger (query API / UI URL), not the store.")
@click.option("--es", envvar="GLMTRACE_ES_URL", help="With --jaeger: read logs from this ES.")
@click.option(
    "--kibana", envvar="GLMTRACE_KIBANA_URL", help="Kibana URL, for 'open in Kibana' links."
)
def ui_command(
    store: Path | None,
    port: int,
    host: str,
    jaeger: str | None,
    es: str | None,
    kibana: str | None,
) -> None:
    """Serve a read-only web app over the local store (or Jaeger + Elasticsearch): traces,
    logs, kernels, stage metrics. GLMTRACE_JAEGER_URL adds "open in Jaeger" links."""
    if host not in _LOOPBACK:
        click.secho(
            f"warning: serving on {host}: anyone who can reach this address can read your "
            "traces and logs",
            fg="yellow",
            err=True,
        )
    source: Source
    if jaeger:
        from .remote_source import RemoteSource

        try:
            source = RemoteSource(jaeger, _es_options(es) if es else None)
        except GlmtraceError as exc:  # a malformed URL or ES setting
            raise click.ClickException(str(exc)) from None
    else:
        source = LocalSource(_store(store))
    link = jaeger or os.environ.get("GLMTRACE_JAEGER_URL")
    app = App(source, link.rstrip("/") if link else None, kibana.rstrip("/") if kibana else None)
    try:
        server = make_server(app, host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"glmtrace ui: http://{shown}:{server.server_address[1]}/  ({source.label})")
    if isinstance(source, LocalSource) and not source.path.exists():
        click.echo(f"note: no store at {source.path} yet; the page says so until a program runs")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command(name="stats")
@_store_option
@click.option(
    "--window",
    default="1h",
    show_default=True,
    help="How far back from the newest span: 90s, 15m, 1h, 7d, or 'all'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--jaeger", help="Compute over this Jaeger's traces instead of the store.")
def stats_command(store: Path | None, window: str, as_json: bool, jaeger: str | None) -> None:
    """QPS, P50/P95/P99 latency and error rate per stage and per model (same as `glmtrace ui`)."""
    source: Source
    if jaeger:
        from .remote_source import RemoteSource

        source = RemoteSource(jaeger)
    else:
        source = LocalSource(_store(store))
    try:
        metrics.parse_window(window)
        result = metrics.stage_metrics(source, window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        for group in (*result["stages"], *result["models"]):
            del group["series"]
        click.echo(json.dumps(result, indent=2))
        return
    console = Console()
    seconds = result["window"]["seconds"]
    console.print(f"window: {result['window']['label']} ({seconds:.0f} s up to the newest span)")
    for title, groups in (("stage", result["stages"]), ("model", result["models"])):
        if not groups:
            continue
        table = Table(title, "calls", "QPS", "P50 ms", "P95 ms", "P99 ms", "errors")
        for g in groups:
            table.add_row(
                g["key"],
                str(g["count"]),
                f"{g['qps']:.3f}",
                f"{g['p50_ms']:.2f}",
                f"{g['p95_ms']:.2f}",
                f"{g['p99_ms']:.2f}",
                f"{100 * g['error_rate']:.1f}%",
            )
        console.print(table)
    if not result["stages"] and not result["models"]:
        console.print("no stage or inference spans in this window")
