"""JSON lines that every reader accepts, for the Elasticsearch bulk body and the disk spool.

One value that JSON or UTF-8 cannot carry (a lone surrogate from a non-UTF-8 filename, an
integer of thousands of digits, NaN) must not cost the other documents of a batch: such a
value is repaired where the document is serialised, never dropped.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Elasticsearch's ``long``: integers beyond it are rejected by the mapping, and past 4300
# digits Python refuses to print them at all; their decimal string keeps the value.
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; unserialisable parts repaired (see :func:`repair`)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    text = json.dumps(repair(value), separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def repair(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value``: U+FFFD for lone surrogates, strings for huge ints,
    NaN and infinities, and for anything else that is not plain JSON."""
    if isinstance(value, str):
        return fix_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _LONG_MIN <= value <= _LONG_MAX else _int_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 32:  # a document is built flat; anything this deep is a bug, keep its text
        return fix_text(_text(value))
    if isinstance(value, dict):
        return {fix_text(_text(k)): repair(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [repair(v, depth + 1) for v in value]
    return fix_text(_text(value))


def fix_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (valid pairs are joined)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # over sys.get_int_max_str_digits(): hex has no such limit
        return hex(value)


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a __str__ that raises must not lose the document
        return f"<unprintable {type(value).__name__}>"
