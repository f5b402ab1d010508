"""``glmtrace stack`` refuses clearly, before starting anything (no backend runs in these tests)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from glmtrace._internal.cli.main import main
from glmtrace._internal.stack import local, paths
from glmtrace._internal.stack.paths import StackError
from glmtrace._internal.stack.procs import free_port


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_ports() -> dict[str, int]:
    return {name: free_port() for name in local.PORTS}


def test_up_refuses_a_taken_port_naming_it(tmp_path: Path, listening: int) -> None:
    ports = {**_free_ports(), "collector-grpc": listening}
    with pytest.raises(StackError, match=rf"collector-grpc \({listening}\).*--port NAME=PORT"):
        local.up(tmp_path, ports, print, allow_provision=False)
    assert not (tmp_path / "elasticsearch.pid").exists()


def test_up_refuses_without_a_jdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ES_JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(StackError, match=r"ES_JAVA_HOME=.*no-jdk has no bin/java"):
        local.up(tmp_path / "stack", _free_ports(), print, allow_provision=False)


def test_java_home_says_what_to_install_when_none_is_found(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"needs a JDK >= \d+ and none is under .*apt-get install"):
        paths.java_home(jvm_root=tmp_path)


def test_up_refuses_an_unknown_port_name(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"unknown port name.*'kibana'"):
        local.up(tmp_path, {"kibana": 5601}, print)


def test_cli_reports_a_refusal_as_one_line(tmp_path: Path, listening: int) -> None:
    ports = [f"--port={name}={port}" for name, port in _free_ports().items()]
    result = CliRunner().invoke(
        main,
        ["stack", "up", "--dir", str(tmp_path), *ports, f"--port=es-http={listening}"],
    )
    assert result.exit_code == 1
    assert f"es-http ({listening})" in result.output and "Traceback" not in result.output


def test_status_logs_and_down_without_a_stack(tmp_path: Path) -> None:
    runner = CliRunner()
    for command in ("status", "logs"):
        result = runner.invoke(main, ["stack", command, "--dir", str(tmp_path)])
        assert result.exit_code == 1 and "run: glmtrace stack up" in result.output
    assert runner.invoke(main, ["stack", "down", "--dir", str(tmp_path)]).output == (
        "nothing was running\n"
    )


def test_provision_hands_each_line_to_the_progress_display_and_reports_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """provision() runs the checkout's scripts/provision.sh (here a stand-in that fails)."""
    (tmp_path / "exporters").mkdir()
    (tmp_path / "exporters" / "versions.env").write_text("ES_JAVA_MIN=21\n")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "provision.sh").write_text(
        'echo "building $2"; echo "go: downloading x" >&2; echo "FAILED otelcol"; exit 1\n'
    )
    monkeypatch.setenv("GLMTRACE_SOURCE", str(tmp_path))
    seen: list[str] = []
    with pytest.raises(StackError, match=r"(?s)provisioning failed .*FAILED otelcol"):
        paths.provision(["jaeger", "otelcol"], seen.append)
    assert seen == ["building jaeger,otelcol", "go: downloading x", "FAILED otelcol"]
