"""torch.distributed: rank attributes, one trace per step across ranks, timed collectives."""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Tracer

from ..attributes import AttributeValue
from ..carriers import extract, inject
from ..emitter import emitter_for
from ..guard import internal_errors, warn_once
from ..launch import INIT_PID_ENV
from ..launch import distributed_resource as distributed_resource
from ..runtime import DEFAULT
from ..spans import NOOP_HANDLE, SpanHandle, SpanScope
from . import keys, require_torch
from .batches import BATCHES

COLLECTIVES = (
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "reduce",
    "gather",
    "scatter",
    "all_to_all",
    "all_to_all_single",
    "barrier",
    "all_gather_object",
    "broadcast_object_list",
)

_originals: dict[str, Callable[..., Any]] = {}
_lock = threading.Lock()


def _check_child() -> None:
    """Warn once when a parent process started glmtrace but this one did not (mp.spawn ranks).

    ``mp.spawn`` starts fresh interpreters: ``init()`` in the parent does not reach them, and
    without a word every rank's spans would be missing.
    """
    if DEFAULT.tracer is not None:
        return
    parent = os.environ.get(INIT_PID_ENV, "")
    if parent and parent != str(os.getpid()):
        warn_once(
            "init-in-parent",
            "glmtrace.init() ran in the parent process (pid %s) but not in this process "
            "(pid %d): its spans are not recorded. Call glmtrace.init() in the function "
            "that mp.spawn / multiprocessing runs, in every rank.",
            parent,
            os.getpid(),
        )


def _note_ranks(dist: Any) -> None:
    """Put rank and world size on the resource once a process group is up (mp.spawn ranks).

    torchrun's ranks find them in the environment at ``init()``; ranks started by
    ``mp.spawn`` only know them from ``torch.distributed``. Spans started from now on carry
    them; earlier ones cannot be changed.
    """
    tracer = DEFAULT.tracer
    if not isinstance(tracer, Tracer) or keys.RANK in tracer.resource.attributes:
        return
    ranks: dict[str, AttributeValue] = {
        keys.RANK: int(dist.get_rank()),
        keys.WORLD_SIZE: int(dist.get_world_size()),
    }
    tracer.resource = tracer.resource.merge(Resource(ranks))
    em = emitter_for(tracer)
    if em is not None and em.tracer is tracer:
        em.resource = tracer.resource


def _rank_attributes(dist: Any, group: Any) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        keys.RANK: int(dist.get_rank()),
        keys.WORLD_SIZE: int(dist.get_world_size(group)),
    }
    local = os.environ.get("LOCAL_RANK", "")
    if local.isdigit():
        attrs[keys.LOCAL_RANK] = int(local)
    return attrs


class SharedTrace:
    """The context manager :func:`share_trace` returns."""

    def __init__(
        self, name: str, group: Any, src: int, attributes: Mapping[str, Any] | None
    ) -> None:
        self._name = name
        self._group = group
        self._src = src
        self._attributes = dict(attributes or {})
        self._scope: SpanScope | None = None
        self._token: object | None = None

    def __enter__(self) -> SpanHandle:
        dist = require_torch().distributed
        _check_child()
        if not (dist.is_available() and dist.is_initialized()):
            self._scope = DEFAULT.span(self._name, self._attributes)
            return _settled(self._scope.__enter__())
        with internal_errors("share_trace ranks"):
            self._attributes.update(_rank_attributes(dist, self._group))
            _note_ranks(dist)
        is_src = dist.get_rank() == self._src
        handle = NOOP_HANDLE
        if is_src:
            self._scope = DEFAULT.span(self._name, self._attributes)
            handle = self._scope.__enter__()
        carrier: dict[str, str] = {}
        if is_src:
            inject(carrier)
        # Every rank takes part in the broadcast, traced or not, or the others would hang.
        box: list[Any] = [carrier]
        broadcast = _originals.get("broadcast_object_list", dist.broadcast_object_list)
        try:
            broadcast(box, src=self._src, group=self._group)
        except BaseException:
            if self._scope is not None:  # end the source's span and detach its context
                self._scope.__exit__(*sys.exc_info())
                self._scope = None
            raise
        if not is_src:
            received = box[0] if isinstance(box[0], dict) else {}
            self._token = otel_context.attach(extract(received))
            self._scope = DEFAULT.span(self._name, self._attributes)
            handle = self._scope.__enter__()
        return _settled(handle)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.__exit__(exc_type, exc, tb)
        token, self._token = self._token, None
        if token is not None:
            with internal_errors("share_trace exit"):
                otel_context.detach(token)  # type: ignore[arg-type]


