"""One glmtrace runtime: configuration, the tracer provider, sinks, flush and shutdown.

``glmtrace`` binds its public functions to a default :class:`Runtime`; tests build their own.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

from . import native_export, plugins, thin
from . import provider as global_provider
from .attributes import AttributeValue, Limits, attribute_count_limit
from .config import Options, resolve
from .errors import GlmtraceError
from .export.exporters import (
    MAX_REQUEST_BYTES,
    CountingExporter,
    SizeBoundedExporter,
    StoreSpanExporter,
    otlp_exporter,
)
from .export.processor import MAX_QUEUE, BoundedBatchProcessor, dropped_by
from .export.rows import current_span_id, current_trace_id
from .forks import after_fork_in_child
from .guard import internal_errors, quiet_exporter_logs, report
from .ids import IDS
from .launch import mark_initialised
from .logs.handler import install_record_factory, uninstall_record_factory
from .logs.pipeline import LogPipeline
from .signals import sigterm_handler
from .spans import SpanScope
from .stats import STATS

if TYPE_CHECKING:
    from .store.database import Store

log = logging.getLogger("glmtrace")


class Part(Protocol):
    """An integration holding spans the provider has not seen yet (CUDA events, profiler windows).

    Registered once with :meth:`Runtime.register`; ``force_flush()`` and ``shutdown()`` flush
    every part first, so what it holds reaches the exporters within the same deadline.
    """

    name: str

    def flush(self, timeout: float) -> bool:
        """Hand everything pending to the tracer within ``timeout`` seconds; True when all was."""
        ...


class Runtime:
    """Holds everything ``glmtrace.init()`` sets up; safe to re-initialise."""

    def __init__(self) -> None:
        self.tracer: trace.Tracer | None = None
        self.options: Options | None = None
        self.service_name = "unknown_service"  # the resource's, which OTEL_* may name
        self.sources: dict[str, str] = {}
        self.limits = Limits()
        self._provider: TracerProvider | None = None
        self._logs = LogPipeline()
        self._span_processors: list[BoundedBatchProcessor | native_export.NativeSpanProcessor] = []
        self._closers: list[Callable[[float], None]] = []
        self._lock = threading.RLock()
        self._started = False
        self._atexit = False
        self._threading_instrumented = False
        self._parts: list[Part] = []
        after_fork_in_child(self._renew_lock)

    def _renew_lock(self) -> None:
        """In a forked child: the parent's lock may be held by a thread the child lacks."""
        self._lock = threading.RLock()

    def register(self, part: Part) -> None:
        """Let flush and shutdown reach ``part`` (idempotent; parts outlive re-initialisation)."""
        with self._lock:
            if part not in self._parts:
                self._parts.append(part)

    def _flush_parts(self, budget: float) -> bool:
        ok = True
        for part in list(self._parts):
            flushed = False
            with internal_errors(f"flush {part.name}"):
                flushed = part.flush(budget)
            ok = flushed and ok
        return ok

    # ------------------------------------------------------------------ lifecycle

    def init(self, exporter: SpanExporter | None = None, **arguments: Any) -> Options:
        """See :func:`glmtrace.init`."""
        options, sources = resolve(arguments)  # raises ConfigError before touching anything
        with self._lock:
            if self._started:
                if options == self.options and exporter is None:
                    return options
                self.shutdown()
            self.options, self.sources = options, sources
            self.limits = Limits(
                options.max_attribute_length, options.redact_keys, attribute_count_limit()
            )
            self._started = True
            try:
                self._start(options, exporter)
            except GlmtraceError:  # a missing extra: say so, and leave nothing half-running
                self.shutdown(timeout=0.5)
                raise
            except Exception as exc:
                report("init", exc)
                self.shutdown(timeout=0.5)
            if not self._atexit:
                atexit.register(self.shutdown_at_exit)
                self._atexit = True
        return options

    def shutdown_at_exit(self) -> None:
        """:meth:`shutdown`, for the end of a process (``atexit``, pool workers)."""
        # Ctrl-C or SIGTERM while exiting: stop waiting for the flush, quietly.
        with contextlib.suppress(KeyboardInterrupt, SystemExit):
            self.shutdown()

    def _start(self, options: Options, exporter: SpanExporter | None) -> None:
        sampler: Sampler | None = None
        if options.sample_rate is not None:
            sampler = ParentBased(TraceIdRatioBased(options.sample_rate))
        resource = global_provider.build_resource(
            options, named=self.sources.get("service_name", "default") != "default"
        )
        self.service_name = str(resource.attributes.get("service.name", options.service_name))
        provider = TracerProvider(resource=resource, sampler=sampler)
        self._provider = provider
        provider.id_generator = IDS  # ids that random.seed() in the program cannot repeat
        store = _local_store(options)
        if store is not None and options.traces == "local":
            from .store import native_writer

            writer = native_writer.start(store, options.shutdown_timeout, MAX_QUEUE)
            if writer is not None:
                self._span_processors.append(writer)
                provider.add_span_processor(writer)
            else:
                self._add_exporter(provider, "local", StoreSpanExporter(store))
        elif options.traces == "otlp" and native_export.wanted(options):
            native = native_export.NativeSpanProcessor(options, MAX_QUEUE, MAX_REQUEST_BYTES)
            self._span_processors.append(native)
            provider.add_span_processor(native)
        elif options.traces == "otlp":
            self._add_exporter(
                provider, "otlp", SizeBoundedExporter("otlp", otlp_exporter(options))
            )
        elif options.traces != "none":  # an entry-point plugin (plugins.py)
            strict = self.sources.get("traces") == "argument"
            if found := plugins.start(plugins.SPAN_EXPORTERS, options.traces, options, strict):
                self._add_exporter(provider, options.traces, found)
        if exporter is not None:
            self._add_exporter(provider, "custom", exporter)
        from . import red_metrics  # stage/model histograms, if a metrics endpoint is set

        close_metrics = red_metrics.start(provider, options, resource)
        if close_metrics is not None:
            self._closers.append(close_metrics)
        global_provider.install(provider)  # raw OpenTelemetry code joins glmtrace's traces
        self.tracer = provider.get_tracer("glmtrace")
        mark_initialised()  # mp.spawn children that never call init() can then warn
        self._instrument_threading()
        quiet_exporter_logs()
        sigterm_handler(install=True, flush=self.shutdown_at_exit, budget=options.shutdown_timeout)
        install_record_factory()
        if options.capture_logs:
            strict = self.sources.get("logs") == "argument"
            self._logs.start(options, store, self.service_name, self.limits, strict)

    def _add_exporter(self, provider: TracerProvider, sink: str, exporter: SpanExporter) -> None:
        processor = BoundedBatchProcessor(sink, CountingExporter(sink, exporter))
        self._span_processors.append(processor)
        provider.add_span_processor(processor)

    def _instrument_threading(self) -> None:
        if self._threading_instrumented:
            return
        from opentelemetry.instrumentation.threading import ThreadingInstrumentor

        ThreadingInstrumentor().instrument()
        self._threading_instrumented = True

    def force_flush(self, timeout: float | None = None) -> bool:
        """See :func:`glmtrace.force_flush`."""
        budget = self._budget(timeout)
        return _bounded(lambda: self._flush(budget), budget)

    def _flush(self, budget: float) -> bool:
        ok = self._flush_parts(budget)
        if self._provider is not None:
            ok = self._provider.force_flush(int(budget * 1000)) and ok
        return self._logs.flush(budget) and ok

    def shutdown(self, timeout: float | None = None) -> bool:
        """See :func:`glmtrace.shutdown`."""
        with self._lock:
            if not self._started:
                return True
            self._started = False
            budget = self._budget(timeout)
            provider, logs = self._provider, self._logs
            processors, closers = self._span_processors, self._closers
            self.tracer, self._provider, self._logs = None, None, LogPipeline()
            self._span_processors, self._closers = [], []
            logs.release()
            global_provider.install(None)
            options, service_name = self.options, self.service_name

            def stop() -> bool:
                parts_ok = self._flush_parts(budget)
                ok = logs.shutdown(budget) and parts_ok
                for close in closers:
                    close(budget)
                dropped = dropped_by(processors)
                if provider is not None:
                    provider.shutdown()
                _record_run(options, service_name)
                # True only if the span exporters lost nothing on the way out (a black-holed or
                # refusing endpoint makes them count drops, however quickly they give up).
                return ok and dropped_by(processors) == dropped

            done = _bounded(stop, budget)
            for processor in processors:  # what the deadline left behind is lost: say so
                STATS.add(processor.sink, "dropped", processor.abandon())
            if not done:
                log.warning(
                    "glmtrace shutdown gave up after %.1fs; glmtrace.stats() counts what was not"
                    " sent as dropped or spooled (the next run replays the spool)",
                    budget,
                )
            if self._threading_instrumented:
                from opentelemetry.instrumentation.threading import ThreadingInstrumentor

                ThreadingInstrumentor().uninstrument()
                self._threading_instrumented = False
            uninstall_record_factory()
            sigterm_handler(install=False)
            return done

    def _budget(self, timeout: float | None) -> float:
        if timeout is not None:
            return timeout
        return self.options.shutdown_timeout if self.options else 2.0

    # ------------------------------------------------------------------ spans

    def start_span(
        self, name: str, attributes: Mapping[str, AttributeValue] | None = None
    ) -> thin.ThinSpan | None:
        """Start a thin span under the current context, or None when it would be sampled out."""
        return thin.start(self.tracer, name, attributes, self.limits)

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> SpanScope:
        """See :func:`glmtrace.span`."""
        return SpanScope(self, name, attributes)

    current_trace_id = staticmethod(current_trace_id)
    current_span_id = staticmethod(current_span_id)

    @staticmethod
    def stats() -> dict[str, dict[str, int]]:
        """See :func:`glmtrace.stats`."""
        return STATS.snapshot()


def _local_store(options: Options) -> Store | None:
    """The local store when spans or logs go to it; else None, and sqlite3 is not imported."""
    if not (options.traces == "local" or "local" in options.logs):
        return None
    from .store.database import Store  # here: sqlite3 and the store cost ~6 ms

    return Store(options.store)


def _record_run(options: Options | None, service_name: str) -> None:
    """Leave this process's counters in the local store, where ``doctor`` reads them."""
    if options is None or not (options.traces == "local" or "local" in options.logs):
        return
    with internal_errors("record run"):
        from .store.database import Store

        Store(options.store).record_run(service_name, STATS.snapshot())


def _bounded(fn: Callable[[], bool], timeout: float) -> bool:
    """Run ``fn`` on a daemon thread and wait at most ``timeout`` seconds for it.

    OpenTelemetry's exporters can ignore their timeouts when the endpoint is black-holed;
    the caller (often the interpreter's exit) must not wait for them.
    """
    result: list[bool] = []  # stays empty when fn raises

    @internal_errors("flush")
    def run() -> None:
        result.append(fn())

    worker = threading.Thread(target=run, name="glmtrace-flush", daemon=True)
    worker.start()
    worker.join(timeout + 0.2)
    return bool(result and result[0])


DEFAULT = Runtime()
