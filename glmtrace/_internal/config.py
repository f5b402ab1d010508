"""Resolution of every setting: explicit argument > GLMTRACE_* env > OTEL_* env > default.

Each setting is declared once in ``_SETTINGS``; :func:`resolve` returns the frozen
:class:`Options` and, for ``glmtrace doctor``, where each value came from.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from opentelemetry.util.re import parse_env_headers

from . import plugins
from .errors import ConfigError
from .repair import text

TracesSink = Literal["local", "otlp", "none"]
LogsSink = Literal["local", "elasticsearch", "fluent", "none"]
OtlpProtocol = Literal["grpc", "http/protobuf"]
ResourceValue = str | bool | int | float

DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
)


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


_URL_PASSWORD = re.compile(r"^((?:[a-zA-Z][a-zA-Z0-9+.-]*://)?[^:@/\s]*):[^@/\s]*@")


def redact_url(url: str) -> str:
    """``url`` without the password of its ``user:password@`` part (with or without scheme)."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def _repr(options: Any) -> str:
    """The dataclass repr with URL passwords hidden (fields marked repr=False stay out)."""
    shown = []
    for f in fields(options):
        if f.repr:
            value = getattr(options, f.name)
            text = repr(redact_url(value) if f.name in ("endpoint", "url") and value else value)
            shown.append(f"{f.name}={text}")
    return f"{type(options).__name__}({', '.join(shown)})"


# ---------------------------------------------------------------------------- parsers

# Upper bounds (README, configuration): past these a value is a typo, and some (an infinite
# shutdown timeout) would fail later inside the SDK, in the user's program.
MAX_SHUTDOWN_TIMEOUT = 3600.0
MAX_ATTRIBUTE_LENGTH = 16 * 1024 * 1024
MAX_SPOOL_BYTES = 1024**4


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}={value!r} is not a non-empty string; pass e.g. {name}='my-app'")
    return value.strip()


def _name(name: str, value: Any) -> str:
    # Repaired here (lone surrogates, e.g. undecodable bytes in the environment, as U+FFFD)
    # so the resource, the store and every shipped document carry the same text.
    return text(_str(name, value))


def _secret(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string (the value is not shown)")
    return value.strip()


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        if value not in options:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, options))}")
        return str(value)

    return parse


def _logs(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{name}={value!r}: pass a sink name or a list of them")
    allowed = (*get_args(LogsSink), *plugins.names(plugins.LOG_SINKS))
    for v in value:
        _choice(allowed)(name, v)
    if not _from_environment(name):
        plugins.check(plugins.LOG_SINKS, value)
    sinks = tuple(dict.fromkeys(value))
    return ("none",) if "none" in sinks else sinks


def _traces(name: str, value: Any) -> str:
    sink = _choice((*get_args(TracesSink), *plugins.names(plugins.SPAN_EXPORTERS)))(name, value)
    if not _from_environment(name):
        plugins.check(plugins.SPAN_EXPORTERS, [sink])
    return sink


def _from_environment(name: str) -> bool:
    # A plugin named in the environment that cannot load is warned about when the runtime
    # starts it, and the program runs on without it; named in an argument, init() refuses it.
    return name.isupper()


def _bounded(kind: type[int] | type[float], maximum: float) -> Callable[[str, Any], Any]:
    """A parser for a finite number above 0 and at most ``maximum``."""

    def parse(name: str, value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
            raise ConfigError(f"{name}={value!r} is not a number; pass e.g. {name}=2") from None
        if isinstance(value, bool) or not 0 < number <= maximum:  # False for NaN too
            raise ConfigError(f"{name}={value!r} must be a positive number, at most {maximum:g}")
        return number

    return parse


def _ratio(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number between 0 and 1") from None
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ConfigError(f"{name}={value!r} must be between 0 and 1, e.g. {name}=0.1")
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use true or false")


def _level(name: str, value: Any) -> str:
    text = str(value).upper()
    if not isinstance(logging.getLevelName(text), int):
        raise ConfigError(f"{name}={value!r} is not a logging level such as 'INFO' or 'DEBUG'")
    return text


def _endpoint(name: str, value: Any) -> str:
    text = _str(name, value)
    example = "pass a URL such as 'http://127.0.0.1:4317'"
    if "://" not in text:
        raise ConfigError(f"{name}={redact_url(text)!r} has no scheme; {example}")
    parts = urllib.parse.urlsplit(text)
    try:
        port = parts.port  # urllib checks the port when it is read
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"{name}={redact_url(text)!r}: the port must be 1-65535")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name}={redact_url(text)!r} is not an http(s) URL with a host; {example}"
        )
    return text.rstrip("/")


