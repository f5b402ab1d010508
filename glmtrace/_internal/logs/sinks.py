"""Remote log sinks (Elasticsearch, Fluent forward): batch senders for the log shipper.

Each sink is called with each batch on the shipper's background thread and honours
:class:`~glmtrace._internal.plugins.LogSink` (the protocol plugins follow too): it counts
``exported``/``spooled``/``replayed``/``dropped`` in ``glmtrace.stats()`` under
``logs-<sink>`` itself (a batch that goes to a spool is not exported yet), may watch the
shipper's queue to spill early, and is closed after the shipper has flushed, at shutdown.
"""

from __future__ import annotations

import logging

from .. import plugins
from ..config import Options
from ..plugins import LogSink

log = logging.getLogger("glmtrace")


def create_log_sink(sink: str, options: Options, strict: bool = True) -> LogSink | None:
    """A function that ships one batch of ECS documents to ``sink``, or None if unavailable.

    Raises :class:`~glmtrace.MissingDependencyError` when the sink's extra is not installed;
    a plugin's failure to start is a ConfigError, raised when ``strict`` (see plugins.py).
    """
    if sink == "elasticsearch":
        from .es_sink import create as create_es

        return create_es(options)
    if sink == "fluent":
        from .fluent_sink import create as create_fluent

        return create_fluent(options)
    if sink in plugins.names(plugins.LOG_SINKS):
        return plugins.start(plugins.LOG_SINKS, sink, options, strict)  # type: ignore[no-any-return]
    log.warning("log sink %r is not available; its records are not shipped", sink)
    return None
