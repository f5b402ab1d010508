"""The shipped Jaeger configuration (exporters/jaeger/config.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG = Path(__file__).resolve().parents[2] / "exporters" / "jaeger" / "config.yaml"


def test_jaeger_does_not_trace_itself() -> None:
    """Jaeger's self-tracing is off (query extension and collector telemetry): no export to
    localhost:4317, which made each shutdown wait 10 s."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert config["extensions"]["jaeger_query"]["enable_tracing"] is False  # Jaeger v2: on
    traces = config["service"]["telemetry"].get("traces") or {}
    assert traces.get("level") == "none"
    assert not traces.get("processors")
