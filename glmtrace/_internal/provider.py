"""The tracer provider: its resource, and the one proxy OpenTelemetry's global API hands out.

OpenTelemetry lets a program set the global tracer provider once, but glmtrace re-initialises
(new settings, new exporters). The global is therefore a proxy installed once, whose tracers
forward every call to the provider of the current initialisation (logfire's pattern): plain
OpenTelemetry spans made after a second ``init()``, even by tracers obtained before it, reach
the new exporters, and glmtrace spans under them get parents that arrive.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.util.types import Attributes

from .config import Options
from .launch import distributed_resource


class ProxyProvider(trace.TracerProvider):
    """Tracers that follow whichever provider glmtrace runs now (none: no-op spans)."""

    def __init__(self) -> None:
        self.provider: trace.TracerProvider = trace.NoOpTracerProvider()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> trace.Tracer:
        return _ProxyTracer(
            self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        )

    def __getattr__(self, name: str) -> Any:
        # add_span_processor, force_flush, resource, ... of the SDK provider behind.
        if name == "provider":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.provider, name)


class _ProxyTracer(trace.Tracer):
    def __init__(self, owner: ProxyProvider, args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._args = args
        self._for: trace.TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()

    def _current(self) -> trace.Tracer:
        provider = self._owner.provider
        if provider is not self._for:  # re-initialised since: a tracer of the new provider
            self._tracer = provider.get_tracer(*self._args)
            self._for = provider
        return self._tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        # The current tracer's own context manager, so it also works as a decorator.
        return self._current().start_as_current_span(*args, **kwargs)


GLOBAL = ProxyProvider()


def install(provider: trace.TracerProvider | None) -> None:
    """Put ``provider`` behind the global proxy, installing the proxy the first time.

    A provider the program set itself before ``init()`` stays the global one.
    """
    GLOBAL.provider = provider if provider is not None else trace.NoOpTracerProvider()
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):  # never set yet
        trace.set_tracer_provider(GLOBAL)


def build_resource(options: Options, named: bool) -> Resource:
    """The resource of every span: launcher rank < ``OTEL_RESOURCE_ATTRIBUTES`` <
    ``resource_attributes`` < ``service_name`` (when ``named``: set by argument or environment).

    OpenTelemetry's ``Resource.create`` parses ``OTEL_RESOURCE_ATTRIBUTES``. Its
    ``service.name`` (or one in ``resource_attributes``) beats glmtrace's default name.
    """

    resource = Resource(distributed_resource()).merge(
        Resource.create(dict(options.resource_attributes))
    )
    given = SERVICE_NAME in options.resource_attributes or bool(
        OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    )
    if named or not given:
        resource = resource.merge(Resource({SERVICE_NAME: options.service_name}))
    return resource
