"""Safe conversion of arbitrary Python values into OpenTelemetry attribute values.

Tensors and arrays become ``{shape, dtype, device}`` summaries (found through ``sys.modules``,
so torch and numpy are never imported here), containers become bounded JSON, cycles and
unserialisable objects a short repr, long strings are truncated, and values under keys that
look secret are replaced by ``[REDACTED]``.
"""

from __future__ import annotations

import functools
import json
import math
import re
import reprlib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import SpanLimits

from .config import DEFAULT_REDACT_KEYS
from .repair import INT64_MAX, INT64_MIN, int64_or_text

REDACTED = "[REDACTED]"
AttributeValue = str | bool | int | float | tuple[str, ...] | tuple[int, ...] | tuple[float, ...]

_MAX_DEPTH = 6
_MAX_ITEMS = 64
# Total containers and items one value may make coercion visit: shared references multiply
# the work (64 wide x 4 deep is 16 million visits) while depth and width stay within bounds.
_MAX_NODES = 2048
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlevel = 3


# Span and event names, and attribute keys, are cut at fixed lengths (values at
# max_attribute_length): a name is an identifier that backends index and show in lists.
MAX_NAME_LENGTH = 1024
MAX_KEY_LENGTH = 256
# How many attributes a span keeps: the OpenTelemetry SDK's default SpanLimits.
MAX_ATTRIBUTES = 128
DROPPED = "glmtrace.attributes.dropped"
# Slots kept free on a new span for what glmtrace stamps on it (thread id and name, session).
_STAMPED = 3


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every attribute value, and to how many attributes a span keeps."""

    max_length: int = 4096
    redact_keys: tuple[str, ...] = DEFAULT_REDACT_KEYS
    max_attributes: int = MAX_ATTRIBUTES
    # Keys already judged: spans repeat their keys (bounded; not part of equality).
    _secrets: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def is_secret(self, key: str) -> bool:
        # Whole-word match on the key's words, so "db_password" and "apiKey" are secret but
        # "gen_ai.usage.input_tokens" and "tokenizer" are not.
        known = self._secrets.get(key)
        if known is None:
            words = _words(key)
            known = any(f"_{fragment}_" in words for fragment in self.redact_keys)
            if len(self._secrets) < 4096:
                self._secrets[key] = known
        return known


@functools.lru_cache(maxsize=4096)
def _words(key: str) -> str:
    return "_" + "_".join(_WORD_SPLIT.split(_CAMEL.sub(r"\1_\2", key).lower())) + "_"


def truncate(text: str, max_length: int) -> str:
    if len(text) <= max_length:
        return text
    return f"{text[:max_length]}...[truncated {len(text) - max_length} chars]"


def attribute_count_limit() -> int:
    """How many attributes the SDK lets a span keep (OTEL_*ATTRIBUTE_COUNT_LIMIT, or 128)."""
    count = SpanLimits().max_span_attributes
    return count if count is not None else sys.maxsize


def bound_name(name: str) -> str:
    """A span or event name within :data:`MAX_NAME_LENGTH`, marked where it was cut."""
    return name if len(name) <= MAX_NAME_LENGTH else truncate(name, MAX_NAME_LENGTH)


# Credentials that show up inside exception messages and log lines.
_CREDENTIALS = re.compile(
    r"(?i)\b(bearer|basic|apikey)\s+[A-Za-z0-9._~+/=-]{6,}"
    r"|\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
# The userinfo of any URL (postgres://bob:hunter2@db, https://TOKEN@host): up to its last "@".
_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/?#]+@")


def scrub(text: str) -> str:
    """Replace bearer tokens, ``key=value`` credentials and URL userinfo inside free text."""

    def repl(m: re.Match[str]) -> str:
        if m.group(1):
            return f"{m.group(1)} [REDACTED]"
        return f"{m.group(2)}{m.group(3)}[REDACTED]"

    return _CREDENTIALS.sub(repl, scrub_urls(text))


def scrub_urls(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced (cheap when there is none)."""
    if "://" not in text or "@" not in text:
        return text
    return _URL_USERINFO.sub(r"\1[REDACTED]@", text)


