"""Repairing values that cannot be encoded, so one bad value never costs its neighbours.

A lone surrogate (text decoded from a non-UTF-8 filename with ``surrogateescape``) has no
UTF-8 form, and an integer past ``sys.get_int_max_str_digits()`` digits cannot be printed;
either one fails a whole SQLite transaction or OTLP request. Repaired, the surrogate becomes
U+FFFD and the integer its decimal string.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# How OTLP/JSON spells the floats JSON has no literal for (NaN is never equal to itself).
_FLOAT_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}
# Past this many bits even the decimal string is more work than a telemetry value is worth.
_MAX_DIGITS_BITS = 1 << 15
_LOG10_2 = 0.30103


def utf8_ok(value: str) -> bool:
    """True when ``value`` has a UTF-8 form (no lone surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(value: str) -> str:
    """``value`` with each lone surrogate replaced by U+FFFD (a valid pair joins into its char)."""
    if utf8_ok(value):
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _digits_limit() -> int:
    get = getattr(sys, "get_int_max_str_digits", None)  # absent before Python 3.10.7
    return int(get()) if get is not None else 0


def printable(value: int) -> bool:
    """True when ``str(value)`` works under the interpreter's integer-digits limit."""
    limit = _digits_limit()
    return limit == 0 or value.bit_length() * _LOG10_2 < limit - 1


def int_text(value: int) -> str:
    """The decimal string of ``value``, whatever its size (or its size, past ~10,000 digits)."""
    bits = value.bit_length()
    if bits > _MAX_DIGITS_BITS:
        return f"<integer of {bits} bits>"
    import decimal  # here: 2 ms of `import glmtrace` for a rare integer

    return str(decimal.Decimal(value))  # Decimal is not bound by the digits limit


def safe_str(value: object) -> str:
    """``str(value)``, repaired; a ``__str__`` that raises gives a placeholder instead."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int_text(value)
    try:
        return text(str(value))
    except Exception:
        return f"<{type(value).__name__} object: str() failed>"


def int64_or_text(value: int) -> int | str:
    """``value`` when OTLP and Elasticsearch's ``long`` can carry it, else its string form."""
    return value if INT64_MIN <= value <= INT64_MAX else int_text(value)


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; what JSON cannot carry is repaired (:func:`json_ready`)."""
    try:
        out = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return out.encode("utf-8")
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    return json.dumps(json_ready(value), separators=(",", ":"), ensure_ascii=False).encode()


def json_ready(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` every JSON reader accepts: U+FFFD for lone surrogates, strings for
    integers beyond 64 bits, NaN and infinities, and the text of anything not plain JSON."""
    if isinstance(value, str):
        return text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int64_or_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _FLOAT_TEXT.get(value, "NaN")
    if depth > 32:  # documents are built flat; anything this deep is a bug: keep its text
        return safe_str(value)
    if isinstance(value, dict):
        return {safe_str(k): json_ready(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v, depth + 1) for v in value]
    return safe_str(value)


def repaired(value: Any, *, int64: bool = False) -> Any:
    """``value`` with text repaired and unprintable integers as strings, through dicts and lists.

    With ``int64`` every integer outside the signed 64-bit range (what OTLP carries) becomes a
    string too. Dict keys that JSON cannot take become strings.
    """
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if (int64 and not INT64_MIN <= value <= INT64_MAX) or not printable(value):
            return int_text(value)
        return value
    if isinstance(value, dict):
        return {_key(k): repaired(v, int64=int64) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [repaired(v, int64=int64) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def otlp_ok(value: Any) -> bool:
    """True when an attribute value encodes as OTLP as it is: UTF-8 text, 64-bit integers."""
    if isinstance(value, str):
        return utf8_ok(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, list | tuple):
        return all(otlp_ok(v) for v in value)
    return True


def _key(key: object) -> object:
    if isinstance(key, str | float | bool) or key is None:
        return text(key) if isinstance(key, str) else key
    return safe_str(key)  # ints too: JSON writes them as text anyway


UINT64_MAX = 2**64 - 1


def nanos_ok(value: object) -> bool:
    """True for a timestamp OTLP can carry: None or an int of 0..2**64-1 nanoseconds."""
    return value is None or (type(value) is int and 0 <= value <= UINT64_MAX)


def nanos(value: object) -> int | None:
    """A timestamp OTLP can carry: a float (``time.time()`` given where nanoseconds were
    meant) truncated, out of range clamped, anything else None (the encoder leaves it 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return int(min(max(value, 0), UINT64_MAX))
