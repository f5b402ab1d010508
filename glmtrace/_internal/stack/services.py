"""Start each backend with the configs ``docker-compose.yml`` mounts, and wait until it answers.

Only addresses differ from compose, through the environment variables those configs read.
Each ``start_*`` returns a running :class:`~.procs.Service` or raises :class:`StackError` (with
the process's log tail) having stopped what it started.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .paths import StackError
from .procs import Service, clean_env, http, port_open, spawn, wait_until

ES_USER = "glmtrace-es"
STARTUP_TIMEOUT = float(os.environ.get("GLMTRACE_BACKEND_STARTUP_TIMEOUT", "180"))
INDEX_TEMPLATE_NAME = "glmtrace-logs"


def _require(path: Path, what: str) -> Path:
    if not paths.provisioned(path):
        raise StackError(
            f"{what} is not provisioned (expected {path}); run: bash scripts/provision.sh"
        )
    return path


# --- Jaeger --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JaegerPorts:
    otlp_grpc: int
    otlp_http: int
    query_http: int
    query_grpc: int
    health: int


def start_jaeger(
    workdir: Path,
    ports: JaegerPorts,
    es_url: str | None = None,
    es_version: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> Service:
    """Jaeger on memory storage, or on ``es_url`` with compose's Elasticsearch storage file."""
    binary = _require(paths.jaeger_binary(), "Jaeger")
    config = paths.exporters() / "jaeger"
    env = clean_env(
        GLMTRACE_JAEGER_LISTEN_OTLP_GRPC=f"127.0.0.1:{ports.otlp_grpc}",
        GLMTRACE_JAEGER_LISTEN_OTLP_HTTP=f"127.0.0.1:{ports.otlp_http}",
        GLMTRACE_JAEGER_LISTEN_QUERY_HTTP=f"127.0.0.1:{ports.query_http}",
        GLMTRACE_JAEGER_LISTEN_QUERY_GRPC=f"127.0.0.1:{ports.query_grpc}",
        GLMTRACE_JAEGER_LISTEN_HEALTH=f"127.0.0.1:{ports.health}",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [str(binary), "--config", str(config / "config.yaml")]
    if es_url is None:
        argv += ["--config", str(config / "storage-memory.yaml")]
    else:
        env["GLMTRACE_JAEGER_ES_URL"] = es_url
        es = "extensions::jaeger_storage::backends::main::elasticsearch"
        argv += ["--config", str(config / "storage-elasticsearch.yaml")]
        # The integ-test-zip answers neither `GET /` (version sniffing) nor `HEAD /` (the
        # client's health check); the full Elasticsearch image compose runs does both.
        if es_version:
            argv.append(f"--set={es}::version={es_version.split('.')[0]}")
        argv.append(f"--set={es}::disable_health_check=true")
    argv += list(extra_args)
    service = spawn("jaeger", argv, workdir / "jaeger.log", env, workdir)
    query = f"http://127.0.0.1:{ports.query_http}"
    wait_until(
        service,
        "healthy query API and OTLP ports",
        lambda: (
            http("GET", f"http://127.0.0.1:{ports.health}/status").status == 200
            and http("GET", f"{query}/api/services").status == 200
            and port_open(f"127.0.0.1:{ports.otlp_grpc}")
            and port_open(f"127.0.0.1:{ports.otlp_http}")
        ),
        STARTUP_TIMEOUT,
    )
    return service


# --- Elasticsearch -------------------------------------------------------------------------------


def es_user() -> str | None:
    """The user Elasticsearch runs as: ``glmtrace-es`` as root (ES refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(ES_USER)
    except KeyError:
        raise StackError(
            f"system user {ES_USER} is missing; run: bash scripts/provision.sh"
        ) from None
    return ES_USER


def prepare_es_dir(rundir: Path, user: str | None) -> None:
    """data/, logs/, tmp/ and a config copy (ES writes its keystore there), owned by ``user``."""
    if user:
        for parent in rundir.parents:  # the ES user must be able to walk down to its data
            if parent.exists() and not os.stat(parent).st_mode & 0o001:
                raise StackError(
                    f"{parent} is not searchable by other users, so {user} cannot reach "
                    f"{rundir}; use a directory under {paths.backends_dir()}"
                )
    for sub in ("data", "logs", "tmp"):
        (rundir / sub).mkdir(parents=True, exist_ok=True)
    shutil.copytree(paths.elasticsearch_home() / "config", rundir / "config", dirs_exist_ok=True)
    if user:
        entry = pwd.getpwnam(user)
        for path in [rundir, *rundir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@dataclass(frozen=True)
class EsNode:
    """How one node is addressed; ``seeds`` (transport addresses) make it join a cluster,
    ``masters`` names the master-eligible nodes that form it, ``roles`` narrows this node's."""

    http_port: int
    transport_port: int
    name: str = "es1"
    cluster: str = "glmtrace"
    seeds: tuple[str, ...] = ()
    masters: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    heap: str = "512m"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_elasticsearch(
    rundir: Path, node: EsNode, log: Path | None = None, wait_for: str = "yellow"
) -> tuple[Service, str]:
    """One node on ``rundir`` (kept: data survives a restart); returns it and its version.

    ``wait_for`` is the cluster health to wait for, or "" to wait only for the HTTP port (a
    cluster node whose peers are not up yet).
    """
    home = _require(paths.elasticsearch_home(), "Elasticsearch")
    java = paths.java_home()
    user = es_user()
    prepare_es_dir(rundir, user)
    modules = sorted(p.name for p in (home / "modules").iterdir())
    settings = {
        "cluster.name": node.cluster,
        "node.name": node.name,
        "network.host": "127.0.0.1",
        "http.port": str(node.http_port),
        "transport.port": str(node.transport_port),
        "path.data": str(rundir / "data"),
        "path.logs": str(rundir / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
        "action.destructive_requires_name": "false",
    }
    if node.roles:
        settings["node.roles"] = ",".join(node.roles)
    if node.seeds:
        settings["discovery.seed_hosts"] = ",".join(node.seeds)
        if node.masters:
            settings["cluster.initial_master_nodes"] = ",".join(node.masters)
    else:
        settings["discovery.type"] = "single-node"
    if "x-pack-security" in modules:  # an unknown setting would abort start-up
        settings["xpack.security.enabled"] = "false"
    argv = [str(home / "bin" / "elasticsearch"), *[f"-E{k}={v}" for k, v in settings.items()]]
    env = clean_env(
        ES_JAVA_HOME=str(java),
        ES_PATH_CONF=str(rundir / "config"),
        ES_TMPDIR=str(rundir / "tmp"),
        ES_JAVA_OPTS=f"-Xms{node.heap} -Xmx{node.heap}",
    )
    env.pop("JAVA_HOME", None)  # ES warns about it and ignores it
    service = spawn("elasticsearch", argv, log or rundir / "elasticsearch.log", env, rundir, user)
    health = f"{node.url}/_cluster/health?wait_for_status={wait_for or 'red'}&timeout=1s"
    try:
        wait_until(
            service,
            f"{wait_for or 'any'} cluster health",
            lambda: http("GET", health).status == 200,
            STARTUP_TIMEOUT,
        )
        # The integ-test-zip has no `GET /` (405); the node info has the version.
        info = http("GET", f"{node.url}/_nodes/_local?filter_path=nodes.*.version").json()
    except BaseException:
        service.stop()
        raise
    return service, str(next(iter(info["nodes"].values()))["version"])


def put_index_template(es_url: str) -> None:
    """What compose's es-init does: the logs data stream's template, before the first log."""
    template = paths.exporters() / "elasticsearch" / "index-template.json"
    reply = http("PUT", f"{es_url}/_index_template/{INDEX_TEMPLATE_NAME}", template.read_bytes())
    if not 200 <= reply.status < 300:
        raise StackError(f"index template refused: HTTP {reply.status} {reply.body[:300]!r}")


# --- Collector -----------------------------------------------------------------------------------


def start_collector(
    workdir: Path,
    env: dict[str, str],
    listen: tuple[int, ...],
    config: Path | None = None,
    name: str = "collector",
) -> Service:
    """The Collector on ``config`` (default compose's), ``env`` its GLMTRACE_COLLECTOR_* values.

    Ready when every port in ``listen`` accepts connections and the Collector says so.
    """
    binary = _require(paths.collector_binary(), "the OpenTelemetry Collector")
    config = config or paths.exporters() / "collector" / "config.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    service = spawn(
        name,
        [str(binary), f"--config={config}"],
        workdir / f"{name}.log",
        clean_env(**env),
        workdir,
    )
    wait_until(
        service,
        "open ports",
        lambda: (
            all(port_open(f"127.0.0.1:{port}") for port in listen)
            and "Everything is ready" in service.log.read_text(encoding="utf-8", errors="replace")
        ),
        STARTUP_TIMEOUT,
    )
    return service
