"""Compact JSON summaries of the tensors a module takes and returns (module span attributes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any


def summary_json(value: Any, named: Mapping[str, Any] | None = None) -> str | None:
    """Compact JSON of tensor summaries in ``value`` (a tensor or a shallow container).

    With ``named`` (a call's keyword arguments) holding tensors, an object instead: positional
    inputs under their index, keyword inputs under their name (``{"0":..., "input_ids":...}``).
    """
    if named:
        return _summaries.summarize_call(value, named)
    return _summaries.summarize(value)


class _Summaries:
    """Tensor summaries, cached by (shape, dtype, device): hooks see the same few shapes."""

    def __init__(self) -> None:
        self._cache: dict[Any, str] = {}

    def one(self, tensor: Any) -> str:
        key = (tensor.shape, tensor.dtype, tensor.device)  # torch.Size: a hashable tuple
        text = self._cache.get(key)
        if text is None:
            shape = ",".join(str(d) for d in key[0])
            text = f'{{"shape":[{shape}],"dtype":"{key[1]}","device":"{key[2]}"}}'
            if len(self._cache) < 4096:
                self._cache[key] = text
        return text

    def summarize(self, value: Any, limit: int = 8) -> str | None:
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        tensor = torch.Tensor
        if isinstance(value, tensor):
            return self.one(value)
        if type(value) is tuple and len(value) == 1 and isinstance(value[0], tensor):
            return f"[{self.one(value[0])}]"  # model(x), the usual call: no list to build
        items: Any
        if isinstance(value, tuple | list):
            items = value
        elif isinstance(value, Mapping):
            items = value.values()
        else:
            return None
        parts = [self.one(v) for v in items if isinstance(v, tensor)][:limit]
        if not parts:
            return None
        return "[" + ",".join(parts) + "]"

    def summarize_call(self, args: Any, kwargs: Mapping[str, Any], limit: int = 8) -> str | None:
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        tensor = torch.Tensor
        if not any(isinstance(v, tensor) for v in kwargs.values()):
            return self.summarize(args, limit)  # model(x, use_cache=True): the usual list
        named = [(str(i), v) for i, v in enumerate(args)] + list(kwargs.items())
        parts = [f"{json.dumps(name)}:{self.one(v)}" for name, v in named if isinstance(v, tensor)][
            :limit
        ]
        if not parts:
            return None
        return "{" + ",".join(parts) + "}"


_summaries = _Summaries()
