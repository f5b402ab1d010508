"""Settings outside what glmtrace can use fail in resolve() with a ConfigError naming them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.config import resolve
from glmtrace._internal.errors import ConfigError
from glmtrace._internal.store.database import Store


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("shutdown_timeout", float("inf")),
        ("shutdown_timeout", float("nan")),
        ("shutdown_timeout", 1e12),
        ("max_attribute_length", float("inf")),
        ("spool_max_bytes", 10**30),
        ("fluent_port", 70000),
        ("fluent_port", 0),
    ],
)
def test_numbers_must_be_finite_and_bounded(argument: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=argument):
        resolve({argument: value}, {})


def test_env_numbers_must_be_bounded() -> None:
    with pytest.raises(ConfigError, match="GLMTRACE_SHUTDOWN_TIMEOUT"):
        resolve({}, {"GLMTRACE_SHUTDOWN_TIMEOUT": "1e12"})
    with pytest.raises(ConfigError, match="GLMTRACE_FLUENT_PORT"):
        resolve({}, {"GLMTRACE_FLUENT_PORT": "70000"})
    assert resolve({"shutdown_timeout": 3600}, {})[0].shutdown_timeout == 3600


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://127.0.0.1:abc",
        "ftp://127.0.0.1:4317",
        "http://:4317",
    ],
)
def test_endpoint_urls_are_checked(url: str) -> None:
    with pytest.raises(ConfigError, match="endpoint"):
        resolve({"endpoint": url}, {})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        resolve({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": url})


def test_endpoint_port_error_hides_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve({"endpoint": "http://u:SECRET@127.0.0.1:99999"}, {})
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "foo"}, "OTEL_TRACES_SAMPLER='foo'"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "abc"},
            "OTEL_TRACES_SAMPLER_ARG='abc'",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG='2'",
        ),
    ],
)
def test_bad_otel_sampler_is_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve({}, env)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    "name",
    [
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ],
)
def test_standard_samplers_are_accepted(name: str) -> None:
    _, sources = resolve({}, {"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert sources["sample_rate"] == "OTEL_TRACES_SAMPLER"


def test_store_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"store=.*is a directory"):
        resolve({"store": str(tmp_path)}, {})
    with pytest.raises(ConfigError, match="GLMTRACE_STORE"):
        resolve({}, {"GLMTRACE_STORE": str(tmp_path)})


def test_store_that_is_not_a_regular_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        resolve({"store": "/dev/null"}, {})


def test_store_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    with pytest.raises(ConfigError, match="not a SQLite database"):
        resolve({"store": str(text)}, {})
    with pytest.raises(ConfigError, match="not a directory"):
        resolve({"store": str(text / "glmtrace.db")}, {})


def test_usable_stores_are_accepted_and_nothing_is_created(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()  # SQLite opens a zero-byte file as an empty database
    with sqlite3.connect(tmp_path / "real.db") as conn:
        conn.execute("CREATE TABLE t (x)")
    for name in ("empty.db", "real.db", "missing/sub/new.db"):
        resolve({"store": str(tmp_path / name)}, {})
    assert not (tmp_path / "missing").exists()


def test_store_is_not_checked_when_unused(tmp_path: Path) -> None:
    options, _ = resolve({"store": str(tmp_path), "traces": "none", "logs": "none"}, {})
    assert options.store == tmp_path


def test_service_name_and_resource_text_are_repaired() -> None:
    options, _ = resolve(
        {"service_name": "svc\ud800", "resource_attributes": {"team\udc00": "x\udfff"}}, {}
    )
    assert options.service_name == "svc\ufffd"
    assert dict(options.resource_attributes) == {"team\ufffd": "x\ufffd"}


def test_record_run_repairs_the_service_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    store.record_run("svc\ud800", {})
    assert store.recent_runs(1)[0][2] == "svc\ufffd"