def tensor_summary(value: Any) -> dict[str, Any] | None:
    """``{shape, dtype, device}`` for a torch tensor or numpy array, else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype), "device": str(value.device)}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return {"shape": list(value.shape), "dtype": str(value.dtype), "device": "cpu"}
    return None


def short_repr(value: Any) -> str:
    try:
        return _repr.repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"


def _float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def jsonable(value: Any, limits: Limits) -> Any:
    """A JSON-serialisable copy of ``value``: bounded, acyclic, secrets redacted."""
    return _jsonable(value, limits, 0, frozenset(), [_MAX_NODES])


def _jsonable(
    value: Any, limits: Limits, depth: int, seen: frozenset[int], budget: list[int]
) -> Any:
    budget[0] -= 1
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int64_or_text(value)
    if isinstance(value, float):
        return _float(value)
    # Strings nested in containers get a smaller share, so one long field cannot crowd
    # the rest of the container out of the (truncated) JSON.
    room = limits.max_length if depth == 0 else max(32, limits.max_length // 8)
    if isinstance(value, str):
        return truncate(scrub_urls(value), room)
    if isinstance(value, bytes | bytearray | memoryview):
        return truncate(bytes(value).decode("utf-8", errors="replace"), room)
    summary = tensor_summary(value)
    if summary is not None:
        return summary
    if id(value) in seen:
        return "<cycle>"
    if depth >= _MAX_DEPTH or budget[0] <= 0:
        return short_repr(value)
    inner = seen | {id(value)}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= _MAX_ITEMS or budget[0] <= 0:
                out["..."] = f"{len(value) - i} more"
                break
            key = k if isinstance(k, str) else short_repr(k)
            secret = limits.is_secret(key)
            out[key] = REDACTED if secret else _jsonable(v, limits, depth + 1, inner, budget)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        out_list = []
        for i, v in enumerate(value):
            if i >= _MAX_ITEMS or budget[0] <= 0:
                out_list.append(f"... {len(value) - i} more")
                break
            out_list.append(_jsonable(v, limits, depth + 1, inner, budget))
        return out_list
    return short_repr(value)


def _homogeneous(items: list[Any]) -> bool:
    kinds = {type(v) for v in items}
    return len(kinds) == 1 and kinds <= {str, int, float, bool}


def coerce(value: Any, limits: Limits) -> AttributeValue:
    """Convert any value into something OpenTelemetry accepts, within ``limits``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # OTLP carries 64-bit integers; a bigger one would be dropped with a traceback.
        number = int64_or_text(value)
        return truncate(number, limits.max_length) if isinstance(number, str) else number
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        return truncate(scrub_urls(value), limits.max_length)
    if isinstance(value, list | tuple) and value and len(value) <= _MAX_ITEMS:
        items = list(value)
        if _homogeneous(items) and not (
            isinstance(items[0], int) and not all(INT64_MIN <= v <= INT64_MAX for v in items)
        ):
            if isinstance(items[0], str):
                return tuple(truncate(scrub_urls(v), limits.max_length) for v in items)
            return tuple(items)
    try:
        text = json.dumps(jsonable(value, limits), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        text = short_repr(value)
    return truncate(text, limits.max_length)


def coerce_attributes(
    attributes: Mapping[str, Any] | Iterable[tuple[str, Any]],
    limits: Limits,
    present: Mapping[str, Any] | None = None,
) -> dict[str, AttributeValue]:
    """Coerce every value, redact secret-looking keys and bound keys and their number.

    ``present`` holds the attributes the span already has (None: a span about to start). New
    keys beyond the span's room are dropped, not handed to the SDK, which would evict the
    oldest (glmtrace's own) and log a warning for each: their count goes in
    ``glmtrace.attributes.dropped``.
    """
    items = (
        attributes.items()
        if type(attributes) is dict or isinstance(attributes, Mapping)
        else attributes
    )
    existing: Mapping[str, Any] = present if present is not None else {}
    room = limits.max_attributes - (len(existing) if present is not None else _STAMPED)
    max_length = limits.max_length
    secrets = limits._secrets
    out: dict[str, AttributeValue] = {}
    fresh = 0  # keys the span did not have yet: each takes a slot
    last = ""
    dropped = 0
    for key, value in items:
        if value is None:
            continue
        name = key if isinstance(key, str) else short_repr(key)
        if len(name) > MAX_KEY_LENGTH:
            name = truncate(name, MAX_KEY_LENGTH)
        if name not in out and name not in existing:
            if fresh >= room:
                dropped += 1
                continue
            fresh += 1
            last = name
        secret = secrets.get(name)
        if secret is None:
            secret = limits.is_secret(name)
        kind = type(value)
        if secret:
            out[name] = REDACTED
        elif (  # the common values, as coerce() would leave them, without the call
            kind is float
            or kind is bool
            or (kind is int and INT64_MIN <= value <= INT64_MAX)
            or (kind is str and len(value) <= max_length and "@" not in value)
        ):
            out[name] = value
        else:
            out[name] = coerce(value, limits)
    if dropped:
        if DROPPED not in existing and fresh and fresh >= room:
            del out[last]  # the count needs a slot of its own
            dropped += 1
        previous = existing.get(DROPPED, 0)
        out[DROPPED] = dropped + (previous if isinstance(previous, int) else 0)
    return out
