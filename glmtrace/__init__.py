"""glmtrace: tracing and observability for ML pipelines.

Example::

    import glmtrace

    glmtrace.init(service_name="autoglm")

    @glmtrace.stage("preprocess")
    def clean(text: str) -> str:
        return text.strip()

    with glmtrace.span("request", attributes={"user": "ada"}):
        clean("  hello  ")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from opentelemetry.sdk.trace.export import SpanExporter

from ._internal import carriers as _carriers
from ._internal import stage as _stage
from ._internal.child_processes import propagate
from ._internal.config import ElasticsearchOptions, FluentOptions, LogsSink, Options, TracesSink
from ._internal.errors import ConfigError, GlmtraceError, MissingDependencyError
from ._internal.inference import BatchScope, InferenceCall, InferenceScope, batch, inference
from ._internal.runtime import DEFAULT as _DEFAULT
from ._internal.spans import SpanHandle, SpanScope

if TYPE_CHECKING:
    from ._internal.torch.cuda import CudaSpan, cuda_span
    from ._internal.torch.modules import instrument_torch, uninstrument_torch
    from ._internal.torch.profiler import Profile, profile
else:
    # The torch helpers are imported on first use (PEP 562): most programs never use them,
    # and they would add about a tenth to `import glmtrace` (tests/unit/test_import_cost.py).
    def __getattr__(name: str) -> Any:
        if name in ("distributed", "testing"):  # submodules, usable after `import glmtrace`
            import importlib

            return importlib.import_module(f"{__name__}.{name}")
        if name in ("CudaSpan", "cuda_span"):
            from ._internal.torch import cuda as helpers
        elif name in ("instrument_torch", "uninstrument_torch"):
            from ._internal.torch import modules as helpers
        elif name in ("Profile", "profile"):
            from ._internal.torch import profiler as helpers
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(helpers, name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


P = ParamSpec("P")
R = TypeVar("R")

__version__ = "0.1.0"


def init(
    *,
    service_name: str | None = None,
    traces: TracesSink | None = None,
    logs: LogsSink | list[LogsSink] | tuple[LogsSink, ...] | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    store: str | Path | None = None,
    sample_rate: float | None = None,
    max_attribute_length: int | None = None,
    redact_keys: list[str] | tuple[str, ...] | None = None,
    log_level: str | None = None,
    capture_logs: bool | None = None,
    shutdown_timeout: float | None = None,
    spool_max_bytes: int | None = None,
    es_url: str | None = None,
    es_api_key: str | None = None,
    es_username: str | None = None,
    es_password: str | None = None,
    es_ca_certs: str | None = None,
    es_verify_certs: bool | None = None,
    fluent_host: str | None = None,
    fluent_port: int | None = None,
    resource_attributes: Mapping[str, str | bool | int | float] | None = None,
    exporter: SpanExporter | None = None,
) -> Options:
    """Start tracing. Every argument also has an environment variable; arguments win.

    With no endpoint configured, spans and logs go to the local store
    (``./.glmtrace/glmtrace.db``, ``GLMTRACE_STORE``) that the ``glmtrace`` CLI reads.
    ``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_TRACES_SAMPLER`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` are honoured; ``resource_attributes`` adds to (and wins over)
    the latter. Calling ``init()`` again with the same settings does nothing; with other
    settings it flushes and restarts. ``exporter`` adds any OpenTelemetry ``SpanExporter``.

    Args:
        service_name: the ``service.name`` of every span and log line
            (``GLMTRACE_SERVICE_NAME``, ``OTEL_SERVICE_NAME``; default ``unknown_service``).
        traces: where spans go: ``"local"`` (the store), ``"otlp"`` (``endpoint``) or
            ``"none"`` (``GLMTRACE_TRACES``; default ``otlp`` with an endpoint, else ``local``).
        logs: where captured log records go, one or a list of ``"local"``,
            ``"elasticsearch"``, ``"fluent"``, ``"none"`` (``GLMTRACE_LOGS``; default ``local``).
        endpoint: the OTLP traces endpoint, e.g. ``http://127.0.0.1:4317``
            (``GLMTRACE_ENDPOINT``, ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``).
        protocol: ``"grpc"`` or ``"http/protobuf"`` (``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``;
            default gRPC, HTTP on port 4318).
        headers: extra OTLP request headers, e.g. an ``authorization`` token
            (``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``).
        store: the local SQLite store's path (``GLMTRACE_STORE``;
            default ``./.glmtrace/glmtrace.db``).
        sample_rate: the fraction of traces kept, 0 to 1, decided at the root span
            (``GLMTRACE_SAMPLE_RATE``, ``OTEL_TRACES_SAMPLER[_ARG]``; default 1).
        max_attribute_length: the longest attribute or log text kept, in characters; longer
            values are cut and marked (``GLMTRACE_MAX_ATTRIBUTE_LENGTH``; default 4096).
        redact_keys: key fragments, besides the built-in ``password``, ``token``,
            ``api_key``..., whose attribute and log-extra values become ``[REDACTED]``
            (``GLMTRACE_REDACT_KEYS``, comma-separated).
        log_level: the lowest level of the log records captured, e.g. ``"INFO"``
            (``GLMTRACE_LOG_LEVEL``; default INFO).
        capture_logs: whether log records are captured at all (``GLMTRACE_CAPTURE_LOGS``;
            default on).
        shutdown_timeout: seconds that ``force_flush()`` and ``shutdown()`` may take
            (``GLMTRACE_SHUTDOWN_TIMEOUT``; default 2).
        spool_max_bytes: the disk spool for log records a backend could not take yet
            (``GLMTRACE_SPOOL_MAX_BYTES``; default 256 MiB); beyond it records are dropped
            and counted in :func:`stats`.
        es_url: the Elasticsearch URL for ``logs="elasticsearch"`` (``GLMTRACE_ES_URL``).
        es_api_key: an Elasticsearch API key (``GLMTRACE_ES_API_KEY``).
        es_username: an Elasticsearch user, with ``es_password`` (``GLMTRACE_ES_USERNAME``).
        es_password: that user's password (``GLMTRACE_ES_PASSWORD``).
        es_ca_certs: a CA bundle to verify Elasticsearch's certificate
            (``GLMTRACE_ES_CA_CERTS``).
        es_verify_certs: whether to verify that certificate (``GLMTRACE_ES_VERIFY_CERTS``;
            default on).
        fluent_host: the Fluent Bit / Fluentd / Collector forward input for
            ``logs="fluent"`` (``GLMTRACE_FLUENT_HOST``; default ``127.0.0.1``).
        fluent_port: its port (``GLMTRACE_FLUENT_PORT``; default 24224).
        resource_attributes: extra resource attributes of every span (str, bool, int or
            float values), added to and winning over ``OTEL_RESOURCE_ATTRIBUTES``.
        exporter: any OpenTelemetry ``SpanExporter``, fed beside ``traces`` (an
            ``InMemorySpanExporter`` in tests; see also :mod:`glmtrace.testing`).

    Returns:
        The resolved :class:`Options`.

    Raises :class:`ConfigError` naming the bad argument or environment variable and the fix.

    Example::

        glmtrace.init(service_name="autoglm", endpoint="http://127.0.0.1:4317")
    """
    arguments = {k: v for k, v in locals().items() if k != "exporter" and v is not None}
    return _DEFAULT.init(exporter=exporter, **arguments)


@overload
def stage(name: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def stage(
    name: str | None = None, /, **attributes: Any
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def stage(name: Any = None, /, **attributes: Any) -> Any:
    """Trace every call of a function, coroutine, (async) generator or class ``invoke()``.

    The span is named ``stage <name>`` (default: the function's name) and carries
    ``attributes``. Exceptions are recorded on the span and re-raised untouched.

    Example::

        @glmtrace.stage("infer", model="chatglm3")
        def infer(envelope: dict) -> dict: ...
    """
    if callable(name):
        return _stage.stage(_DEFAULT, name, None, attributes)
    return _stage.stage(_DEFAULT, None, name, attributes)


def span(name: str, attributes: Mapping[str, Any] | None = None) -> SpanScope:
    """A span around a ``with`` (or ``async with``) block, yielding a :class:`SpanHandle`.

    Example::

        with glmtrace.span("tokenize", {"n": 3}) as s:
            s.set_attribute("tokens", 42)
    """
    return _DEFAULT.span(name, attributes)


def current_trace_id() -> str | None:
    """The current trace id as 32 lowercase hex characters, or None outside a span."""
    return _DEFAULT.current_trace_id()


def current_span_id() -> str | None:
    """The current span id as 16 lowercase hex characters, or None outside a span."""
    return _DEFAULT.current_span_id()


def force_flush(timeout: float | None = None) -> bool:
    """Export everything queued, waiting at most ``timeout`` seconds (default: shutdown_timeout)."""
    return _DEFAULT.force_flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop, within ``timeout`` seconds; also runs at interpreter exit."""
    return _DEFAULT.shutdown(timeout)


def stats() -> dict[str, dict[str, int]]:
    """Per sink, how many spans/log records were exported, spooled, replayed or dropped."""
    return _DEFAULT.stats()


inject = _carriers.inject
extract = _carriers.extract
attach = _carriers.attach

__all__ = [
    "BatchScope",
    "ConfigError",
    "CudaSpan",
    "ElasticsearchOptions",
    "FluentOptions",
    "GlmtraceError",
    "InferenceCall",
    "InferenceScope",
    "MissingDependencyError",
    "Options",
    "Profile",
    "SpanHandle",
    "SpanScope",
    "attach",
    "batch",
    "cuda_span",
    "current_span_id",
    "current_trace_id",
    "extract",
    "force_flush",
    "inference",
    "init",
    "inject",
    "instrument_torch",
    "profile",
    "propagate",
    "shutdown",
    "span",
    "stage",
    "stats",
    "uninstrument_torch",
]
