"""Locust user for bench_load.py: GET /infer as fast as allowed, every response time recorded.

Locust rounds the response times in its own statistics (to whole milliseconds here); the
listener below keeps each one as measured, so bench_load.py computes exact percentiles.
Pacing: ``LOAD_RATE_PER_USER`` requests/s per user (unset: no wait, maximum load).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

from locust import FastHttpUser, between, constant_throughput, events, task

SAMPLES: list[tuple[float, float, bool]] = []  # (start, response ms, ok)
_rate = os.environ.get("LOAD_RATE_PER_USER")


@events.request.add_listener
def _record(start_time: float, response_time: float, exception: Any, **kwargs: Any) -> None:
    SAMPLES.append((start_time, response_time, exception is None))


@events.quitting.add_listener
def _dump(environment: Any, **kwargs: Any) -> None:
    with open(os.environ["LOAD_OUT"], "w") as out:
        json.dump(SAMPLES, out)


class Inference(FastHttpUser):
    wait_time = constant_throughput(float(_rate)) if _rate else between(0, 0)

    @task
    def infer(self) -> None:
        self.client.get(f"/infer?n={random.randrange(1000)}", name="/infer")
