"""The real backends the integration tests talk to: Jaeger v2, Elasticsearch, an OTel Collector.

Each ``start_*`` context manager runs the binary that ``scripts/provision.sh`` built (pinned in
``exporters/versions.env``) with the very config files ``docker-compose.yml`` mounts, on free
loopback ports, with fresh data and logs, waits until it answers, yields a small handle, and stops
it after (SIGTERM to its process group, then SIGKILL). Only the standard library is used.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPORTERS = REPO / "exporters"
JAEGER_CONFIG = EXPORTERS / "jaeger" / "config.yaml"
JAEGER_STORAGE_MEMORY = EXPORTERS / "jaeger" / "storage-memory.yaml"
JAEGER_STORAGE_ES = EXPORTERS / "jaeger" / "storage-elasticsearch.yaml"
COLLECTOR_CONFIG = EXPORTERS / "collector" / "config.yaml"
INDEX_TEMPLATE = EXPORTERS / "elasticsearch" / "index-template.json"
INDEX_TEMPLATE_NAME = "glmtrace-logs"
LOGS_DATA_STREAM = "logs-glmtrace-default"
ES_USER = "glmtrace-es"
PROVISION = "bash scripts/provision.sh"
STARTUP_TIMEOUT = float(os.environ.get("GLMTRACE_BACKEND_STARTUP_TIMEOUT", "180"))

_SPAN_KINDS = {
    0: "UNSPECIFIED",
    1: "INTERNAL",
    2: "SERVER",
    3: "CLIENT",
    4: "PRODUCER",
    5: "CONSUMER",
}
_STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


# --- where things are ----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """The pins in exporters/versions.env (KEY=VALUE lines)."""
    pins: dict[str, str] = {}
    for line in (EXPORTERS / "versions.env").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip()
    return pins


def backends_dir() -> Path:
    """The provisioning cache; the same rule as scripts/lib.sh."""
    if os.environ.get("GLMTRACE_BACKENDS"):
        return Path(os.environ["GLMTRACE_BACKENDS"])
    if os.geteuid() == 0:
        return Path("/opt/glmtrace-backends")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "glmtrace" / "backends"


def jaeger_binary() -> Path:
    return backends_dir() / f"jaeger-{versions()['JAEGER_MODULE_VERSION']}" / "bin" / "jaeger"


def collector_binary() -> Path:
    return backends_dir() / f"otelcol-{versions()['OTELCOL_VERSION']}" / "bin" / "otelcol-glmtrace"


def elasticsearch_home() -> Path:
    return backends_dir() / f"elasticsearch-{versions()['ES_VERSION']}"


def composego_binary() -> Path:
    return (
        backends_dir() / f"compose-go-{versions()['COMPOSE_GO_VERSION']}" / "bin" / "compose-spec"
    )


def require(path: Path, what: str) -> Path:
    """``path``, or a test failure naming the command that provisions it (never a skip).

    ``path`` is a binary under ``<component>/bin/`` or a component directory; either way the
    component must carry provision.sh's ``.complete`` stamp (a half-finished build does not count).
    """
    component = path if path.is_dir() else path.parent.parent
    if not path.exists() or not (component / ".complete").exists():
        pytest.fail(f"{what} is not provisioned (expected {path}); run: {PROVISION}", pytrace=False)
    return path


def es_java_home() -> str:
    """A JDK new enough for the pinned Elasticsearch ($ES_JAVA_HOME, else /usr/lib/jvm/*)."""
    if os.environ.get("ES_JAVA_HOME"):
        return os.environ["ES_JAVA_HOME"]
    want = int(versions()["ES_JAVA_MIN"])
    for home in sorted(Path("/usr/lib/jvm").glob("*")):
        release = home / "release"
        if not (home / "bin" / "java").exists() or not release.exists():
            continue
        for line in release.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("JAVA_VERSION="):
                major = line.split("=", 1)[1].strip('"').split(".")[0]
                if major.isdigit() and int(major) >= want:
                    return str(home)
    pytest.fail(
        f"no JDK >= {want} under /usr/lib/jvm for Elasticsearch; set ES_JAVA_HOME", pytrace=False
    )


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment minus GLMTRACE_* / OTEL_* (they must not leak into a backend)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLMTRACE_", "OTEL_"))}
    env.update(extra)
    return env


@dataclass
class Process:
    """A backend process in its own session, with its output in ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL whatever is left."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # the group may outlive its leader (Elasticsearch's CLI launches the server JVM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    env: dict[str, str],
    cwd: Path,
    user: str | None = None,
) -> Process:
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
    return Process(name, popen, log)


def wait_until(
    proc: Process, what: str, ready: Callable[[], bool], timeout: float = STARTUP_TIMEOUT
) -> None:
    """Poll ``ready`` until true; fail with the log tail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            pytest.fail(
                f"{proc.name} exited with {proc.popen.returncode} before {what}; log {proc.log}:\n"
                f"{proc.tail()}",
                pytrace=False,
            )
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        time.sleep(0.25)
    proc.stop()
    pytest.fail(
        f"{proc.name}: no {what} within {timeout:.0f}s; log {proc.log}:\n{proc.tail()}",
        pytrace=False,
    )


def port_open(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=1):
        return True


# --- HTTP ----------------------------------------------------------------------------------------


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


# --- Jaeger --------------------------------------------------------------------------------------


@dataclass
class Jaeger:
    """A running Jaeger v2 (memory storage); addresses as OTLP exporters and clients want them."""

    otlp_grpc: str  # "127.0.0.1:PORT"
    otlp_http: str  # "http://127.0.0.1:PORT"
    query_url: str  # "http://127.0.0.1:PORT" (api/v3 and legacy /api)
    health_url: str
    process: Process = field(repr=False)

    def trace(
        self, trace_id: str | int, min_spans: int = 1, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """The spans of ``trace_id`` as Jaeger returns them, once ``min_spans`` are there."""
        tid = trace_id if isinstance(trace_id, str) else f"{trace_id:032x}"
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        last = ""
        while True:
            reply = http("GET", f"{self.query_url}/api/v3/traces/{tid}")
            if reply.status == 200:
                spans = otlp_json_spans(reply.json())
                if len(spans) >= min_spans:
                    return spans
            last = f"HTTP {reply.status}: {reply.body[:300]!r}"
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"Jaeger has {len(spans)} span(s) of trace {tid} after {timeout}s, "
                    f"wanted {min_spans}; "
                    f"last reply {last}"
                )
            time.sleep(0.3)

    def services(self) -> list[str]:
        return list(http("GET", f"{self.query_url}/api/v3/services").json().get("services") or [])


def _hex_id(value: str | None) -> str | None:
    """OTLP JSON ids: Jaeger's api/v3 writes hex; plain protobuf JSON would be base64."""
    if not value:
        return None
    if len(value) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return base64.b64decode(value).hex()


def any_value(value: dict[str, Any]) -> Any:
    """Decode an OTLP JSON AnyValue into a plain Python value."""
    if not value:
        return None
    ((kind, inner),) = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "arrayValue":
        return [any_value(v) for v in inner.get("values", [])]
    if kind == "kvlistValue":
        return attributes(inner.get("values", []))
    if kind == "bytesValue":
        return base64.b64decode(inner)
    return inner  # stringValue, boolValue


def attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: any_value(item.get("value", {})) for item in items or []}


def otlp_json_spans(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten an api/v3 ``{"result": {"resourceSpans": [...]}}`` reply into plain span dicts."""
    spans = []
    for resource_spans in (payload.get("result") or payload).get("resourceSpans", []):
        resource = attributes(resource_spans.get("resource", {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = scope_spans.get("scope", {}).get("name")
            for span in scope_spans.get("spans", []):
                status = span.get("status", {})
                spans.append(
                    {
                        "trace_id": _hex_id(span.get("traceId")),
                        "span_id": _hex_id(span.get("spanId")),
                        "parent_span_id": _hex_id(span.get("parentSpanId")),
                        "name": span.get("name"),
                        "service_name": resource.get("service.name"),
                        "attributes": attributes(span.get("attributes")),
                        "status_code": _STATUS_CODES.get(
                            int(status.get("code", 0)), str(status.get("code"))
                        ),
                        "status_message": status.get("message"),
                        "events": [
                            {"name": e.get("name"), "attributes": attributes(e.get("attributes"))}
                            for e in span.get("events", [])
                        ],
                        "kind": _SPAN_KINDS.get(int(span.get("kind", 0)), str(span.get("kind"))),
                        "start_ns": int(span.get("startTimeUnixNano", 0)),
                        "end_ns": int(span.get("endTimeUnixNano", 0)),
                        "links": [
                            {
                                "trace_id": _hex_id(link.get("traceId")),
                                "span_id": _hex_id(link.get("spanId")),
                                "attributes": attributes(link.get("attributes")),
                            }
                            for link in span.get("links", [])
                        ],
                        "resource": resource,
                        "scope": scope,
                    }
                )
    spans.sort(key=lambda s: (s["start_ns"], s["span_id"] or ""))
    return spans


@contextlib.contextmanager
def start_jaeger(workdir: Path, elasticsearch: Elasticsearch | None = None) -> Iterator[Jaeger]:
    """Jaeger on memory storage, or with ``elasticsearch`` on compose's ES storage file."""
    binary = require(jaeger_binary(), "Jaeger")
    ports = {name: free_port() for name in ("grpc", "http", "query", "query_grpc", "health")}
    env = clean_env(
        GLMTRACE_JAEGER_LISTEN_OTLP_GRPC=f"127.0.0.1:{ports['grpc']}",
        GLMTRACE_JAEGER_LISTEN_OTLP_HTTP=f"127.0.0.1:{ports['http']}",
        GLMTRACE_JAEGER_LISTEN_QUERY_HTTP=f"127.0.0.1:{ports['query']}",
        GLMTRACE_JAEGER_LISTEN_QUERY_GRPC=f"127.0.0.1:{ports['query_grpc']}",
        GLMTRACE_JAEGER_LISTEN_HEALTH=f"127.0.0.1:{ports['health']}",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [str(binary), "--config", str(JAEGER_CONFIG)]
    if elasticsearch is None:
        argv += ["--config", str(JAEGER_STORAGE_MEMORY)]
    else:
        env["GLMTRACE_JAEGER_ES_URL"] = elasticsearch.url
        es = "extensions::jaeger_storage::backends::main::elasticsearch"
        argv += [
            "--config",
            str(JAEGER_STORAGE_ES),
            # The integ-test-zip answers neither `GET /` (version sniffing) nor `HEAD /` (the
            # client's health check); the full Elasticsearch image compose runs does both.
            f"--set={es}::version={elasticsearch.version.split('.')[0]}",
            f"--set={es}::disable_health_check=true",
        ]
    proc = spawn("jaeger", argv, workdir / "jaeger.log", env, workdir)
    handle = Jaeger(
        otlp_grpc=f"127.0.0.1:{ports['grpc']}",
        otlp_http=f"http://127.0.0.1:{ports['http']}",
        query_url=f"http://127.0.0.1:{ports['query']}",
        health_url=f"http://127.0.0.1:{ports['health']}/status",
        process=proc,
    )
    try:
        wait_until(
            proc,
            "healthy query API and OTLP ports",
            lambda: (
                http("GET", handle.health_url).status == 200
                and http("GET", f"{handle.query_url}/api/services").status == 200
                and port_open(handle.otlp_grpc)
                and port_open(handle.otlp_http.removeprefix("http://"))
            ),
        )
        yield handle
    finally:
        proc.stop()


# --- Elasticsearch -------------------------------------------------------------------------------


@dataclass
class Elasticsearch:
    """A running single-node Elasticsearch (security off, fresh data dir)."""

    url: str  # "http://127.0.0.1:PORT"
    version: str
    modules: list[str]
    process: Process = field(repr=False)

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Response:
        return http(method, f"{self.url}/{path.lstrip('/')}", body, content_type)

    def ok(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """The JSON reply of a request that must succeed."""
        reply = self.request(method, path, body, content_type)
        assert 200 <= reply.status < 300, (
            f"{method} {path} -> {reply.status}: {reply.body[:1000]!r}"
        )
        return reply.json()

    def put_index_template(self) -> None:
        """PUT exporters/elasticsearch/index-template.json as _index_template/glmtrace-logs."""
        self.ok("PUT", f"_index_template/{INDEX_TEMPLATE_NAME}", INDEX_TEMPLATE.read_bytes())

    def bulk(self, index: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
        """``_bulk`` ``create`` actions (what a data stream takes); fails on any item error."""
        lines = []
        for doc in docs:
            lines += [json.dumps({"create": {}}), json.dumps(doc)]
        reply = self.ok(
            "POST", f"{index}/_bulk?refresh=true", "\n".join(lines) + "\n", "application/x-ndjson"
        )
        assert not reply["errors"], reply
        return cast(dict[str, Any], reply)

    def search(
        self,
        index_pattern: str,
        query: dict[str, Any],
        min_hits: int = 1,
        timeout: float = 60,
        size: int = 100,
    ) -> list[dict[str, Any]]:
        """The ``_source`` of matching documents, polling (refresh, search) until ``min_hits``."""
        deadline = time.monotonic() + timeout
        hits: list[dict[str, Any]] = []
        while True:
            self.request(
                "POST", f"{index_pattern}/_refresh?ignore_unavailable=true&allow_no_indices=true"
            )
            reply = self.request(
                "POST",
                f"{index_pattern}/_search?ignore_unavailable=true&allow_no_indices=true",
                {
                    "query": query,
                    "size": size,
                    "sort": [{"@timestamp": {"order": "asc", "unmapped_type": "date"}}],
                },
            )
            if reply.status == 200:
                hits = [hit["_source"] for hit in reply.json()["hits"]["hits"]]
                if len(hits) >= min_hits:
                    return hits
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{len(hits)} hit(s) in {index_pattern} for {query} after {timeout}s, "
                    f"wanted {min_hits}; "
                    f"last reply HTTP {reply.status}: {reply.body[:500]!r}"
                )
            time.sleep(0.5)

    def count(self, index_pattern: str, query: dict[str, Any] | None = None) -> int:
        self.request(
            "POST", f"{index_pattern}/_refresh?ignore_unavailable=true&allow_no_indices=true"
        )
        body = {"query": query} if query else None
        reply = self.request(
            "POST", f"{index_pattern}/_count?ignore_unavailable=true&allow_no_indices=true", body
        )
        return int(reply.json()["count"]) if reply.status == 200 else 0


@contextlib.contextmanager
def start_elasticsearch(workdir: Path) -> Iterator[Elasticsearch]:
    home = require(elasticsearch_home(), "Elasticsearch")
    user = None
    if os.geteuid() == 0:
        # Elasticsearch refuses to run as root; provision.sh creates this system user. Its data
        # must sit where that user can reach, and pytest's tmp (mode 700, root) is not: so the
        # node's dir goes under the cache's run/ and pytest's tmp gets a symlink to it.
        try:
            pwd.getpwnam(ES_USER)
        except KeyError:
            pytest.fail(f"system user {ES_USER} is missing; run: {PROVISION}", pytrace=False)
        user = ES_USER
        run_root = backends_dir() / "run"
        run_root.mkdir(parents=True, exist_ok=True)
        rundir = Path(
            subprocess.check_output(["mktemp", "-d", f"{run_root}/es-XXXXXX"], text=True).strip()
        )
        workdir.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            workdir.symlink_to(rundir, target_is_directory=True)
    else:
        rundir = workdir
        rundir.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "logs", "tmp"):
        (rundir / sub).mkdir(exist_ok=True)
    shutil.copytree(home / "config", rundir / "config")  # the keystore is written here
    if user:
        for path in [rundir, *rundir.rglob("*")]:
            os.chown(
                path, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid, follow_symlinks=False
            )

    http_port, transport_port = free_port(), free_port()
    modules = sorted(p.name for p in (home / "modules").iterdir())
    settings = {
        "cluster.name": "glmtrace-test",
        "node.name": "es1",
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "path.data": str(rundir / "data"),
        "path.logs": str(rundir / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.destructive_requires_name": "false",
    }
    if "x-pack-security" in modules:  # an unknown setting would abort start-up
        settings["xpack.security.enabled"] = "false"
    argv = [str(home / "bin" / "elasticsearch"), *[f"-E{k}={v}" for k, v in settings.items()]]
    env = clean_env(
        ES_JAVA_HOME=es_java_home(),
        ES_PATH_CONF=str(rundir / "config"),
        ES_TMPDIR=str(rundir / "tmp"),
        ES_JAVA_OPTS="-Xms512m -Xmx512m",
    )
    env.pop("JAVA_HOME", None)  # ES warns about it and ignores it
    proc = spawn(
        "elasticsearch", argv, workdir.parent / f"{workdir.name}.stdout.log", env, rundir, user
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(
            proc,
            "yellow cluster health",
            lambda: (
                http("GET", f"{url}/_cluster/health?wait_for_status=yellow&timeout=1s").status
                == 200
            ),
        )
        # The integ-test-zip has no `GET /` (405); the node info has the version.
        nodes = http("GET", f"{url}/_nodes/_local?filter_path=nodes.*.version").json()["nodes"]
        version = next(iter(nodes.values()))["version"]
        yield Elasticsearch(url=url, version=version, modules=modules, process=proc)
    finally:
        proc.stop()
        if user:
            shutil.rmtree(rundir, ignore_errors=True)


# --- Collector -----------------------------------------------------------------------------------


@dataclass
class Collector:
    """A running OpenTelemetry Collector: OTLP + Fluent forward in, traces to Jaeger, logs to ES."""

    otlp_grpc: str  # "127.0.0.1:PORT"
    otlp_http: str  # "http://127.0.0.1:PORT"
    fluent_host: str
    fluent_port: int
    process: Process = field(repr=False)


def validate_collector_config(config: Path = COLLECTOR_CONFIG) -> subprocess.CompletedProcess[str]:
    """``otelcol-glmtrace validate --config CONFIG`` with the compose defaults (no env set)."""
    binary = require(collector_binary(), "the OpenTelemetry Collector")
    return subprocess.run(
        [str(binary), "validate", f"--config={config}"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def start_collector(
    workdir: Path, jaeger: Jaeger, elasticsearch: Elasticsearch
) -> Iterator[Collector]:
    binary = require(collector_binary(), "the OpenTelemetry Collector")
    # Like compose's es-init container: the ECS exporter writes with require_data_stream, so the
    # data stream's template must exist before the first log arrives.
    elasticsearch.put_index_template()
    grpc, http_port, fluent = free_port(), free_port(), free_port()
    env = clean_env(
        GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC=f"127.0.0.1:{grpc}",
        GLMTRACE_COLLECTOR_LISTEN_OTLP_HTTP=f"127.0.0.1:{http_port}",
        GLMTRACE_COLLECTOR_LISTEN_FLUENT=f"127.0.0.1:{fluent}",
        GLMTRACE_COLLECTOR_JAEGER_OTLP=jaeger.otlp_grpc,
        GLMTRACE_COLLECTOR_ES_URL=elasticsearch.url,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    proc = spawn(
        "collector",
        [str(binary), f"--config={COLLECTOR_CONFIG}"],
        workdir / "collector.log",
        env,
        workdir,
    )
    handle = Collector(
        otlp_grpc=f"127.0.0.1:{grpc}",
        otlp_http=f"http://127.0.0.1:{http_port}",
        fluent_host="127.0.0.1",
        fluent_port=fluent,
        process=proc,
    )
    try:
        wait_until(
            proc,
            "open OTLP and Fluent forward ports",
            lambda: (
                port_open(handle.otlp_grpc)
                and port_open(f"127.0.0.1:{http_port}")
                and port_open(f"127.0.0.1:{fluent}")
                and "Everything is ready" in proc.log.read_text(encoding="utf-8", errors="replace")
            ),
        )
        yield handle
    finally:
        proc.stop()
