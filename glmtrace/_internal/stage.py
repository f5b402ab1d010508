"""``@glmtrace.stage``: one span around a function, coroutine, generator or ``invoke()``.

Generators are driven step by step with the span's context attached only while their own
code runs, so an early ``break``, a ``close()`` from another context or a cancelled task ends
the span cleanly and never triggers OpenTelemetry's "Failed to detach context".
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Any, ParamSpec, TypeVar, cast, overload

from .attributes import AttributeValue, Limits, coerce_attributes
from .guard import report
from .keys import FUNCTION, STAGE
from .running import attach, detach
from .spans import record_end
from .thin import Source, ThinSpan, start

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


class _Stage:
    """Starts and ends the span of one decorated callable."""

    __slots__ = ("_coerced", "_limits", "attributes", "name", "source")

    def __init__(self, source: Source, name: str, attributes: Mapping[str, Any]):
        self.source = source
        self.name = name
        self.attributes = attributes
        self._limits: Limits | None = None
        self._coerced: Mapping[str, AttributeValue] = {}

    def coerced(self, limits: Limits) -> Mapping[str, AttributeValue]:
        """The attributes under ``limits``: coerced once per configuration (decoration usually
        happens before init(), under other limits and redaction rules)."""
        if limits is not self._limits:
            self._coerced = coerce_attributes(self.attributes, limits)
            self._limits = limits
        return self._coerced

    def start(self, active: bool = False) -> ThinSpan | None:
        """The span, current until it ends when ``active``; None when there is none."""
        try:
            source = self.source
            limits = source.limits
            return start(source.tracer, self.name, self.coerced(limits), limits, active)
        except Exception as exc:
            report("stage start", exc)
            return None

    @staticmethod
    def fail(span: ThinSpan, exc: BaseException) -> None:
        # No CancelledError exists unless asyncio is loaded: importing it here would cost a
        # program without asyncio ~12 ms at its first failing stage.
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and isinstance(exc, asyncio.CancelledError):
            span.set_attribute("glmtrace.cancelled", True)
        else:
            record_end(span, exc, span.limits)


def make_stage(source: Source, target: Any, name: str | None, attributes: Mapping[str, Any]) -> Any:
    if inspect.isclass(target):
        return _stage_class(source, target, name, attributes)
    stage_name = name or target.__name__
    info = _Stage(
        source,
        f"stage {stage_name}",
        {STAGE: stage_name, FUNCTION: target.__qualname__, **attributes},
    )
    if inspect.isasyncgenfunction(target):
        return _wrap_async_generator(info, target)
    if inspect.isgeneratorfunction(target):
        return _wrap_generator(info, target)
    if inspect.iscoroutinefunction(target):
        return _wrap_coroutine(info, target)
    return _wrap_function(info, target)


def _stage_class(source: Source, cls: C, name: str | None, attributes: Mapping[str, Any]) -> C:
    invoke = cls.__dict__.get("invoke")
    if invoke is None:
        raise TypeError(f"@glmtrace.stage on class {cls.__name__} needs an invoke() method")
    if isinstance(invoke, staticmethod | classmethod):
        wrapped = type(invoke)(
            make_stage(source, invoke.__func__, name or cls.__name__, attributes)
        )
    else:
        wrapped = make_stage(source, invoke, name or cls.__name__, attributes)
    cls.invoke = wrapped  # type: ignore[attr-defined]
    return cls


def _wrap_function(info: _Stage, fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        source = info.source
        tracer = source.tracer
        if tracer is None:
            return fn(*args, **kwargs)
        # info.start(True) without its Python call (a stage's most frequent path).
        try:
            limits = source.limits
            coerced = info._coerced if limits is info._limits else info.coerced(limits)
            span = start(tracer, info.name, coerced, limits, True)
        except Exception as exc:
            report("stage start", exc)
            span = None
        if span is None:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            info.fail(span, exc)
            raise
        finally:
            span.end()  # detaches first

    return wrapper


def _wrap_coroutine(info: _Stage, fn: Callable[P, Any]) -> Callable[P, Any]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        span = info.start(True) if info.source.tracer is not None else None
        if span is None:
            return await fn(*args, **kwargs)
        try:
            return await fn(*args, **kwargs)
        except BaseException as exc:
            info.fail(span, exc)
            raise
        finally:
            span.end()  # detaches first

    return wrapper


def _wrap_generator(
    info: _Stage, fn: Callable[P, Generator[Any, Any, Any]]
) -> Callable[P, Generator[Any, Any, Any]]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, Any]:
        span = info.start() if info.source.tracer is not None else None
        if span is None:
            return (yield from fn(*args, **kwargs))
        ctx = span.in_context()
        try:
            token = attach(ctx)
            try:
                inner = fn(*args, **kwargs)
            finally:
                detach(token)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                token = attach(ctx)
                try:
                    item = inner.throw(thrown) if thrown is not None else inner.send(sent)
                except StopIteration as stop:
                    return stop.value
                finally:
                    detach(token)
                thrown = None
                try:
                    sent = yield item
                except GeneratorExit:
                    token = attach(ctx)
                    try:
                        inner.close()
                    finally:
                        detach(token)
                    raise
                except BaseException as exc:  # consumer called .throw(): pass it inside
                    thrown = exc
        except GeneratorExit:
            raise
        except BaseException as exc:
            info.fail(span, exc)
            raise
        finally:
            span.end()

    return wrapper


def _wrap_async_generator(
    info: _Stage, fn: Callable[P, AsyncGenerator[Any, Any]]
) -> Callable[P, AsyncGenerator[Any, Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Any, Any]:
        span = info.start() if info.source.tracer is not None else None
        if span is None:
            async for item in fn(*args, **kwargs):
                yield item
            return
        ctx = span.in_context()
        try:
            token = attach(ctx)
            try:
                inner = fn(*args, **kwargs)
            finally:
                detach(token)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                token = attach(ctx)
                try:
                    step = inner.athrow(thrown) if thrown is not None else inner.asend(sent)
                    item = await step
                except StopAsyncIteration:
                    return
                finally:
                    detach(token)
                thrown = None
                try:
                    sent = yield item
                except GeneratorExit:
                    token = attach(ctx)
                    try:
                        await inner.aclose()
                    finally:
                        detach(token)
                    raise
                except BaseException as exc:
                    thrown = exc
        except GeneratorExit:
            raise
        except BaseException as exc:
            info.fail(span, exc)
            raise
        finally:
            span.end()

    return wrapper


@overload
def stage(
    source: Source, target: Callable[P, R], name: None, attributes: Mapping[str, Any]
) -> Callable[P, R]: ...
@overload
def stage(
    source: Source, target: None, name: str | None, attributes: Mapping[str, Any]
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def stage(source: Source, target: Any, name: str | None, attributes: Mapping[str, Any]) -> Any:
    """Decorator factory behind :func:`glmtrace.stage` (bare or called form)."""
    if target is not None:
        return make_stage(source, target, name, attributes)

    def decorate(fn: Any) -> Any:
        return make_stage(source, fn, name, attributes)

    return cast(Any, decorate)
