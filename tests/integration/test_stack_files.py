"""docker-compose.yml and the files it mounts, checked without a Docker engine.

The compose file is loaded by compose-go (the loader Docker Compose itself uses, provisioned by
scripts/provision.sh), which validates it against the Compose specification and normalises it;
the assertions below read that normalised model.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from .backends import (
    COLLECTOR_CONFIG,
    EXPORTERS,
    INDEX_TEMPLATE,
    JAEGER_CONFIG,
    JAEGER_STORAGE_MEMORY,
    REPO,
    clean_env,
    composego_binary,
    jaeger_binary,
    require,
    validate_collector_config,
    versions,
)

COMPOSE_FILE = REPO / "docker-compose.yml"
KIBANA_OBJECTS = EXPORTERS / "kibana" / "glmtrace.ndjson"
JAEGER_STORAGE_ES = EXPORTERS / "jaeger" / "storage-elasticsearch.yaml"
BUILDER_MANIFEST = EXPORTERS / "collector" / "builder-config.yaml"

# Every test here, also the file-only ones: tests/conftest.py refuses an unmarked one.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose-go loads, validates and normalises it."""
    binary = require(composego_binary(), "compose-go")
    result = subprocess.run(
        [str(binary), "-format", "json", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        cwd=REPO,  # compose-go resolves relative paths against its working directory
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"compose-go rejects docker-compose.yml:\n{result.stderr}"
    return cast(dict[str, Any], json.loads(result.stdout))


def _binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount of ``service``."""
    return {
        v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"
    }


def _published(compose: dict[str, Any], service: str, target: int) -> int:
    (port,) = [p for p in compose["services"][service].get("ports", []) if p["target"] == target]
    return int(port["published"])


def _kibana_objects() -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in KIBANA_OBJECTS.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


@pytest.mark.integration
def test_compose_file_is_valid_compose(compose: dict[str, Any]) -> None:
    """compose-go loads docker-compose.yml with schema validation on; depends_on targets exist."""
    services = compose["services"]
    assert {"elasticsearch", "es-init", "kibana", "kibana-init", "jaeger", "otel-collector"} <= set(
        services
    )
    for name, service in services.items():
        for target, dep in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert dep["condition"] in {
                "service_healthy",
                "service_started",
                "service_completed_successfully",
            }
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}'s health, it has none"
                )


@pytest.mark.integration
def test_every_image_is_pinned_to_versions_env(compose: dict[str, Any]) -> None:
    """No `latest`, no bare names: every image has the version exporters/versions.env pins."""
    pins = versions()
    pinned = {
        pins[k] for k in ("ES_IMAGE", "KIBANA_IMAGE", "JAEGER_IMAGE", "OTELCOL_IMAGE", "CURL_IMAGE")
    }
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert re.fullmatch(r"\d+(\.\d+)+", tag), (
            f"{name}: image {image} is not pinned to a version"
        )
        assert image in pinned, (
            f"{name}: image {image} is not one of the pins in exporters/versions.env"
        )


def test_images_match_the_versions_the_tests_run() -> None:
    """Compose runs the same Elasticsearch, Jaeger and Collector releases the tests provision."""
    pins = versions()
    assert pins["ES_IMAGE"].endswith(f":{pins['ES_VERSION']}")
    assert pins["KIBANA_IMAGE"].endswith(f":{pins['ES_VERSION']}")
    assert pins["JAEGER_IMAGE"].endswith(f":{pins['JAEGER_VERSION']}")
    assert pins["OTELCOL_IMAGE"].endswith(f":{pins['OTELCOL_VERSION']}")
    manifest = yaml.safe_load(BUILDER_MANIFEST.read_text(encoding="utf-8"))
    modules = [
        m["gomod"] for kind in ("receivers", "processors", "exporters") for m in manifest[kind]
    ]
    assert modules and all(m.endswith(f" v{pins['OTELCOL_VERSION']}") for m in modules), modules
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    for key in ("ES_IMAGE", "KIBANA_IMAGE", "JAEGER_IMAGE", "OTELCOL_IMAGE", "CURL_IMAGE"):
        assert f"image: {pins[key]}\n" in compose_text, (
            f"{key}={pins[key]} is not what compose runs"
        )


@pytest.mark.integration
def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    """Every bind mount's source is a file in the repository (symlinks resolved, as Docker does)."""
    for name, service in compose["services"].items():
        for target, source in _binds(service).items():
            assert source.is_file(), f"{name}: {source} (mounted at {target}) does not exist"
            assert source.resolve().is_relative_to(REPO), (
                f"{name}: {source} is outside the repository"
            )


@pytest.mark.integration
def test_every_published_port_is_on_loopback(compose: dict[str, Any]) -> None:
    """Security is off in this stack, so nothing may listen beyond 127.0.0.1."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (
                f"{name}: port {port} is not bound to 127.0.0.1"
            )


@pytest.mark.integration
def test_compose_mounts_the_configs_the_tests_run(compose: dict[str, Any]) -> None:
    """Jaeger, Collector and the template init get the very files the integration fixtures use."""
    jaeger = compose["services"]["jaeger"]
    jaeger_binds = {source.resolve(): target for target, source in _binds(jaeger).items()}
    assert JAEGER_CONFIG.resolve() in jaeger_binds
    assert JAEGER_STORAGE_ES.resolve() in jaeger_binds
    command = jaeger["command"]
    configs = [command[i + 1] for i, arg in enumerate(command) if arg == "--config"]
    assert configs == [
        jaeger_binds[JAEGER_CONFIG.resolve()],
        jaeger_binds[JAEGER_STORAGE_ES.resolve()],
    ]

    collector = compose["services"]["otel-collector"]
    (source,) = [s for t, s in _binds(collector).items() if f"--config={t}" in collector["command"]]
    assert source.resolve() == COLLECTOR_CONFIG.resolve()

    (template,) = _binds(compose["services"]["es-init"]).values()
    assert template.resolve() == INDEX_TEMPLATE.resolve()
    assert (
        template.resolve()
        == (REPO / "glmtrace" / "_internal" / "data" / "es_index_template.json").resolve()
    )
    assert (
        "http://elasticsearch:9200/_index_template/glmtrace-logs"
        in compose["services"]["es-init"]["command"]
    )


def test_configs_take_every_address_from_the_environment() -> None:
    """Tests and compose differ only by env: every endpoint is ${env:...:-default}."""
    for path in (JAEGER_CONFIG, JAEGER_STORAGE_ES, COLLECTOR_CONFIG):
        found: list[str] = []

        def walk(node: Any, key: str = "", path: Path = path, found: list[str] = found) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, str(k))
            elif isinstance(node, list):
                for v in node:
                    walk(v, key)
            elif key in {"endpoint", "endpoints", "server_urls"}:
                found.append(str(node))
                assert re.fullmatch(r"\$\{env:[A-Z0-9_]+:-[^}]+\}", str(node)), (
                    f"{path}: {key}={node}"
                )

        walk(yaml.safe_load(path.read_text(encoding="utf-8")))
        assert found, f"{path}: no endpoints found"


def test_kibana_objects_match_the_template_and_the_jaeger_port() -> None:
    """The data view covers the template's pattern; trace.id links to compose's Jaeger UI."""
    objects = {o["type"]: o for o in _kibana_objects()}
    view = objects["index-pattern"]["attributes"]
    template = json.loads(INDEX_TEMPLATE.read_text(encoding="utf-8"))
    assert template["index_patterns"] == [view["title"]]
    assert view["timeFieldName"] == "@timestamp"
    link = json.loads(view["fieldFormatMap"])["trace.id"]
    assert link["id"] == "url"
    url = link["params"]["urlTemplate"]
    match = re.fullmatch(r"http://(localhost|127\.0\.0\.1):(\d+)/trace/\{\{value\}\}", url)
    assert match, url
    compose_file = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    published = {
        int(p.split(":")[1]): int(p.split(":")[2])
        for p in compose_file["services"]["jaeger"]["ports"]
    }  # host port -> container port
    assert published.get(int(match.group(2))) == 16686, (
        f"{url} is not the Jaeger UI port compose publishes"
    )

    search = objects["search"]
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    (ref,) = search["references"]
    assert ref["name"] == source["indexRefName"] and ref["id"] == objects["index-pattern"]["id"]
    assert "trace.id" in search["attributes"]["columns"]
    assert "ERROR" in source["query"]["query"]


@pytest.mark.integration
def test_kibana_url_template_points_at_the_published_jaeger_port(compose: dict[str, Any]) -> None:
    """Checked again on compose-go's normalised model (long and short port syntax alike)."""
    (view,) = [o for o in _kibana_objects() if o["type"] == "index-pattern"]
    url = json.loads(view["attributes"]["fieldFormatMap"])["trace.id"]["params"]["urlTemplate"]
    assert f":{_published(compose, 'jaeger', 16686)}/trace/" in url


@pytest.mark.integration
@pytest.mark.parametrize("name", ["config.yaml", "tier1.yaml", "tier2.yaml"])
def test_collector_config_passes_validate(name: str) -> None:
    """The built Collector accepts each config in exporters/collector/ (defaults, no env set)."""
    result = validate_collector_config(EXPORTERS / "collector" / name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(
    "storage", [JAEGER_STORAGE_MEMORY, JAEGER_STORAGE_ES], ids=lambda p: p.stem
)
def test_jaeger_config_passes_validate(storage: Path) -> None:
    """The built Jaeger accepts config.yaml with either storage file (memory / ES)."""
    binary = require(jaeger_binary(), "Jaeger")
    result = subprocess.run(
        [str(binary), "validate", "--config", str(JAEGER_CONFIG), "--config", str(storage)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_builder_manifest_holds_only_what_the_collector_configs_use() -> None:
    """The manifest builds exactly the components the Collector configs use (config.yaml and the
    scale tier's tier1.yaml / tier2.yaml)."""
    manifest = yaml.safe_load(BUILDER_MANIFEST.read_text(encoding="utf-8"))
    package_type = {
        "otlpreceiver": "otlp",
        "fluentforwardreceiver": "fluent_forward",
        "batchprocessor": "batch",
        "transformprocessor": "transform",
        "tailsamplingprocessor": "tail_sampling",
        "otlpexporter": "otlp_grpc",
        "elasticsearchexporter": "elasticsearch",
        "loadbalancingexporter": "loadbalancing",
        "prometheusexporter": "prometheus",
    }
    configs = [COLLECTOR_CONFIG, *(EXPORTERS / "collector").glob("tier*.yaml")]
    assert len(configs) == 3, configs
    for kind in ("receivers", "processors", "exporters"):
        built = {package_type[m["gomod"].split()[0].rsplit("/", 1)[1]] for m in manifest[kind]}
        used = {
            name.split("/")[0]
            for config in configs
            for name in yaml.safe_load(config.read_text(encoding="utf-8"))[kind]
        }
        assert built == used, f"{kind}: built {sorted(built)}, configs use {sorted(used)}"
