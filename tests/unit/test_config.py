"""init() configuration: precedence, clear errors, safe re-init."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import glmtrace
from glmtrace._internal.config import resolve
from glmtrace._internal.store.database import Store


def test_argument_beats_glmtrace_env_beats_otel_env() -> None:
    """Explicit argument > GLMTRACE_* > OTEL_* > default."""
    env = {"GLMTRACE_SERVICE_NAME": "from-glmtrace", "OTEL_SERVICE_NAME": "from-otel"}
    options, sources = resolve({"service_name": "from-arg"}, env)
    assert (options.service_name, sources["service_name"]) == ("from-arg", "argument")
    options, sources = resolve({}, env)
    assert (options.service_name, sources["service_name"]) == (
        "from-glmtrace",
        "GLMTRACE_SERVICE_NAME",
    )
    options, sources = resolve({}, {"OTEL_SERVICE_NAME": "from-otel"})
    assert (options.service_name, sources["service_name"]) == ("from-otel", "OTEL_SERVICE_NAME")
    options, sources = resolve({}, {})
    assert sources["service_name"] == "default"


def test_no_endpoint_means_local_store() -> None:
    """Without an endpoint, traces and logs go to the local store."""
    options, _ = resolve({}, {})
    assert options.traces == "local"
    assert options.logs == ("local",)
    assert options.store == Path(".glmtrace/glmtrace.db")


def test_otel_endpoint_switches_to_otlp() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT turns on OTLP export; port 4318 implies HTTP."""
    options, _ = resolve({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert (options.traces, options.endpoint, options.protocol) == (
        "otlp",
        "http://collector:4318",
        "http/protobuf",
    )
    assert options.logs == ("none",)


def test_store_from_env() -> None:
    """GLMTRACE_STORE moves the local store."""
    options, _ = resolve({}, {"GLMTRACE_STORE": "/tmp/x.db"})
    assert options.store == Path("/tmp/x.db")


@pytest.mark.parametrize(
    ("argument", "value", "fragment"),
    [
        ("traces", "jaeger", "'jaeger' is not one of"),
        ("sample_rate", 1.5, "between 0 and 1"),
        ("endpoint", "localhost:4317", "has no scheme"),
        ("shutdown_timeout", -1, "positive"),
        ("log_level", "LOUD", "not a logging level"),
        ("logs", "elasticsearch", "no es_url"),
    ],
)
def test_bad_argument_raises_config_error_naming_it(
    argument: str, value: object, fragment: str
) -> None:
    """A bad argument raises ConfigError naming the argument and the problem."""
    with pytest.raises(glmtrace.ConfigError) as info:
        glmtrace.init(**{argument: value})  # type: ignore[arg-type]
    assert argument in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("GLMTRACE_SAMPLE_RATE", "abc"), ("GLMTRACE_TRACES", "jaeger"), ("GLMTRACE_LOGS", "kafka")],
)
def test_bad_env_value_raises_config_error_naming_it(variable: str, value: str) -> None:
    """A bad environment value raises ConfigError naming the variable and the value."""
    with pytest.raises(glmtrace.ConfigError) as info:
        resolve({}, {variable: value})
    assert variable in str(info.value)
    assert repr(value) in str(info.value)


def test_otlp_headers_from_env_are_url_decoded() -> None:
    """OTEL_EXPORTER_OTLP_HEADERS is parsed as OpenTelemetry does: values URL-decoded."""
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20dXNlcjpwdw==,x-team=ml%2Cai"}
    options, sources = resolve({}, env)
    assert dict(options.headers) == {"authorization": "Basic dXNlcjpwdw==", "x-team": "ml,ai"}
    assert sources["headers"] == "OTEL_EXPORTER_OTLP_HEADERS"


@pytest.mark.parametrize(
    ("arguments", "env"),
    [
        ({"es_api_key": ("key-id", "s3cr3t-value")}, {}),
        ({"es_password": b"s3cr3t-value"}, {}),
        ({"headers": {"authorization": b"s3cr3t-value"}}, {}),
        ({}, {"OTEL_EXPORTER_OTLP_HEADERS": "s3cr3t-value"}),
    ],
)
def test_config_errors_never_echo_secrets(arguments: dict[str, Any], env: dict[str, str]) -> None:
    """A malformed secret is refused by name; its value is never part of the message."""
    with pytest.raises(glmtrace.ConfigError) as info:
        resolve({"es_url": "http://es:9200", **arguments}, env)
    assert "s3cr3t" not in str(info.value)
    assert "not shown" in str(info.value)


def test_options_repr_hides_url_passwords() -> None:
    """repr() of the Options init() returns shows no password from a URL."""
    options, _ = resolve(
        {"endpoint": "https://otel:pw-one@collector:4318", "es_url": "https://elastic:pw-two@es"},
        {},
    )
    text = repr(options)
    assert "pw-one" not in text and "pw-two" not in text
    assert "https://otel:***@collector:4318" in text and "https://elastic:***@es" in text


def test_init_twice_is_safe(tmp_path: Path) -> None:
    """A second identical init() is a no-op; a different one restarts and keeps tracing."""
    try:
        first = glmtrace.init(service_name="a", store=tmp_path / "a.db")
        assert glmtrace.init(service_name="a", store=tmp_path / "a.db") == first
        glmtrace.init(service_name="b", store=tmp_path / "b.db")
        with glmtrace.span("after re-init") as span:
            pass
        glmtrace.force_flush()
        assert span.trace_id is not None  # a no-op span has none
        stored = Store(tmp_path / "b.db").spans(span.trace_id)
        assert [(s["name"], s["service_name"]) for s in stored] == [("after re-init", "b")]
    finally:
        glmtrace.shutdown()


def test_urls_lose_their_passwords_in_messages() -> None:
    """redact_url hides the password of user:password@ URLs and leaves others alone."""
    from glmtrace._internal.config import redact_url

    assert redact_url("https://elastic:s3cret@es:9200/x") == "https://elastic:***@es:9200/x"
    assert redact_url("http://127.0.0.1:4317") == "http://127.0.0.1:4317"
    with pytest.raises(glmtrace.ConfigError) as info:
        glmtrace.init(es_url="elastic:s3cret@es:9200", logs="elasticsearch")
    assert "s3cret" not in str(info.value)
