"""Trace and span ids that the program's own ``random.seed()`` cannot repeat."""

from __future__ import annotations

import os
import random
import struct

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from .forks import after_fork_in_child


class ProcessIds(RandomIdGenerator):
    """Trace and span ids from a generator of glmtrace's own, reseeded in each forked child.

    OpenTelemetry's default draws from the global ``random``, which programs seed: every
    DataLoader worker runs ``random.seed(base_seed + worker_id)`` with the same base seed on
    every rank of a seeded job, and ``seed_everything(0)`` is common. Processes seeded alike
    made the same ids, and spans of one step trace replaced each other in the backends.
    """

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        self.getrandbits = self._random.getrandbits
        after_fork_in_child(self._reseed)

    def _reseed(self) -> None:
        self._random.seed(os.urandom(32))

    def generate_span_id(self) -> int:
        return self.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.getrandbits(128) or 1


IDS = ProcessIds()

# Span ids drawn ahead in bulk, for glmtrace's own spans: taking one is ``span_ids.pop()``
# (about 300 instructions with its share of the drawing, against 700 for a ``getrandbits(64)``
# call); when the list is empty (IndexError) ``refill_span_ids()`` draws the next 256 from the
# kernel (as ``os.urandom``: no seed to share either) and returns one. A forked child drops
# what its parent drew. Trace ids stay ``getrandbits(128)``: cutting 128-bit ints out of a bulk
# draw costs more than drawing each.
span_ids: list[int] = []
_BULK = struct.Struct("<256Q")


def refill_span_ids() -> int:
    drawn: list[int] = [word for word in _BULK.unpack(os.urandom(_BULK.size)) if word]
    # The caller's id comes from its own draw: between an extend and a pop of the shared
    # list, other threads may take all of it (seen with four threads making spans).
    mine = drawn.pop()
    span_ids.extend(drawn)
    return mine


after_fork_in_child(span_ids.clear)
