"""The torch integration: module spans, CUDA timings, profiler kernels, workers and ranks.

Nothing in this package imports torch at import time: each entry point imports it when
called (:func:`require_torch`), so ``import glmtrace`` stays free of optional dependencies.
"""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError


def require_torch() -> Any:
    """The ``torch`` module, or :class:`MissingDependencyError` with the pip command."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("torch", "torch") from None
    return torch
