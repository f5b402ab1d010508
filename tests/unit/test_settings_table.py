"""One table of settings (config._SETTINGS) drives init(), the environment, README, doctor."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import glmtrace
from glmtrace._internal.config import _SETTINGS, resolve

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_an_init_parameter_and_back() -> None:
    """init() takes exactly the settings (plus the exporter object), by keyword only."""
    parameters = inspect.signature(glmtrace.init).parameters
    assert set(parameters) - {"exporter"} == set(_SETTINGS)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


def test_every_setting_and_variable_is_in_the_readme() -> None:
    """README's configuration section names each setting, and each variable that is not
    simply GLMTRACE_ + the setting's name in upper case."""
    missing = [name for name in _SETTINGS if f"`{name}`" not in README]
    unnamed = [
        var
        for name, setting in _SETTINGS.items()
        for var in setting.env
        if var != f"GLMTRACE_{name.upper()}" and not re.search(_spelled(var), README)
    ]
    assert (missing, unnamed) == ([], [])


def test_every_variable_is_well_formed() -> None:
    """Every variable is GLMTRACE_* or OTEL_*, and each setting read from the environment has
    its GLMTRACE_<NAME> (the OTLP exporter settings take the standard OTEL_ names)."""
    for name, setting in _SETTINGS.items():
        assert all(re.fullmatch(r"(GLMTRACE|OTEL)_[A-Z_]+", var) for var in setting.env), name
        assert (
            not setting.env
            or f"GLMTRACE_{name.upper()}" in setting.env
            or name
            in {
                "endpoint",
                "protocol",
                "headers",
            }
        ), name


def test_doctor_shows_every_setting() -> None:
    """resolve() reports a source for every setting, which doctor prints line by line."""
    _options, sources = resolve({})
    assert set(_SETTINGS) <= set(sources)


def _spelled(var: str) -> str:
    # README abbreviates families: OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL/HEADERS, GLMTRACE_ES_*.
    parts = var.split("_")
    return "|".join(
        re.escape("_".join(parts[:i])) + r"(_\[?[A-Z_]*\]?[A-Z_/]*)?\*?"
        for i in range(len(parts), 1, -1)
        if i >= 3
    )