def _headers(name: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ConfigError(f"{name}: header names and values must be strings (not shown)")
        return dict(value)
    if isinstance(value, str):
        # OpenTelemetry's own parser (URL-decoded values, as its exporters read them); it
        # would log a malformed entry verbatim, so those are refused here first.
        if any("=" not in p or not p.split("=", 1)[0].strip() for p in value.split(",")):
            raise ConfigError(f"{name}: expected 'key=value,key2=value2' (values not shown)")
        return dict(parse_env_headers(value, liberal=True))
    raise ConfigError(f"{name} must be a mapping of header names to values (not shown)")


def _resource(name: str, value: Any) -> dict[str, ResourceValue]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping such as {{'deployment.environment': 'prod'}}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or not isinstance(item, str | bool | int | float):
            raise ConfigError(
                f"{name}: {key!r} must be a non-empty string key with a str, bool, int or "
                "float value"
            )
    return {text(k): text(v) if isinstance(v, str) else v for k, v in value.items()}


def _keys(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}={value!r}: pass a list of key fragments such as ['ssn']")
    return DEFAULT_REDACT_KEYS + tuple(v.strip().lower() for v in value if v.strip())


@dataclass(frozen=True)
class _Setting:
    env: tuple[str, ...]
    parse: Callable[[str, Any], Any]


_SETTINGS: dict[str, _Setting] = {
    "service_name": _Setting(("GLMTRACE_SERVICE_NAME", "OTEL_SERVICE_NAME"), _name),
    "traces": _Setting(("GLMTRACE_TRACES",), _traces),
    "logs": _Setting(("GLMTRACE_LOGS",), _logs),
    "endpoint": _Setting(
        ("GLMTRACE_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        _endpoint,
    ),
    "protocol": _Setting(
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        _choice(get_args(OtlpProtocol)),
    ),
    "headers": _Setting(
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"), _headers
    ),
    "store": _Setting(("GLMTRACE_STORE",), lambda n, v: Path(_str(n, str(v)))),
    "sample_rate": _Setting(("GLMTRACE_SAMPLE_RATE",), _ratio),
    "max_attribute_length": _Setting(
        ("GLMTRACE_MAX_ATTRIBUTE_LENGTH",), _bounded(int, MAX_ATTRIBUTE_LENGTH)
    ),
    "redact_keys": _Setting(("GLMTRACE_REDACT_KEYS",), _keys),
    "log_level": _Setting(("GLMTRACE_LOG_LEVEL",), _level),
    "capture_logs": _Setting(("GLMTRACE_CAPTURE_LOGS",), _bool),
    "shutdown_timeout": _Setting(
        ("GLMTRACE_SHUTDOWN_TIMEOUT",), _bounded(float, MAX_SHUTDOWN_TIMEOUT)
    ),
    "spool_max_bytes": _Setting(("GLMTRACE_SPOOL_MAX_BYTES",), _bounded(int, MAX_SPOOL_BYTES)),
    "es_url": _Setting(("GLMTRACE_ES_URL",), _endpoint),
    "es_api_key": _Setting(("GLMTRACE_ES_API_KEY",), _secret),
    "es_username": _Setting(("GLMTRACE_ES_USERNAME",), _str),
    "es_password": _Setting(("GLMTRACE_ES_PASSWORD",), _secret),
    "es_ca_certs": _Setting(("GLMTRACE_ES_CA_CERTS",), _str),
    "es_verify_certs": _Setting(("GLMTRACE_ES_VERIFY_CERTS",), _bool),
    "fluent_host": _Setting(("GLMTRACE_FLUENT_HOST",), _str),
    "fluent_port": _Setting(("GLMTRACE_FLUENT_PORT",), _bounded(int, 65535)),
    # OTEL_RESOURCE_ATTRIBUTES is read by OpenTelemetry's Resource.create, under these.
    "resource_attributes": _Setting((), _resource),
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
        _check_sampler(env["OTEL_TRACES_SAMPLER"], env.get("OTEL_TRACES_SAMPLER_ARG"))
        sources["sample_rate"] = "OTEL_TRACES_SAMPLER"
    if sources["resource_attributes"] == "default" and env.get("OTEL_RESOURCE_ATTRIBUTES"):
        sources["resource_attributes"] = "OTEL_RESOURCE_ATTRIBUTES"
    options = _build(values, sources)
    if check_store and (options.traces == "local" or "local" in options.logs):
        name = sources["store"]
        check_store_path(options.store, "store" if name in ("argument", "default") else name)
    return options, sources


# What OpenTelemetry's SDK reads from OTEL_TRACES_SAMPLER when sample_rate is not set; it
# would only log a warning for another name or an unreadable ratio and sample everything.
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def _check_sampler(name: str, arg: str | None) -> None:
    if name.lower() not in SAMPLERS:  # as the SDK reads it: case-insensitive, not stripped
        raise ConfigError(f"OTEL_TRACES_SAMPLER={name!r} is not one of {', '.join(SAMPLERS)}")
    if name.lower().endswith("traceidratio") and arg:  # unset means 1.0 (the spec)
        _ratio("OTEL_TRACES_SAMPLER_ARG", arg)


_SQLITE_HEADER = b"SQLite format 3\0"


def check_store_path(path: Path, name: str = "store") -> None:
    """Refuse a store path SQLite cannot use, before any span is lost to it (creates nothing).

    ``name`` is the setting that chose the path, for the message.
    """
    shown = f"{name}={str(path)!r}"
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and existing != path and not existing.is_dir():
        raise ConfigError(f"{shown}: {existing} is not a directory")
    if existing != path:
        return  # the first traced write creates it
    if path.is_dir():
        raise ConfigError(f"{shown} is a directory; name a file such as {path / 'glmtrace.db'}")
    if not stat.S_ISREG(path.stat().st_mode):
        raise ConfigError(f"{shown} is not a regular file")
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise ConfigError(f"{shown} cannot be read: {exc.strerror}") from None
    if header and header != _SQLITE_HEADER:  # an empty file is an empty SQLite database
        raise ConfigError(f"{shown} is not a SQLite database (a glmtrace store)")


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
