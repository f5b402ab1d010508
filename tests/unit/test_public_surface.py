"""Every type a public function or a public type's method returns is importable from glmtrace."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import glmtrace


def _glmtrace_classes(hint: Any) -> set[type]:
    found = {hint} if inspect.isclass(hint) and hint.__module__.startswith("glmtrace") else set()
    for arg in typing.get_args(hint):
        found |= _glmtrace_classes(arg)
    return found


def _returned(obj: Any) -> set[type]:
    try:
        hints = typing.get_type_hints(obj)
    except TypeError:  # not annotatable (a builtin slot)
        return set()
    return _glmtrace_classes(hints.get("return"))


def test_returned_types_are_exported() -> None:
    todo = [getattr(glmtrace, name) for name in glmtrace.__all__]
    seen: set[Any] = set()
    missing = []
    while todo:
        obj = todo.pop()
        if obj in seen:
            continue
        seen.add(obj)
        if inspect.isclass(obj):
            members = [
                m
                for n, m in vars(obj).items()
                if not n.startswith("_") or n in ("__enter__", "__aenter__", "__call__")
            ]
            todo.extend(m for m in members if inspect.isfunction(m))
            continue
        if not inspect.isfunction(obj):
            continue
        for cls in _returned(obj):
            if (
                getattr(glmtrace, cls.__name__, None) is not cls
                or cls.__name__ not in glmtrace.__all__
            ):
                missing.append(f"{obj.__qualname__} -> {cls.__qualname__}")
            todo.append(cls)
    assert missing == []


def test_testing_module_is_public() -> None:
    import glmtrace.testing

    assert set(glmtrace.testing.__all__) == {"Capture", "capture"}


def test_init_documents_every_parameter() -> None:
    doc = inspect.getdoc(glmtrace.init) or ""
    for name in inspect.signature(glmtrace.init).parameters:
        assert f"\n    {name}: " in doc, f"init()'s docstring does not document {name}"
