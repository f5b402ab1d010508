"""``instrument_torch(model)``: forward (and backward) of submodules as child spans.

Each selected module's ``forward`` is wrapped (an attribute on the instance; the class is
untouched) so that a fast-path span (see :mod:`..thin`) is current while it runs and ends
with ERROR status if it raises. Wrapping rather than forward hooks matters: PyTorch turns off
fused fast paths (``TransformerEncoderLayer``'s, +20% on CPU) on any module tree that carries
forward hooks, and a fused layer never calls its children, so they honestly get no span.
Backward spans use full backward hooks. Every glmtrace step runs under the guard: an internal
error is reported and the forward goes on.
"""

from __future__ import annotations

import fnmatch
import functools
import threading
import types
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..attributes import AttributeValue
from ..errors import ConfigError
from ..guard import report
from ..runtime import DEFAULT
from ..thin import ThinSpan, start
from . import keys, require_torch
from .summaries import summary_json

M = TypeVar("M")
Selector = str | type


def compiling() -> bool:
    """True while torch.compile or torch.export traces the code (Dynamo folds it to a constant)."""
    if not _is_compiling:
        import torch

        # torch.compiler.is_compiling arrived in torch 2.3; 2.2 has Dynamo's.
        _is_compiling.append(
            getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling
        )
    return bool(_is_compiling[0]())


_is_compiling: list[Callable[[], bool]] = []  # found once: every module call asks


@dataclass(frozen=True)
class _Settings:
    depth: int
    include: tuple[Selector, ...] | None
    exclude: tuple[Selector, ...]
    backward: bool


class _ModuleHooks:
    """One module's span name and static attributes, and its open backward spans per thread."""

    __slots__ = ("attributes", "local", "name")

    def __init__(self, path: str, module: Any, phase: str) -> None:
        label = path or type(module).__name__
        self.name = f"torch.module {label}" if phase == "forward" else f"torch.backward {label}"
        self.attributes: dict[str, AttributeValue] = {
            keys.MODULE_PATH: path,
            keys.MODULE_TYPE: type(module).__name__,
            keys.MODULE_PHASE: phase,
        }
        self.local = threading.local()

    def _stack(self) -> list[ThinSpan | None]:
        try:
            stack: list[ThinSpan | None] = self.local.stack
        except AttributeError:
            stack = self.local.stack = []
        return stack

    def traced(self, own: Any) -> Any:
        """A ``forward`` for the instance: the span around ``own`` (or the class's forward)."""
        name, attributes = self.name, self.attributes

        def forward(module: Any, *args: Any, **kwargs: Any) -> Any:
            run = own if own is not None else functools.partial(type(module).forward, module)
            # Under torch.compile/export the module is being traced into a graph, not run:
            # a span would time the tracing, and Dynamo cannot trace the span code anyway.
            tracer = DEFAULT.tracer
            if tracer is None or _is_compiling[0]():
                return run(*args, **kwargs)
            span = None
            try:
                span = start(tracer, name, attributes, DEFAULT.limits, True)
                if span is not None:
                    inputs = summary_json(args, kwargs)
                    if inputs is not None:
                        span.attributes[keys.INPUTS] = inputs
            except Exception as exc:
                report("torch module span", exc)
            if span is None:
                return run(*args, **kwargs)
            error: BaseException | None = None
            output = None
            try:
                output = run(*args, **kwargs)
                return output
            except BaseException as exc:
                error = exc
                raise
            finally:
                try:
                    outputs = summary_json(output) if error is None else None
                    if outputs is not None:
                        span.attributes[keys.OUTPUTS] = outputs
                    span.end(None, error)
                except Exception as exc:
                    report("torch module span", exc)

        forward.__glmtrace_forward__ = True  # type: ignore[attr-defined]
        return forward

    def backward_pre(self, module: Any, grad_output: Any) -> None:
        # Backward hooks do not make their span current: autograd may run them on its own
        # threads, where attaching a context could never be detached in order.
        stack = self._stack()
        if DEFAULT.tracer is None or compiling():
            stack.append(None)
            return
        try:
            stack.append(DEFAULT.start_span(self.name, self.attributes))
        except Exception as exc:
            stack.append(None)
            report("torch backward hook", exc)

    def backward_post(self, module: Any, grad_input: Any, grad_output: Any) -> None:
        stack = self._stack()
        span = stack.pop() if stack else None
        if span is None:
            return
        try:
            span.end()
        except Exception as exc:
            report("torch backward hook", exc)


@dataclass
class _Instrumentation:
    settings: _Settings
    handles: list[Any] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    # (module, its own instance-level forward before glmtrace, or None for the class's)
    wrapped: list[tuple[Any, Any]] = field(default_factory=list)

    def undo(self) -> None:
        for handle in self.handles:
            handle.remove()
        for module, own in self.wrapped:
            current = module.__dict__.get("forward")
            if getattr(getattr(current, "__func__", None), "__glmtrace_forward__", False):
                if own is None:
                    del module.forward
                else:
                    module.forward = own