def _settled(handle: SpanHandle) -> SpanHandle:
    """A step sampled out takes the DataLoader batch waiting for it along (see .batches)."""
    with internal_errors("share_trace batch"):
        BATCHES.settle(handle._span.get_span_context())
    return handle


def share_trace(
    name: str = "step",
    *,
    group: Any = None,
    src: int = 0,
    attributes: Mapping[str, Any] | None = None,
) -> SharedTrace:
    """A span named ``name`` on every rank, all in rank ``src``'s trace (one trace per step).

    A collective: every rank of ``group`` must enter it, in the same order. Rank ``src``
    opens its span under its current span and broadcasts the span's context through the
    process group (``broadcast_object_list``, one small object); the other ranks' spans are
    children of it. Each span carries rank and world size, and so, from the first step on,
    does the process's resource (ranks started by ``mp.spawn`` have no ``RANK`` in their
    environment). Without an initialised process group it is a plain
    ``glmtrace.span(name)``. A DataLoader batch taken just before is adopted by this span
    (see :func:`worker_init_fn`).

    Example::

        for batch in loader:
            with glmtrace.distributed.share_trace("step"):
                loss = ddp_model(batch).sum()
                loss.backward()
    """
    return SharedTrace(name, group, src, attributes)


def _nbytes(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    tensor: Any = args[0] if args else kwargs.get("tensor")
    if hasattr(tensor, "element_size") and hasattr(tensor, "numel"):
        return int(tensor.numel() * tensor.element_size())
    return None


def _traced(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    span_name = f"torch.distributed {name}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if DEFAULT.tracer is None:
            return fn(*args, **kwargs)
        span = None
        with internal_errors("collective span"):
            span = DEFAULT.start_span(span_name, {keys.COLLECTIVE: name})
            if span is not None:
                import torch.distributed as dist

                span.attributes.update(_rank_attributes(dist, kwargs.get("group")))
                _note_ranks(dist)
                size = _nbytes(args, kwargs)
                if size is not None:
                    span.attributes[keys.COLLECTIVE_BYTES] = size
                if kwargs.get("async_op"):
                    span.attributes[keys.COLLECTIVE_ASYNC] = True
                span.attributes[keys.CLOCK] = "cpu"
                span.activate()
        error: BaseException | None = None
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if span is not None:
                with internal_errors("collective span"):
                    span.end(error=error)

    wrapper.__glmtrace_original__ = fn  # type: ignore[attr-defined]
    return wrapper


def instrument_collectives() -> None:
    """Time ``torch.distributed`` collectives (all_reduce, broadcast, all_gather, barrier...).

    Each call through ``torch.distributed.<name>`` becomes a ``torch.distributed <name>``
    span with rank, world size and bytes. With ``async_op=True`` (and on NCCL, whose calls
    return once queued) the span measures the CPU call only; the profiler shows the kernels.
    Idempotent; :func:`uninstrument_collectives` restores the originals.

    Example::

        glmtrace.distributed.instrument_collectives()
        dist.all_reduce(grad)   # -> span "torch.distributed all_reduce"
    """
    dist = require_torch().distributed
    _check_child()
    with _lock:
        if _originals:
            return
        for name in COLLECTIVES:
            original = getattr(dist, name, None)
            if original is not None:
                _originals[name] = original
                setattr(dist, name, _traced(name, original))


def uninstrument_collectives() -> None:
    """Restore the ``torch.distributed`` functions :func:`instrument_collectives` replaced."""
    with _lock:
        if not _originals:
            return
        dist = require_torch().distributed
        for name, original in _originals.items():
            setattr(dist, name, original)
        _originals.clear()
