"""Reading from and uploading to the real backends, for the CLI and the UI.

- :mod:`.jaeger`: spans and trace summaries from Jaeger's query API, in exactly the shapes the
  local store returns.
- :mod:`.es_query`: a trace's log documents from Elasticsearch, in ``ecs_document``'s shape.
- :mod:`.push`: upload a local store (spans over OTLP, logs with ``_bulk`` ``create``);
  running it twice sends nothing twice.
- :mod:`.probe`: does an endpoint answer, and which version is it (``glmtrace doctor``).

Every failure the user can fix (unreachable, refused, not found) raises
:class:`~.http.RemoteError` with a one-line message; credentials never appear in messages.
"""
