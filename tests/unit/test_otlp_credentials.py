"""A ``user:password@`` in the OTLP endpoint is sent as a header, never printed."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glmtrace._internal.config import resolve
from glmtrace._internal.export.exporters import otlp_exporter, without_credentials

BASIC = "Basic " + base64.b64encode(b"u:SECRET4").decode()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exporter_url_holds_no_password(protocol: str) -> None:
    options, _ = resolve(
        {"endpoint": "http://u:SECRET4@127.0.0.1:4317", "protocol": protocol, "traces": "otlp"},
        {},
    )
    exporter = otlp_exporter(options)
    endpoint = exporter._endpoint  # type: ignore[attr-defined]
    assert "SECRET4" not in endpoint and "u@" not in endpoint
    assert "127.0.0.1:4317" in endpoint
    if protocol == "grpc":
        assert ("authorization", BASIC) in exporter._headers  # type: ignore[attr-defined]


def test_credentials_become_a_basic_header_unless_one_is_set() -> None:
    url, headers = without_credentials("https://u:SECRET4@collector:4318/v1/traces", {"x": "1"})
    assert url == "https://collector:4318/v1/traces"
    assert headers == {"x": "1", "authorization": BASIC}
    url, headers = without_credentials("http://u:p%40ss@h:1", {"Authorization": "Bearer t"})
    assert (url, headers) == ("http://h:1", {"Authorization": "Bearer t"})
    _, headers = without_credentials("http://u:p%40ss@h:1", {})
    assert headers["authorization"] == "Basic " + base64.b64encode(b"u:p@ss").decode()
    assert without_credentials("http://h:1", {}) == ("http://h:1", {})


def test_no_password_on_stderr_when_the_collector_is_down(tmp_path: Path) -> None:
    script = (
        "import glmtrace\n"
        "glmtrace.init(service_name='sec', shutdown_timeout=1)\n"
        "with glmtrace.span('x'):\n"
        "    pass\n"
        "glmtrace.shutdown()\n"
    )
    # OpenTelemetry's Python exporter is the one that prints its endpoint (in retry messages);
    # the native path, which would take this plain-text gRPC endpoint, prints none.
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://u:SECRET4@127.0.0.1:1",
        "GLMTRACE_NATIVE": "0",
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert "127.0.0.1:1" in out.stderr  # the exporter did report the refused connection
    assert "SECRET4" not in out.stderr + out.stdout
