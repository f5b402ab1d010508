"""Backend processes: started in their own session, stopped by process group, found by pid.

A :class:`Service` may be a child of this process (``popen`` set) or one a previous
``glmtrace stack up`` left running (only its pid, from a pid file): both stop the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .paths import StackError


@dataclass
class Service:
    """One backend process and its log; ``marker`` is in its command line (pid reuse check)."""

    name: str
    pid: int
    log: Path
    marker: str
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return self.marker.encode() in cmdline

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left of it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        # the group may outlive its leader (Elasticsearch's launcher starts the server JVM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    env: dict[str, str],
    cwd: Path,
    user: str | None = None,
) -> Service:
    """Start ``argv`` in a new session (it outlives this process) with its output in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    return Service(name, popen.pid, log, Path(argv[0]).name, popen)


def wait_until(service: Service, what: str, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready`` until true; StackError with the log tail if the process dies or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            code = service.popen.poll() if service.popen else None
            raise StackError(
                f"{service.name} exited (status {code}) before {what}; log {service.log}:\n"
                f"{service.tail()}"
            )
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        time.sleep(0.25)
    service.stop()
    raise StackError(
        f"{service.name}: no {what} within {timeout:.0f}s; log {service.log}:\n{service.tail()}"
    )


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus GLMTRACE_* / OTEL_* (they must not leak into a backend)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLMTRACE_", "OTEL_"))}
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_taken(port: int) -> bool:
    """True when 127.0.0.1:``port`` cannot be bound (something listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def port_open(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=1):
        return True


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def http(
    method: str,
    url: str,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = 10,
) -> Response:
    """One HTTP request; any status comes back as a Response (no exception for 4xx/5xx)."""
    data: bytes | None
    if body is None or isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return Response(reply.status, reply.read())
    except urllib.error.HTTPError as err:
        with err:
            return Response(err.code, err.read())