_INSTRUMENTED: weakref.WeakKeyDictionary[Any, _Instrumentation] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _matches(path: str, module: Any, selectors: Iterable[Selector]) -> bool:
    for selector in selectors:
        if isinstance(selector, str):
            if fnmatch.fnmatchcase(path, selector):
                return True
        elif isinstance(module, selector):
            return True
    return False


def _selectors(argument: str, given: Iterable[Selector]) -> tuple[Selector, ...]:
    """``include``/``exclude`` checked up front: a bad entry would fail later, inside isinstance."""
    if isinstance(given, str | type):
        given = (given,)  # one pattern or class, not the letters of a pattern
    try:
        selectors = tuple(given)
    except TypeError:
        raise ConfigError(
            f"instrument_torch({argument}=...) needs a list of glob patterns or module classes,"
            f" got {given!r}"
        ) from None
    for selector in selectors:
        if not isinstance(selector, str | type):
            raise ConfigError(
                f"instrument_torch({argument}=...) takes glob patterns (str) or module classes,"
                f" got {selector!r}"
            )
    return selectors


def select_modules(model: Any, settings: _Settings) -> list[tuple[str, Any]]:
    """The (path, module) pairs to hook, in ``named_modules()`` order."""
    chosen = []
    for path, module in model.named_modules():
        level = path.count(".") + 1 if path else 0
        if settings.include is not None:
            if not _matches(path, module, settings.include):
                continue
        elif level > settings.depth:
            continue
        if settings.exclude and _matches(path, module, settings.exclude):
            continue
        chosen.append((path, module))
    return chosen


def instrument_torch(
    model: M,
    depth: int = 1,
    include: Iterable[Selector] | None = None,
    exclude: Iterable[Selector] | None = None,
    backward: bool = False,
) -> M:
    """Trace the forward (and, with ``backward=True``, backward) of a model's submodules.

    Each selected module's forward becomes a child span of the current span named
    ``torch.module <path>`` (the model itself: its class name), with summaries
    (``{shape, dtype, device}``) of its input and output tensors: a list for positional
    inputs, an object by name when there are keyword ones (``model(input_ids=...)``).
    ``depth`` selects the model (0) and its submodules down to that many levels; ``include``
    (glob patterns over module paths, or module classes) selects modules at any depth
    instead; ``exclude`` removes some.
    Calling it again with the same settings does nothing; with other settings it re-hooks.
    Backward spans (``torch.backward <path>``) use full backward hooks, which reject
    in-place operations on a hooked module's output (such as ``ReLU(inplace=True)``).

    Raises :class:`~glmtrace.MissingDependencyError` when torch is not installed and
    :class:`~glmtrace.ConfigError` for an include/exclude entry that is not a str or class.

    Example::

        model = glmtrace.instrument_torch(model, depth=2, exclude=["*.dropout"])
        with glmtrace.span("step"):
            loss = model(batch).sum()
    """
    torch = require_torch()
    compiling()  # finds torch's is_compiling once, for the forwards to call directly
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"instrument_torch() needs a torch.nn.Module, got {type(model).__name__}")
    settings = _Settings(
        depth=max(0, int(depth)),
        include=_selectors("include", include) if include is not None else None,
        exclude=_selectors("exclude", exclude or ()),
        backward=bool(backward),
    )
    with _LOCK:
        current = _INSTRUMENTED.get(model)
        if current is not None:
            if current.settings == settings:
                return model
            _remove(model)
        state = _Instrumentation(settings)
        try:
            for path, module in select_modules(model, settings):
                hooks = _ModuleHooks(path, module, "forward")
                own = module.__dict__.get("forward")
                # Bound with MethodType, so copy.deepcopy of the model rebinds it to the copy.
                module.forward = types.MethodType(hooks.traced(own), module)
                state.wrapped.append((module, own))
                if settings.backward:
                    back = _ModuleHooks(path, module, "backward")
                    state.handles.append(module.register_full_backward_pre_hook(back.backward_pre))
                    state.handles.append(module.register_full_backward_hook(back.backward_post))
                state.paths.append(path)
        except Exception:
            state.undo()
            raise
        _INSTRUMENTED[model] = state
    return model


def _remove(model: Any) -> bool:
    state = _INSTRUMENTED.pop(model, None)
    if state is None:
        return False
    state.undo()
    return True


def uninstrument_torch(model: M) -> M:
    """Remove every hook :func:`instrument_torch` added to ``model``; a no-op otherwise.

    Example::

        glmtrace.uninstrument_torch(model)
    """
    with _LOCK:
        _remove(model)
    return model


def instrumented_paths(model: Any) -> list[str]:
    """The module paths currently hooked on ``model`` (empty when not instrumented)."""
    state = _INSTRUMENTED.get(model)
    return list(state.paths) if state is not None else []
