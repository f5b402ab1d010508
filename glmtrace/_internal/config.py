"""Resolution of every setting: explicit argument > GLMTRACE_* env > OTEL_* env > default.

Each setting is declared once in ``_SETTINGS``; :func:`resolve` returns the frozen
:class:`Options` and, for ``glmtrace doctor``, where each value came from.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args

from . import config_values as parsers
from .config_values import DEFAULT_REDACT_KEYS as DEFAULT_REDACT_KEYS
from .config_values import LogsSink as LogsSink
from .config_values import OtlpProtocol as OtlpProtocol
from .config_values import ResourceValue as ResourceValue
from .config_values import TracesSink as TracesSink
from .config_values import check_store_path as check_store_path
from .config_values import redact_url as redact_url
from .errors import ConfigError


@dataclass(frozen=True)
class ElasticsearchOptions:
    """Where and how log records are shipped to Elasticsearch."""

    url: str
    data_stream: str = "logs-glmtrace-default"
    api_key: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True

    def __repr__(self) -> str:
        return _repr(self)


@dataclass(frozen=True)
class FluentOptions:
    """Where log records are sent over the Fluent forward protocol."""

    host: str = "127.0.0.1"
    port: int = 24224
    tag: str = "glmtrace"


@dataclass(frozen=True)
class Options:
    """The effective configuration of one glmtrace runtime."""

    service_name: str = "unknown_service"
    traces: TracesSink = "local"
    logs: tuple[LogsSink, ...] = ("local",)
    endpoint: str | None = None
    protocol: OtlpProtocol = "grpc"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    store: Path = Path(".glmtrace/glmtrace.db")
    sample_rate: float | None = None
    max_attribute_length: int = 4096
    redact_keys: tuple[str, ...] = DEFAULT_REDACT_KEYS
    log_level: str = "INFO"
    capture_logs: bool = True
    shutdown_timeout: float = 2.0
    spool_max_bytes: int = 256 * 1024 * 1024
    elasticsearch: ElasticsearchOptions | None = None
    fluent: FluentOptions | None = None
    resource_attributes: Mapping[str, ResourceValue] = field(default_factory=dict)

    def __repr__(self) -> str:
        return _repr(self)

    def as_arguments(self) -> dict[str, Any]:
        """These options as ``init()`` keyword arguments (to re-create them in a child process)."""
        args: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("elasticsearch", "fluent", "redact_keys")
        }
        if self.service_name == Options.service_name:
            # Unnamed: the child reads its name where the parent did (OTEL_RESOURCE_ATTRIBUTES).
            del args["service_name"]
        args["logs"] = list(self.logs)
        args["headers"] = dict(self.headers)
        args["resource_attributes"] = dict(self.resource_attributes)
        args["redact_keys"] = [k for k in self.redact_keys if k not in DEFAULT_REDACT_KEYS]
        if self.elasticsearch is not None:
            es = self.elasticsearch
            args.update(
                es_url=es.url,
                es_api_key=es.api_key,
                es_username=es.username,
                es_password=es.password,
                es_ca_certs=es.ca_certs,
                es_verify_certs=es.verify_certs,
            )
        if self.fluent is not None:
            args.update(fluent_host=self.fluent.host, fluent_port=self.fluent.port)
        return args


def otlp_protocol(url: str) -> OtlpProtocol:
    """The OTLP protocol a URL implies: HTTP on port 4318 or a ``/v1/traces`` path, else gRPC."""
    parts = urllib.parse.urlsplit(url)
    is_http = parts.port == 4318 or parts.path.rstrip("/").endswith("/v1/traces")
    return "http/protobuf" if is_http else "grpc"


def otlp_traces_url(url: str) -> str:
    """The OTLP/HTTP traces URL for an endpoint given with or without ``/v1/traces``."""
    return url if url.rstrip("/").endswith("/v1/traces") else f"{url.rstrip('/')}/v1/traces"


def _repr(options: Any) -> str:
    """The dataclass repr with URL passwords hidden (fields marked repr=False stay out)."""
    shown = []
    for f in fields(options):
        if f.repr:
            value = getattr(options, f.name)
            text = repr(redact_url(value) if f.name in ("endpoint", "url") and value else value)
            shown.append(f"{f.name}={text}")
    return f"{type(options).__name__}({', '.join(shown)})"


@dataclass(frozen=True)
class _Setting:
    env: tuple[str, ...]
    parse: Callable[[str, Any], Any]


_SETTINGS: dict[str, _Setting] = {
    "service_name": _Setting(("GLMTRACE_SERVICE_NAME", "OTEL_SERVICE_NAME"), parsers.service_name),
    "traces": _Setting(("GLMTRACE_TRACES",), parsers.traces),
    "logs": _Setting(("GLMTRACE_LOGS",), parsers.logs),
    "endpoint": _Setting(
        ("GLMTRACE_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        parsers.endpoint,
    ),
    "protocol": _Setting(
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        parsers.choice(get_args(OtlpProtocol)),
    ),
    "headers": _Setting(
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"), parsers.headers
    ),
    "store": _Setting(("GLMTRACE_STORE",), lambda n, v: Path(parsers.string(n, str(v)))),
    "sample_rate": _Setting(("GLMTRACE_SAMPLE_RATE",), parsers.ratio),
    "max_attribute_length": _Setting(
        ("GLMTRACE_MAX_ATTRIBUTE_LENGTH",),
        parsers.bounded(int, parsers.MAX_ATTRIBUTE_LENGTH),
    ),
    "redact_keys": _Setting(("GLMTRACE_REDACT_KEYS",), parsers.keys),
    "log_level": _Setting(("GLMTRACE_LOG_LEVEL",), parsers.level),
    "capture_logs": _Setting(("GLMTRACE_CAPTURE_LOGS",), parsers.boolean),
    "shutdown_timeout": _Setting(
        ("GLMTRACE_SHUTDOWN_TIMEOUT",), parsers.bounded(float, parsers.MAX_SHUTDOWN_TIMEOUT)
    ),
    "spool_max_bytes": _Setting(
        ("GLMTRACE_SPOOL_MAX_BYTES",), parsers.bounded(int, parsers.MAX_SPOOL_BYTES)
    ),
    "es_url": _Setting(("GLMTRACE_ES_URL",), parsers.endpoint),
    "es_api_key": _Setting(("GLMTRACE_ES_API_KEY",), parsers.secret),
    "es_username": _Setting(("GLMTRACE_ES_USERNAME",), parsers.string),
    "es_password": _Setting(("GLMTRACE_ES_PASSWORD",), parsers.secret),
    "es_ca_certs": _Setting(("GLMTRACE_ES_CA_CERTS",), parsers.string),
    "es_verify_certs": _Setting(("GLMTRACE_ES_VERIFY_CERTS",), parsers.boolean),
    "fluent_host": _Setting(("GLMTRACE_FLUENT_HOST",), parsers.string),
    "fluent_port": _Setting(("GLMTRACE_FLUENT_PORT",), parsers.bounded(int, 65535)),
    # OTEL_RESOURCE_ATTRIBUTES is read by OpenTelemetry's Resource.create, under these.
    "resource_attributes": _Setting((), parsers.resource),
}

SECRET_SETTINGS = frozenset({"headers", "es_api_key", "es_password"})


def resolve(
    arguments: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    check_store: bool = True,
) -> tuple[Options, dict[str, str]]:
    """Build :class:`Options` from explicit ``arguments`` and the environment.

    Returns the options and, per setting, its source (``argument``, an env var name, or
    ``default``). A bad argument or environment value raises :class:`ConfigError` naming the
    argument or variable (and the value, unless it is a secret). With ``check_store`` a store
    that traces or logs write to must be usable (:func:`check_store_path`); commands that only
    read it pass False and say themselves what is wrong with it.
    """
    env = os.environ if environ is None else environ
    unknown = set(arguments) - set(_SETTINGS)
    if unknown:
        raise ConfigError(
            f"unknown init() argument(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_SETTINGS))}"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, setting in _SETTINGS.items():
        if arguments.get(name) is not None:
            values[name] = setting.parse(name, arguments[name])
            sources[name] = "argument"
            continue
        for var in setting.env:
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = setting.parse(var, raw)
            sources[name] = var
            break
        else:
            sources[name] = "default"
    if sources.get("sample_rate") == "default" and env.get("OTEL_TRACES_SAMPLER"):
        parsers.check_sampler(env["OTEL_TRACES_SAMPLER"], env.get("OTEL_TRACES_SAMPLER_ARG"))
        sources["sample_rate"] = "OTEL_TRACES_SAMPLER"
    if sources["resource_attributes"] == "default" and env.get("OTEL_RESOURCE_ATTRIBUTES"):
        sources["resource_attributes"] = "OTEL_RESOURCE_ATTRIBUTES"
    options = _build(values, sources)
    if check_store and (options.traces == "local" or "local" in options.logs):
        name = sources["store"]
        parsers.check_store_path(
            options.store, "store" if name in ("argument", "default") else name
        )
    return options, sources


def _build(values: dict[str, Any], sources: dict[str, str]) -> Options:
    endpoint = values.get("endpoint")
    traces: TracesSink = values.get("traces") or ("otlp" if endpoint else "local")
    sources["traces"] = sources["traces"] if "traces" in values else "derived"
    if traces == "otlp" and not endpoint:
        endpoint = "http://127.0.0.1:4317"
    protocol = values.get("protocol") or (otlp_protocol(endpoint) if endpoint else "grpc")

    es = None
    if "es_url" in values:
        es = ElasticsearchOptions(
            url=values["es_url"],
            api_key=values.get("es_api_key"),
            username=values.get("es_username"),
            password=values.get("es_password"),
            ca_certs=values.get("es_ca_certs"),
            verify_certs=values.get("es_verify_certs", True),
        )
    fluent = None
    if "fluent_host" in values or "fluent_port" in values:
        fluent = FluentOptions(
            host=values.get("fluent_host", "127.0.0.1"), port=values.get("fluent_port", 24224)
        )

    logs: tuple[Any, ...] | None = values.get("logs")
    if logs is None:
        sources["logs"] = "derived"
        derived = [
            sink
            for sink, wanted in (
                ("local", traces == "local"),
                ("elasticsearch", es is not None),
                ("fluent", fluent is not None),
            )
            if wanted
        ]
        logs = tuple(derived) or ("none",)
    if "elasticsearch" in logs and es is None:
        raise ConfigError("logs includes 'elasticsearch' but no es_url is set; pass es_url=...")
    if "fluent" in logs and fluent is None:
        fluent = FluentOptions()

    simple = {
        k: values[k]
        for k in (
            "service_name",
            "headers",
            "store",
            "sample_rate",
            "max_attribute_length",
            "redact_keys",
            "log_level",
            "capture_logs",
            "shutdown_timeout",
            "spool_max_bytes",
            "resource_attributes",
        )
        if k in values
    }
    return Options(
        traces=traces,
        logs=logs,
        endpoint=endpoint,
        protocol=protocol,
        elasticsearch=es,
        fluent=fluent,
        **simple,
    )
