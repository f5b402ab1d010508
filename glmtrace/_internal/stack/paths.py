"""Where the stack's pieces are: the source checkout's configs, the provisioned binaries, a JDK.

The paths follow ``scripts/lib.sh`` (the shell side of the same rule); the pins come from
``exporters/versions.env``. Provisioning itself is ``scripts/provision.sh``: it needs Go and
Maven, so the stack runs from a glmtrace source checkout.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..errors import GlmtraceError


class StackError(GlmtraceError):
    """A backend cannot be started or stopped; the message says why and what to do."""


def source_root() -> Path:
    """The glmtrace checkout this package runs from ($GLMTRACE_SOURCE overrides)."""
    candidates = [Path(os.environ["GLMTRACE_SOURCE"])] if os.environ.get("GLMTRACE_SOURCE") else []
    candidates.append(Path(__file__).resolve().parents[3])
    for root in candidates:
        if (root / "exporters" / "versions.env").is_file():
            return root
    raise StackError(
        "glmtrace stack needs a glmtrace source checkout (its exporters/ configs and "
        f"scripts/provision.sh); none found at {', '.join(map(str, candidates))}; "
        "set GLMTRACE_SOURCE to one"
    )


def exporters() -> Path:
    return source_root() / "exporters"


def versions() -> dict[str, str]:
    """The pins in exporters/versions.env (KEY=VALUE lines)."""
    pins: dict[str, str] = {}
    for line in (exporters() / "versions.env").read_text(encoding="utf-8").splitlines():
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


def provisioned(path: Path) -> bool:
    """True when ``path`` (a binary under ``<component>/bin/`` or a component dir) is complete.

    provision.sh stamps a component ``.complete`` last, so a half-finished build does not count.
    """
    component = path if path.is_dir() else path.parent.parent
    return path.exists() and (component / ".complete").exists()


def missing_components() -> list[str]:
    """The provision.sh component names of the stack that are not provisioned."""
    paths = {
        "jaeger": jaeger_binary(),
        "otelcol": collector_binary(),
        "elasticsearch": elasticsearch_home(),
    }
    return [name for name, path in paths.items() if not provisioned(path)]


def provision(components: list[str], progress: Callable[[str], None]) -> None:
    """Run ``scripts/provision.sh --only COMPONENTS``, handing each line it prints to ``progress``.

    Raises :class:`StackError` with the script's last lines when it fails.
    """
    script = source_root() / "scripts" / "provision.sh"
    argv = ["bash", str(script), "--only", ",".join(components)]
    lines: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            progress(line.rstrip())
    if proc.returncode != 0:
        tail = "\n".join(lines[-20:])
        raise StackError(f"provisioning failed ({' '.join(argv)}):\n{tail}")


def java_home(jvm_root: Path = Path("/usr/lib/jvm")) -> Path:
    """A JDK new enough for the pinned Elasticsearch: $ES_JAVA_HOME, else one under ``jvm_root``."""
    want = int(versions()["ES_JAVA_MIN"])
    if os.environ.get("ES_JAVA_HOME"):
        home = Path(os.environ["ES_JAVA_HOME"])
        if not (home / "bin" / "java").exists():
            raise StackError(f"ES_JAVA_HOME={home} has no bin/java; point it at a JDK >= {want}")
        return home
    for home in sorted(jvm_root.glob("*")):
        release = home / "release"
        if not (home / "bin" / "java").exists() or not release.exists():
            continue
        for line in release.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("JAVA_VERSION="):
                major = line.split("=", 1)[1].strip('"').split(".")[0]
                if major.isdigit() and int(major) >= want:
                    return home
    raise StackError(
        f"Elasticsearch needs a JDK >= {want} and none is under {jvm_root}: install one "
        f"(e.g. apt-get install openjdk-{want}-jdk-headless) or set ES_JAVA_HOME"
    )
