"""The resource of every span: OTEL_RESOURCE_ATTRIBUTES, resource_attributes=, service_name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import glmtrace


@pytest.fixture
def resource_of(tmp_path: Path) -> Iterator[Any]:
    """init() with the given arguments; returns the resource of one span."""

    def run(**arguments: Any) -> dict[str, Any]:
        exporter = InMemorySpanExporter()
        glmtrace.init(
            traces="none", logs="none", store=tmp_path / "r.db", exporter=exporter, **arguments
        )
        with glmtrace.span("s"):
            pass
        glmtrace.force_flush()
        return dict(exporter.get_finished_spans()[0].resource.attributes)

    yield run
    glmtrace.shutdown()


def test_otel_resource_attributes_are_honoured(
    resource_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_RESOURCE_ATTRIBUTES (URL-decoded) lands on spans, its service.name included."""
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=ml%20infra,service.name=env"
    )
    resource = resource_of()
    assert resource["deployment.environment"] == "prod"
    assert resource["team"] == "ml infra"
    assert resource["service.name"] == "env"


def test_explicit_values_win(resource_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """resource_attributes= beats OTEL_RESOURCE_ATTRIBUTES; service_name beats both."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=env,region=eu,service.name=env")
    resource = resource_of(
        service_name="explicit", resource_attributes={"team": "argument", "replica": 2}
    )
    assert (resource["team"], resource["region"], resource["replica"]) == ("argument", "eu", 2)
    assert resource["service.name"] == "explicit"


def test_default_service_name_without_any(resource_of: Any) -> None:
    """With no name anywhere, the service is glmtrace's default."""
    assert resource_of()["service.name"] == "unknown_service"


@pytest.mark.parametrize("bad", [["team=ml"], {"team": None}, {"": "x"}, {"team": [1]}])
def test_bad_resource_attributes_raise(bad: Any) -> None:
    """A malformed resource_attributes= raises ConfigError naming it."""
    with pytest.raises(glmtrace.ConfigError, match="resource_attributes"):
        glmtrace.init(resource_attributes=bad)
