"""``glmtrace stack up | down | status | logs``: the Docker-less local stack."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import local
from .paths import StackError

console = Console()


def _dir_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where pid files, logs and data live (default: GLMTRACE_STACK_DIR or "
        "<backend cache>/stack).",
    )(fn)


@click.group()
def stack() -> None:
    """Run Jaeger, an OTel Collector and Elasticsearch on loopback, without Docker."""


def _parse_ports(values: tuple[str, ...]) -> dict[str, int]:
    ports = {}
    for value in values:
        name, sep, port = value.partition("=")
        if not sep or not port.isdigit():
            raise click.BadParameter(f"{value!r}: expected NAME=PORT, e.g. es-http=9201")
        ports[name] = int(port)
    return ports


@stack.command()
@_dir_option
@click.option(
    "--port",
    "port_values",
    multiple=True,
    metavar="NAME=PORT",
    help=f"Move one port ({', '.join(local.PORTS)}); repeatable.",
)
@click.option("--no-provision", is_flag=True, help="Refuse instead of building what is missing.")
def up(directory: Path | None, port_values: tuple[str, ...], no_provision: bool) -> None:
    """Start the stack (provisioning what is missing) and leave it running."""
    directory = directory or local.default_dir()
    try:
        with console.status("checking", spinner="dots") as status:

            def progress(line: str) -> None:
                status.update(line[-120:])

            result = local.up(directory, _parse_ports(port_values), progress, not no_provision)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    for label, url in result.urls().items():
        console.print(f"{label:<26} {url}", markup=False, highlight=False)
    console.print(f"{'Data, logs, pid files':<26} {directory}", markup=False, highlight=False)
    console.print("# point glmtrace at it:", markup=False, highlight=False)
    for name, value in result.environment().items():
        click.echo(f"export {name}={value}")


@stack.command()
@_dir_option
def down(directory: Path | None) -> None:
    """Stop the stack (its data is kept for the next up)."""
    stopped = local.down(directory or local.default_dir())
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack.command()
@_dir_option
def status(directory: Path | None) -> None:
    """Each backend: process, health, URL, log."""
    directory = directory or local.default_dir()
    found = local.load(directory)
    if found is None:
        raise click.ClickException(f"no stack in {directory}; run: glmtrace stack up")
    table = Table("service", "pid", "state", "log")
    for name in local.NAMES:
        service = found.service(name)
        if service is None:
            state = "[red]stopped[/red]"
        elif found.health(name):
            state = "[green]running[/green]"
        else:
            state = "[yellow]not answering[/yellow]"
        table.add_row(name, str(service.pid) if service else "-", state, str(found.log(name)))
    console.print(table)
    for label, url in found.urls().items():
        console.print(f"{label:<26} {url}", markup=False, highlight=False)


@stack.command()
@_dir_option
@click.argument("names", nargs=-1, type=click.Choice(local.NAMES))
@click.option("-n", "--lines", default=20, show_default=True, type=click.IntRange(0))
@click.option("-f", "--follow", is_flag=True, help="Keep printing what is appended.")
def logs(directory: Path | None, names: tuple[str, ...], lines: int, follow: bool) -> None:
    """The last lines of each backend's log (all, or NAMES)."""
    directory = directory or local.default_dir()
    found = local.load(directory)
    if found is None:
        raise click.ClickException(f"no stack in {directory}; run: glmtrace stack up")
    offsets = {}
    for name in names or local.NAMES:
        path = found.log(name)
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        text = data.decode("utf-8", errors="replace")
        for line in text.splitlines()[-lines:] if lines else []:
            click.echo(f"{name} | {line}")
        offsets[path] = (name, len(data))
    while follow:
        time.sleep(0.5)
        for path, (name, offset) in offsets.items():
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    new = handle.read()
            except OSError:
                continue
            offsets[path] = (name, offset + len(new))
            for line in new.decode("utf-8", errors="replace").splitlines():
                click.echo(f"{name} | {line}")
