"""Processes and ranks: torch.distributed traces and DataLoader workers.

Importing this module never imports torch; each function does when called.

Example::

    import glmtrace.distributed

    glmtrace.distributed.instrument_collectives()
    for batch in loader:
        with glmtrace.distributed.share_trace("step"):   # every rank, one trace per step
            train_step(batch)
"""

from __future__ import annotations

from ._internal.torch.dataloader import TracedWorkerInit, worker_init_fn
from ._internal.torch.distributed import (
    SharedTrace,
    distributed_resource,
    instrument_collectives,
    share_trace,
    uninstrument_collectives,
)

__all__ = [
    "SharedTrace",
    "TracedWorkerInit",
    "distributed_resource",
    "instrument_collectives",
    "share_trace",
    "uninstrument_collectives",
    "worker_init_fn",
]
