"""Log sinks and span exporters from other packages, found through entry points.

A package declares, in its ``pyproject.toml``::

    [project.entry-points."glmtrace.log_sinks"]
    jsonl = "glmtrace_jsonl:create_log_sink"      # (options: Options) -> LogSink

    [project.entry-points."glmtrace.span_exporters"]
    jsonl = "glmtrace_jsonl:create_span_exporter"  # (options: Options) -> SpanExporter

and is then selected by its name like a built-in sink: ``init(logs=["local", "jsonl"])``,
``init(traces="jsonl")``, ``GLMTRACE_LOGS=local,jsonl``, ``GLMTRACE_TRACES=jsonl``. A log sink
follows :class:`LogSink` (glmtrace counts what it exports and drops);
a span exporter is an OpenTelemetry ``SpanExporter``. Built-in names win over plugins.

A plugin that cannot be imported is refused when the configuration is resolved, one whose factory
raises when ``init()`` starts it: either way as a :class:`ConfigError` naming the plugin, its entry
point and the cause. Given as an ``init()`` argument, that error is raised (a wrong argument fails
early); from the environment it is logged on the ``glmtrace`` logger and the program runs on
without the plugin, as with any bad environment value. Once running, what a plugin raises is
caught, logged and counted as dropped, never passed to the user's code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigError
from .guard import internal_errors
from .stats import STATS

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from rich.table import Table

log = logging.getLogger("glmtrace")

LOG_SINKS = "glmtrace.log_sinks"
SPAN_EXPORTERS = "glmtrace.span_exporters"
_BUILTIN = {
    LOG_SINKS: frozenset({"local", "elasticsearch", "fluent", "none"}),
    SPAN_EXPORTERS: frozenset({"local", "otlp", "none"}),
}
_KIND = {LOG_SINKS: "log sink", SPAN_EXPORTERS: "span exporter"}
_EXPORTER = ("export", "shutdown", "force_flush")


class LogSink(Protocol):
    """What a log sink, built in or a plugin, is: called with each batch of ECS documents on
    the shipper's background thread."""

    def __call__(self, batch: list[dict[str, Any]]) -> None: ...

    def watch_queue(self, fill: Callable[[], float]) -> None:
        """Receive the shipper's queue fill (0..1), to spill before it overflows."""

    def close(self, timeout: float = 2.0) -> None: ...


def found(group: str) -> dict[str, EntryPoint]:
    """The plugins of ``group`` installed now, by name (any reusing a built-in name left out)."""
    # Imported here: importlib.metadata (with email, zipfile, csv) costs ~10 ms of `import
    # glmtrace`, and only init() and doctor look for plugins.
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=group) if ep.name not in _BUILTIN[group]}


def names(group: str) -> tuple[str, ...]:
    return tuple(sorted(found(group)))


def _error(group: str, ep: EntryPoint, stage: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"{_KIND[group]} plugin {ep.name!r} ({ep.value}) failed to {stage}: "
        f"{type(exc).__name__}: {exc}"
    )


def _load(group: str, ep: EntryPoint) -> Callable[..., Any]:
    try:
        factory = ep.load()
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises
        raise _error(group, ep, "import", exc) from exc
    if not callable(factory):
        raise _error(group, ep, "import", TypeError(f"{ep.value} is not callable"))
    return factory  # type: ignore[no-any-return]


def check(group: str, selected: Iterable[str]) -> None:
    """Import every plugin among ``selected``: ConfigError for one that cannot be imported."""
    plugins = found(group)
    for name in selected:
        if name in plugins:
            _load(group, plugins[name])


def start(group: str, name: str, options: object, strict: bool) -> Any:
    """The sink or exporter plugin ``name`` makes from ``options`` (glmtrace's ``Options``,
    passed on untouched); None if it failed, not strict.

    A log sink comes back wrapped so that glmtrace counts it and nothing it raises escapes.
    """
    ep = found(group)[name]
    try:
        made = _load(group, ep)(options)
        wanted = ("__call__", "watch_queue", "close") if group == LOG_SINKS else _EXPORTER
        missing = [m for m in wanted if not callable(getattr(made, m, None))]
        if missing:
            protocol = "LogSink" if group == LOG_SINKS else "SpanExporter"
            raise TypeError(f"{made!r} is no {protocol}: it lacks {', '.join(missing)}")
        return _GuardedSink(name, made) if group == LOG_SINKS else made
    except ConfigError as exc:
        error = exc
    except Exception as exc:
        error = _error(group, ep, "start", exc)
    if strict:
        raise error
    log.warning("%s; continuing without it", error)
    return None


class _GuardedSink:
    """A plugin's :class:`LogSink`, counted here and never raising out of its methods."""

    def __init__(self, name: str, sink: LogSink) -> None:
        self._name = f"logs-{name}"
        self._sink = sink

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        self._sink(batch)  # the shipper counts a batch that raises as dropped
        STATS.add(self._name, "exported", len(batch))

    def watch_queue(self, fill: Callable[[], float]) -> None:
        with internal_errors(f"{self._name} watch_queue"):
            self._sink.watch_queue(fill)

    def close(self, timeout: float = 2.0) -> None:
        with internal_errors(f"{self._name} close"):
            self._sink.close(timeout)


def describe() -> list[tuple[str, str, str, str]]:
    """Every plugin installed, for ``glmtrace doctor``: (kind, name, entry point, package)."""
    from importlib.metadata import entry_points

    rows = []
    for group, kind in _KIND.items():
        for ep in entry_points(group=group):
            package = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?"
            shadowed = " (ignored: built-in name)" if ep.name in _BUILTIN[group] else ""
            rows.append((kind, ep.name + shadowed, ep.value, package))
    return rows


def table() -> Table:
    """:func:`describe` as the table ``glmtrace doctor`` prints."""
    from rich.table import Table

    rows = describe() or [("-", "no plugins installed", "", "")]
    found_table = Table("plugin", "name", "entry point", "package", title="plugins")
    for row in rows:
        found_table.add_row(*row)
    return found_table
