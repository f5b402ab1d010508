"""The parsers behind every setting: each turns an argument or an environment string into the
setting's value, or raises :class:`ConfigError` naming the setting and the bad value.

``config.py`` declares which parser each setting uses; this module holds what they accept.
"""

from __future__ import annotations

import logging
import re
import stat
import urllib.parse
from collections.abc import Callable, Mapping
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


_URL_PASSWORD = re.compile(r"^((?:[a-zA-Z][a-zA-Z0-9+.-]*://)?[^:@/\s]*):[^@/\s]*@")


def redact_url(url: str) -> str:
    """``url`` without the password of its ``user:password@`` part (with or without scheme)."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


# Upper bounds (README, configuration): past these a value is a typo, and some (an infinite
# shutdown timeout) would fail later inside the SDK, in the user's program.
MAX_SHUTDOWN_TIMEOUT = 3600.0
MAX_ATTRIBUTE_LENGTH = 16 * 1024 * 1024
MAX_SPOOL_BYTES = 1024**4


def string(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}={value!r} is not a non-empty string; pass e.g. {name}='my-app'")
    return value.strip()


def service_name(name: str, value: Any) -> str:
    # Repaired here (lone surrogates, e.g. undecodable bytes in the environment, as U+FFFD)
    # so the resource, the store and every shipped document carry the same text.
    return text(string(name, value))


def secret(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string (the value is not shown)")
    return value.strip()


def choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        if value not in options:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, options))}")
        return str(value)

    return parse


def logs(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{name}={value!r}: pass a sink name or a list of them")
    allowed = (*get_args(LogsSink), *plugins.names(plugins.LOG_SINKS))
    for v in value:
        choice(allowed)(name, v)
    if not _from_environment(name):
        plugins.check(plugins.LOG_SINKS, value)
    sinks = tuple(dict.fromkeys(value))
    return ("none",) if "none" in sinks else sinks


def traces(name: str, value: Any) -> str:
    sink = choice((*get_args(TracesSink), *plugins.names(plugins.SPAN_EXPORTERS)))(name, value)
    if not _from_environment(name):
        plugins.check(plugins.SPAN_EXPORTERS, [sink])
    return sink


def _from_environment(name: str) -> bool:
    # A plugin named in the environment that cannot load is warned about when the runtime
    # starts it, and the program runs on without it; named in an argument, init() refuses it.
    return name.isupper()


def bounded(kind: type[int] | type[float], maximum: float) -> Callable[[str, Any], Any]:
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


def ratio(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} is not a number between 0 and 1") from None
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ConfigError(f"{name}={value!r} must be between 0 and 1, e.g. {name}=0.1")
    return number


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use true or false")


def level(name: str, value: Any) -> str:
    text = str(value).upper()
    if not isinstance(logging.getLevelName(text), int):
        raise ConfigError(f"{name}={value!r} is not a logging level such as 'INFO' or 'DEBUG'")
    return text


def endpoint(name: str, value: Any) -> str:
    text = string(name, value)
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


def headers(name: str, value: Any) -> dict[str, str]:
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


def resource(name: str, value: Any) -> dict[str, ResourceValue]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping such as {{'deployment.environment': 'prod'}}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or not isinstance(item, str | bool | int | float):
            raise ConfigError(
                f"{name}: {key!r} must be a non-empty string key with a str, bool, int or "
                "float value"
            )
    return {text(k): text(v) if isinstance(v, str) else v for k, v in value.items()}


def keys(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}={value!r}: pass a list of key fragments such as ['ssn']")
    return DEFAULT_REDACT_KEYS + tuple(v.strip().lower() for v in value if v.strip())


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


def check_sampler(name: str, arg: str | None) -> None:
    if name.lower() not in SAMPLERS:  # as the SDK reads it: case-insensitive, not stripped
        raise ConfigError(f"OTEL_TRACES_SAMPLER={name!r} is not one of {', '.join(SAMPLERS)}")
    if name.lower().endswith("traceidratio") and arg:  # unset means 1.0 (the spec)
        ratio("OTEL_TRACES_SAMPLER_ARG", arg)


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
