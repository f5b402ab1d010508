"""render.py: trees that fit the terminal, strict JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from glmtrace._internal.cli import render

TRACE = "0af7651916cd43dd8448eb211c80319c"
INPUTS = '[{"shape":[1,59,64],"dtype":"torch.float32","device":"cpu"}]'


def span(index: int, parent: int | None, **attributes: Any) -> dict[str, Any]:
    return {
        "trace_id": TRACE,
        "span_id": f"{index:016x}",
        "parent_span_id": f"{parent:016x}" if parent is not None else None,
        "name": f"module {index}",
        "start_ns": index,
        "end_ns": 1_000_000,
        "status": "UNSET",
        "attributes": attributes,
    }


def test_shorten_cuts_after_a_word_or_a_json_item() -> None:
    """Long values end with "…" after a whole word or JSON item, short ones are untouched."""
    assert render.shorten("short") == "short"
    assert render.shorten("alpha beta gamma delta", 16) == "alpha beta…"
    assert render.shorten('{"a":1111,"b":2222,"c":3333}', 20) == '{"a":1111,"b":2222…'
    assert render.shorten("x" * 30, 10) == "x" * 9 + "…"


def test_tree_at_80_columns_never_folds_a_value() -> None:
    """Six levels deep at 80 columns, each attribute pair is whole on one line (cut with "…")."""
    spans = [span(i, i - 1 if i else None, **{"glmtrace.torch.inputs": INPUTS}) for i in range(7)]
    console = Console(width=80, record=True, color_system=None)
    console.print(render.tree(TRACE, spans, [], width=80))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    pairs = [line for line in lines if "glmtrace.torch.inputs=" in line]
    assert len(pairs) == 7
    for line in pairs:
        value = line.split("glmtrace.torch.inputs=")[1].split("  ")[0].strip()
        assert value == INPUTS or (value.endswith("…") and INPUTS.startswith(value[:-1]))


def test_dumps_writes_strict_json() -> None:
    """NaN and infinities become strings, nested anywhere; the result parses strictly."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    text = render.dumps({"a": [float("nan"), {"b": float("-inf")}], "c": (float("inf"), 1.5)})
    assert json.loads(text, parse_constant=refuse) == {
        "a": ["NaN", {"b": "-Infinity"}],
        "c": ["Infinity", 1.5],
    }
