"""DataLoader workers whose spans join the trace of the step that consumes each batch.

:func:`worker_init_fn` returns a picklable callable for ``DataLoader(worker_init_fn=...)``.
In each worker it makes every batch fetch (``Dataset.__getitem__``/``__iter__`` and
``collate_fn``) run under a ``torch.dataloader.worker`` span of its own. The worker cannot know
which step will consume the batch (it is prefetched while an earlier step runs), so these spans
are recorded, not exported, and travel back with the batch; the main process exports them
under the step that takes the batch (:mod:`.batches`). A fetch that raises exports its spans
from the worker, as a trace of their own. Workers leave through ``os._exit`` and never run
``atexit`` hooks: each flushes when it exits. Spans the worker makes outside a fetch (your own
``worker_init_fn``) join the trace that was current when the iterator was created.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, Tracer, TracerProvider

from ..carriers import attach, inject
from ..emitter import emitter_for
from ..guard import internal_errors
from ..ids import IDS
from ..logs.handler import diverted
from ..runtime import DEFAULT
from . import keys, require_torch
from .batches import (
    Document,
    SpanRecord,
    WorkerBatch,
    creating_iterator,
    export,
    install_consumer,
    record,
    ship_logs,
)


class TracedWorkerInit:
    """``worker_init_fn`` that traces a DataLoader worker's batches."""

    def __init__(self, fn: Callable[[int], Any] | None = None) -> None:
        self.fn = fn
        self.carrier: dict[str, str] | None = None
        self.settings: dict[str, Any] = {}
        self.unwrapped: bool | None = None  # set when pickled (spawn); inherited with fork

    def __getstate__(self) -> dict[str, Any]:
        # Pickled by the spawn/forkserver start method while the iterator is being created.
        carrier: dict[str, str] = {}
        inject(carrier)
        settings = DEFAULT.options.as_arguments() if DEFAULT.options is not None else {}
        return {
            "fn": self.fn,
            "carrier": carrier,
            "settings": settings,
            "unwrapped": creating_iterator(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fn = state["fn"]
        self.carrier = state["carrier"]
        self.settings = state["settings"]
        self.unwrapped = state["unwrapped"]

    def __call__(self, worker_id: int) -> None:
        with internal_errors("dataloader worker_init_fn"):
            self._setup(worker_id)
        if self.fn is None:
            return
        if self.carrier is None:
            self.fn(worker_id)  # fork: the context of the thread that forked is current
            return
        with attach(self.carrier):
            self.fn(worker_id)

    def _setup(self, worker_id: int) -> None:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        if info is None:
            return  # called outside a worker: nothing to set up
        if DEFAULT.tracer is None and self.settings:
            DEFAULT.init(**self.settings)  # spawned worker: same settings as the parent
        if DEFAULT.tracer is None:
            return
        _flush_at_exit()
        unwrapped = self.unwrapped if self.unwrapped is not None else creating_iterator()
        if unwrapped:  # the main process unwraps batches: record each fetch with it
            _RECORDER.worker = {
                keys.WORKER_ID: worker_id,
                keys.WORKER_COUNT: int(info.num_workers),
                keys.WORKER_PID: os.getpid(),
            }
            _patch_fetchers()


class _Capture(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class _Recorder:
    """Runs one fetch with a tracer whose spans are kept for the batch instead of exported."""

    def __init__(self) -> None:
        self.worker: dict[str, Any] = {}
        self._capture = _Capture()
        self._tracer: Tracer | None = None

    def _capturing_tracer(self, exporting: Any) -> Tracer:
        if self._tracer is None:
            provider = TracerProvider(
                resource=exporting.resource, shutdown_on_exit=False, id_generator=IDS
            )
            provider.add_span_processor(self._capture)
            tracer = provider.get_tracer("glmtrace")
            assert isinstance(tracer, Tracer)
            self._tracer = tracer
        return self._tracer

    def fetch(self, original: Callable[[Any, Any], Any], fetcher: Any, index: Any) -> Any:
        exporting = DEFAULT.tracer
        if not isinstance(exporting, Tracer):
            return original(fetcher, index)
        # A root of its own (provisional) trace, whatever the worker inherited.
        token = otel_context.attach(Context())
        span = None
        with internal_errors("dataloader worker span"):
            DEFAULT.tracer = self._capturing_tracer(exporting)
            attributes = dict(self.worker)
            if isinstance(index, list):
                attributes[keys.BATCH_SAMPLES] = len(index)
            span = DEFAULT.start_span("torch.dataloader.worker", attributes)
            if span is not None:
                span.activate()
        with diverted() as logs:  # logged under the provisional trace: they travel too
            try:
                data = original(fetcher, index)
            except BaseException as exc:
                spans = self._finish(span, token, exporting, exc)
                self._export_here(spans, logs, exc)
                raise
        return WorkerBatch(data, self._finish(span, token, exporting, None), logs)

    def _finish(
        self, span: Any, token: object, exporting: Tracer, error: BaseException | None
    ) -> list[SpanRecord]:
        try:
            with internal_errors("dataloader worker span"):
                if span is not None:
                    span.end(error=None if isinstance(error, StopIteration) else error)
        finally:
            DEFAULT.tracer = exporting
            otel_context.detach(token)  # type: ignore[arg-type]
        captured, self._capture.spans = self._capture.spans, []
        with internal_errors("dataloader worker span"):
            return [record(s) for s in captured]
        return []

    @staticmethod
    def _export_here(spans: list[SpanRecord], logs: list[Document], error: BaseException) -> None:
        """A fetch that raised sends no batch: its spans and logs leave from the worker."""
        ship_logs(spans, logs, None)
        if isinstance(error, StopIteration) and len(spans) <= 1:
            return  # an IterableDataset ran out: nothing happened worth a span
        em = emitter_for(DEFAULT.tracer)
        if em is not None:
            export(em, spans, None)


_RECORDER = _Recorder()


def _patch_fetchers() -> None:
    """Route every fetch of this worker process through the recorder (idempotent)."""
    from torch.utils.data._utils import fetch

    for cls in (fetch._MapDatasetFetcher, fetch._IterableDatasetFetcher):
        if getattr(cls.fetch, "__glmtrace_original__", None) is None:
            setattr(cls, "fetch", _recorded(cls.fetch))  # noqa: B010 (mypy: method)


def _recorded(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(original)
    def fetch(self: Any, possibly_batched_index: Any) -> Any:
        return _RECORDER.fetch(original, self, possibly_batched_index)

    fetch.__glmtrace_original__ = original  # type: ignore[attr-defined]
    return fetch


def _flush_at_exit() -> None:
    """Flush when the worker exits: workers leave through ``os._exit``, skipping ``atexit``."""
    from multiprocessing import util

    @internal_errors("dataloader worker exit")
    def finish() -> None:
        DEFAULT.force_flush()

    # multiprocessing runs finalizers from Process._bootstrap before os._exit.
    util.Finalize(None, finish, exitpriority=100)


def worker_init_fn(fn: Callable[[int], Any] | None = None) -> TracedWorkerInit:
    """A ``worker_init_fn`` whose workers' spans join the trace of the step using each batch.

    ``fn``, when given, is your own ``worker_init_fn`` and runs after. Each batch a worker
    fetches gets a ``torch.dataloader.worker`` span (worker id, process id, samples); spans
    in your dataset and collate code are its children. The main process exports them under
    the first span it opens after taking the batch (the step), with ``fork``, ``spawn`` or
    ``forkserver`` workers, persistent or not.

    Example::

        loader = DataLoader(dataset, num_workers=4,
                            worker_init_fn=glmtrace.distributed.worker_init_fn())
        for batch in loader:
            with glmtrace.distributed.share_trace("step"):   # or glmtrace.span("step")
                train_step(batch)
    """
    require_torch()
    install_consumer()
    return TracedWorkerInit(fn)
