"""The real backends the integration tests talk to: Jaeger v2, Elasticsearch, an OTel Collector.

The processes are started by the same code as ``glmtrace stack`` (glmtrace/_internal/stack/):
the binaries ``scripts/provision.sh`` built (pinned in ``exporters/versions.env``) with the very
config files ``docker-compose.yml`` mounts. Here each runs on free loopback ports with fresh data
and logs, and each ``start_*`` context manager yields a small handle with query helpers and stops
the process after (SIGTERM to its process group, then SIGKILL). A failure to start fails the test
with the process's log tail, or with the command that provisions what is missing (never a skip).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from glmtrace._internal.stack import paths, procs, services
from glmtrace._internal.stack.paths import StackError
from glmtrace._internal.stack.procs import Response as Response
from glmtrace._internal.stack.procs import Service, free_port, http
from glmtrace._internal.stack.procs import clean_env as clean_env
from glmtrace._internal.stack.procs import port_open as port_open

REPO = Path(__file__).resolve().parents[2]
EXPORTERS = REPO / "exporters"
JAEGER_CONFIG = EXPORTERS / "jaeger" / "config.yaml"
JAEGER_STORAGE_MEMORY = EXPORTERS / "jaeger" / "storage-memory.yaml"
COLLECTOR_CONFIG = EXPORTERS / "collector" / "config.yaml"
INDEX_TEMPLATE = EXPORTERS / "elasticsearch" / "index-template.json"
INDEX_TEMPLATE_NAME = services.INDEX_TEMPLATE_NAME
LOGS_DATA_STREAM = "logs-glmtrace-default"
ES_USER = services.ES_USER
PROVISION = "bash scripts/provision.sh"
STARTUP_TIMEOUT = services.STARTUP_TIMEOUT
Process = Service  # what older tests call a started backend

_SPAN_KINDS = {
    0: "UNSPECIFIED",
    1: "INTERNAL",
    2: "SERVER",
    3: "CLIENT",
    4: "PRODUCER",
    5: "CONSUMER",
}
_STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@contextlib.contextmanager
def failing_test() -> Iterator[None]:
    """A backend that cannot start fails the test with the reason (never a traceback, a skip)."""
    try:
        yield
    except StackError as exc:
        pytest.fail(str(exc), pytrace=False)


# --- where things are ----------------------------------------------------------------------------

versions = paths.versions
backends_dir = paths.backends_dir
jaeger_binary = paths.jaeger_binary
collector_binary = paths.collector_binary
elasticsearch_home = paths.elasticsearch_home


def composego_binary() -> Path:
    return (
        backends_dir() / f"compose-go-{versions()['COMPOSE_GO_VERSION']}" / "bin" / "compose-spec"
    )


def require(path: Path, what: str) -> Path:
    """``path``, or a test failure naming the command that provisions it (never a skip)."""
    if not paths.provisioned(path):
        pytest.fail(f"{what} is not provisioned (expected {path}); run: {PROVISION}", pytrace=False)
    return path


# --- processes -----------------------------------------------------------------------------------


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    env: dict[str, str],
    cwd: Path,
    user: str | None = None,
) -> Service:
    return procs.spawn(name, argv, log, env, cwd, user)


def wait_until(
    proc: Service, what: str, ready: Callable[[], bool], timeout: float = STARTUP_TIMEOUT
) -> None:
    """Poll ``ready`` until true; fail with the log tail if the process dies or time runs out."""
    with failing_test():
        procs.wait_until(proc, what, ready, timeout)


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
    require(jaeger_binary(), "Jaeger")
    ports = services.JaegerPorts(*(free_port() for _ in range(5)))
    with failing_test():
        proc = services.start_jaeger(
            workdir,
            ports,
            elasticsearch.url if elasticsearch else None,
            elasticsearch.version if elasticsearch else None,
        )
    try:
        yield Jaeger(
            otlp_grpc=f"127.0.0.1:{ports.otlp_grpc}",
            otlp_http=f"http://127.0.0.1:{ports.otlp_http}",
            query_url=f"http://127.0.0.1:{ports.query_http}",
            health_url=f"http://127.0.0.1:{ports.health}/status",
            process=proc,
        )
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


def es_rundir(workdir: Path) -> Path:
    """Where a node's data goes: ``workdir``, or as root a directory the ES user can reach.

    pytest's tmp (mode 700, root) is closed to ``glmtrace-es``, so as root the node's dir goes
    under the cache's run/ and ``workdir`` becomes a symlink to it.
    """
    if os.geteuid() != 0:
        workdir.mkdir(parents=True, exist_ok=True)
        return workdir
    run_root = backends_dir() / "run"
    run_root.mkdir(parents=True, exist_ok=True)
    rundir = Path(
        subprocess.check_output(["mktemp", "-d", f"{run_root}/es-XXXXXX"], text=True).strip()
    )
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        workdir.symlink_to(rundir, target_is_directory=True)
    return rundir


@contextlib.contextmanager
def start_elasticsearch(
    workdir: Path, node: services.EsNode | None = None
) -> Iterator[Elasticsearch]:
    """A node with fresh data in ``workdir`` (single-node unless ``node`` says otherwise)."""
    home = require(elasticsearch_home(), "Elasticsearch")
    rundir = es_rundir(workdir)
    node = node or services.EsNode(free_port(), free_port(), cluster="glmtrace-test")
    log = workdir.parent / f"{workdir.name}.stdout.log"
    with failing_test():
        proc, version = services.start_elasticsearch(rundir, node, log)
    modules = sorted(p.name for p in (home / "modules").iterdir())
    try:
        yield Elasticsearch(url=node.url, version=version, modules=modules, process=proc)
    finally:
        proc.stop()
        if rundir != workdir:
            shutil.rmtree(rundir, ignore_errors=True)


# --- Collector -----------------------------------------------------------------------------------


@dataclass
class Collector:
    """A running OpenTelemetry Collector: OTLP + Fluent forward in, traces to Jaeger, logs to ES."""

    otlp_grpc: str  # "127.0.0.1:PORT"
    otlp_http: str  # "http://127.0.0.1:PORT"
    fluent_host: str
    fluent_port: int
    prometheus: str  # "http://127.0.0.1:PORT", whose /metrics serves the metrics pipeline
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
    require(collector_binary(), "the OpenTelemetry Collector")
    # Like compose's es-init container: the ECS exporter writes with require_data_stream, so the
    # data stream's template must exist before the first log arrives.
    elasticsearch.put_index_template()
    grpc, http_port, fluent, prometheus = free_port(), free_port(), free_port(), free_port()
    env = {
        "GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC": f"127.0.0.1:{grpc}",
        "GLMTRACE_COLLECTOR_LISTEN_OTLP_HTTP": f"127.0.0.1:{http_port}",
        "GLMTRACE_COLLECTOR_LISTEN_FLUENT": f"127.0.0.1:{fluent}",
        "GLMTRACE_COLLECTOR_LISTEN_PROMETHEUS": f"127.0.0.1:{prometheus}",
        "GLMTRACE_COLLECTOR_JAEGER_OTLP": jaeger.otlp_grpc,
        "GLMTRACE_COLLECTOR_ES_URL": elasticsearch.url,
    }
    with failing_test():
        proc = services.start_collector(workdir, env, (grpc, http_port, fluent, prometheus))
    try:
        yield Collector(
            otlp_grpc=f"127.0.0.1:{grpc}",
            otlp_http=f"http://127.0.0.1:{http_port}",
            fluent_host="127.0.0.1",
            fluent_port=fluent,
            prometheus=f"http://127.0.0.1:{prometheus}",
            process=proc,
        )
    finally:
        proc.stop()
