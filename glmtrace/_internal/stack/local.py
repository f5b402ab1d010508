"""A detached local stack: Elasticsearch, Jaeger on it, and a Collector in front, on loopback.

``up`` leaves the processes running after the command exits; their pid files, logs and data live
in one directory (default ``<backend cache>/stack``, ``$GLMTRACE_STACK_DIR`` overrides), which
``down``, ``status`` and ``logs`` read back. The ports are compose's where a host sees them
(Collector 4317/4318/24224, Jaeger UI and API 16686, Elasticsearch 9200); Jaeger's own OTLP
ports, internal in compose, move to 14317/14318 so they do not clash with the Collector's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import paths, services
from .paths import StackError
from .procs import Service, http, port_open, port_taken

PORTS: dict[str, int] = {
    "collector-grpc": 4317,
    "collector-http": 4318,
    "collector-fluent": 24224,
    "collector-prometheus": 8889,
    "jaeger-query": 16686,
    "jaeger-query-grpc": 16685,
    "jaeger-otlp-grpc": 14317,
    "jaeger-otlp-http": 14318,
    "jaeger-health": 13133,
    "es-http": 9200,
    "es-transport": 9300,
}
NAMES = ("elasticsearch", "jaeger", "collector")  # start order; stopped in reverse
_MARKERS = {"elasticsearch": "elasticsearch", "jaeger": "jaeger", "collector": "otelcol-glmtrace"}
_STATE = "stack.json"


def default_dir() -> Path:
    return Path(os.environ.get("GLMTRACE_STACK_DIR") or paths.backends_dir() / "stack")


@dataclass(frozen=True)
class Stack:
    """Where a stack lives and listens."""

    directory: Path
    ports: dict[str, int]

    def urls(self) -> dict[str, str]:
        p = self.ports
        return {
            "Jaeger UI and API": f"http://127.0.0.1:{p['jaeger-query']}",
            "Elasticsearch": f"http://127.0.0.1:{p['es-http']}",
            "Collector OTLP gRPC": f"http://127.0.0.1:{p['collector-grpc']}",
            "Collector OTLP HTTP": f"http://127.0.0.1:{p['collector-http']}",
            "Collector Fluent forward": f"tcp://127.0.0.1:{p['collector-fluent']}",
            "Collector Prometheus metrics": f"http://127.0.0.1:{p['collector-prometheus']}/metrics",
        }

    def environment(self) -> dict[str, str]:
        """What a traced program exports: spans through the Collector, logs to Elasticsearch."""
        p = self.ports
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{p['collector-grpc']}",
            "GLMTRACE_ES_URL": f"http://127.0.0.1:{p['es-http']}",
            "GLMTRACE_JAEGER_URL": f"http://127.0.0.1:{p['jaeger-query']}",
        }

    def health(self, name: str) -> bool:
        """Whether ``name`` answers on its port (not just whether its process lives)."""
        p = self.ports
        urls = {
            "elasticsearch": f"http://127.0.0.1:{p['es-http']}/_cluster/health",
            "jaeger": f"http://127.0.0.1:{p['jaeger-health']}/status",
        }
        if name == "collector":
            try:
                return port_open(f"127.0.0.1:{p['collector-grpc']}")
            except OSError:
                return False
        try:
            return http("GET", urls[name], timeout=3).status == 200
        except OSError:
            return False

    def log(self, name: str) -> Path:
        return self.directory / name / f"{name}.log"

    def service(self, name: str) -> Service | None:
        """The process a pid file names, if that process still runs."""
        try:
            pid = int((self.directory / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        found = Service(name, pid, self.log(name), _MARKERS[name])
        return found if found.alive() else None


def load(directory: Path) -> Stack | None:
    """The stack ``up`` recorded in ``directory``, or None."""
    try:
        state = json.loads((directory / _STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Stack(directory, {**PORTS, **state["ports"]})


def up(
    directory: Path,
    ports: dict[str, int],
    progress: Callable[[str], None],
    allow_provision: bool = True,
) -> Stack:
    """Start what is not running; return the stack. Refuses (StackError) before starting anything
    when a port is taken, no JDK is there, or a component is missing and may not be provisioned."""
    unknown = set(ports) - set(PORTS)
    if unknown:
        raise StackError(f"unknown port name(s) {sorted(unknown)}; known: {', '.join(PORTS)}")
    previous = load(directory)
    stack = Stack(directory, {**PORTS, **(previous.ports if previous else {}), **ports})
    running = [n for n in NAMES if stack.service(n)]
    if len(running) == len(NAMES):
        return stack
    if running:
        raise StackError(
            f"only {', '.join(running)} of the stack in {directory} is running; "
            "run: glmtrace stack down, then up"
        )
    taken = [f"{name} ({port})" for name, port in stack.ports.items() if port_taken(port)]
    if taken:
        raise StackError(
            f"port(s) in use on 127.0.0.1: {', '.join(taken)}; stop what listens there or "
            "choose others with --port NAME=PORT"
        )
    paths.java_home()
    missing = paths.missing_components()
    if missing and not allow_provision:
        raise StackError(f"not provisioned: {', '.join(missing)}; run: bash scripts/provision.sh")
    if missing:
        paths.provision(missing, progress)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _STATE).write_text(json.dumps({"ports": stack.ports}), encoding="utf-8")
    started: list[Service] = []
    try:
        for name in NAMES:
            progress(f"starting {name}")
            started.append(_start(stack, name))
            (directory / f"{name}.pid").write_text(str(started[-1].pid), encoding="utf-8")
    except BaseException:
        for service in reversed(started):
            service.stop()
            (directory / f"{service.name}.pid").unlink(missing_ok=True)
        raise
    return stack


def _start(stack: Stack, name: str) -> Service:
    p, d = stack.ports, stack.directory
    es_url = f"http://127.0.0.1:{p['es-http']}"
    if name == "elasticsearch":
        node = services.EsNode(p["es-http"], p["es-transport"], heap="1g")
        service, _version = services.start_elasticsearch(
            d / "elasticsearch", node, stack.log("elasticsearch")
        )
        try:
            services.put_index_template(es_url)
        except BaseException:
            service.stop()
            raise
        return service
    if name == "jaeger":
        ports = services.JaegerPorts(
            p["jaeger-otlp-grpc"],
            p["jaeger-otlp-http"],
            p["jaeger-query"],
            p["jaeger-query-grpc"],
            p["jaeger-health"],
        )
        version = paths.versions()["ES_VERSION"]
        return services.start_jaeger(d / "jaeger", ports, es_url, version)
    env = {
        "GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC": f"127.0.0.1:{p['collector-grpc']}",
        "GLMTRACE_COLLECTOR_LISTEN_OTLP_HTTP": f"127.0.0.1:{p['collector-http']}",
        "GLMTRACE_COLLECTOR_LISTEN_FLUENT": f"127.0.0.1:{p['collector-fluent']}",
        "GLMTRACE_COLLECTOR_LISTEN_PROMETHEUS": f"127.0.0.1:{p['collector-prometheus']}",
        "GLMTRACE_COLLECTOR_JAEGER_OTLP": f"127.0.0.1:{p['jaeger-otlp-grpc']}",
        "GLMTRACE_COLLECTOR_ES_URL": es_url,
    }
    listen = tuple(p[f"collector-{kind}"] for kind in ("grpc", "http", "fluent", "prometheus"))
    return services.start_collector(d / "collector", env, listen)


def down(directory: Path) -> list[str]:
    """Stop every process of the stack in ``directory`` (data kept); the names stopped."""
    stack = load(directory)
    if stack is None:
        return []
    stopped = []
    for name in reversed(NAMES):
        service = stack.service(name)
        if service is not None:
            service.stop()
            stopped.append(name)
        (directory / f"{name}.pid").unlink(missing_ok=True)
    return stopped
