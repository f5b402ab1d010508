"""What the launcher's environment says about this process: its rank for the resource, and
whether a parent process started glmtrace (``mp.spawn`` ranks that never call ``init()``).

Environment only: the core reads it at every ``init()`` without importing torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .torch import keys

ENV_RANKS = (("RANK", keys.RANK), ("LOCAL_RANK", keys.LOCAL_RANK), ("WORLD_SIZE", keys.WORLD_SIZE))

# Set by init(): child processes inherit it, and one without glmtrace started can tell.
INIT_PID_ENV = "GLMTRACE_INIT_PID"


def mark_initialised() -> None:
    """Note in the environment that this process started glmtrace (see :func:`_check_child`)."""
    os.environ[INIT_PID_ENV] = str(os.getpid())


def distributed_resource(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Rank, local rank and world size from the launcher's environment (torchrun sets them).

    Meant for the process resource: ``Resource.create({..., **distributed_resource()})``.
    Empty outside a distributed launch; never imports torch.

    Example::

        distributed_resource({"RANK": "1", "WORLD_SIZE": "2"})
        # {"glmtrace.distributed.rank": 1, "glmtrace.distributed.world_size": 2}
    """
    env = os.environ if environ is None else environ
    out: dict[str, int] = {}
    for name, key in ENV_RANKS:
        value = env.get(name, "").strip()
        if value.isdigit():
            out[key] = int(value)
    return out
