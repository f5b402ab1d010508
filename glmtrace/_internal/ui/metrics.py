"""Stage and model RED metrics (rate, errors, duration) over a window: one computation that
the web app's metrics page and ``glmtrace stats`` both print.

Percentiles interpolate linearly between the two nearest ranks (numpy's default "linear"
method), so a P95 over 20 calls is not simply the slowest call.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .queries import Source

BUCKETS = 30
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 100 * 366 * 86400


@dataclass(frozen=True)
class Window:
    """[start_ns, end_ns]: what the metrics cover; ``label`` as the user chose it."""

    start_ns: int
    end_ns: int
    label: str

    @property
    def seconds(self) -> float:
        return max(self.end_ns - self.start_ns, 1) / 1e9


def parse_window(text: str) -> float | None:
    """Seconds in "90s", "15m", "1h", "7d"; None for "all". ValueError when unreadable."""
    text = text.strip().lower()
    if text == "all":
        return None
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not found or float(found.group(1)) <= 0:
        raise ValueError(f"window {text!r}: give a number with s, m, h or d (e.g. 1h), or 'all'")
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if seconds > MAX_WINDOW_S:  # past it nanosecond bounds overflow SQLite's integers
        raise ValueError(f"window {text!r}: at most {MAX_WINDOW_S // 86400}d, or 'all'")
    return seconds


def window(source: Source, text: str) -> Window:
    """The window ``text`` long that ends at the newest span in the store.

    Ending at the newest data rather than at "now" keeps a store recorded yesterday readable.
    """
    seconds = parse_window(text)
    newest = source.newest_ns() or 0
    if seconds is None:
        return Window(source.oldest_ns() or 0, newest, "all")
    return Window(newest - int(seconds * 1e9), newest, text.strip().lower())


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of ascending ``ordered``, linearly interpolated."""
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _group(
    key: str, calls: list[tuple[int, float, bool]], win: Window, buckets: int
) -> dict[str, Any]:
    durations = sorted(d for _, d, _ in calls)
    errors = sum(1 for _, _, e in calls if e)
    width = max(win.end_ns - win.start_ns, 1) / buckets
    per_bucket: defaultdict[int, list[float]] = defaultdict(list)
    for start, duration, _ in calls:
        per_bucket[min(int((start - win.start_ns) / width), buckets - 1)].append(duration)
    series = []
    for i in range(buckets):
        values = sorted(per_bucket.get(i, []))
        series.append(
            {
                "start_ns": int(win.start_ns + i * width),
                "count": len(values),
                "p95_ms": round(percentile(values, 95), 3) if values else None,
            }
        )
    return {
        "key": key,
        "count": len(calls),
        "errors": errors,
        "error_rate": errors / len(calls),
        "qps": len(calls) / win.seconds,
        "p50_ms": percentile(durations, 50),
        "p95_ms": percentile(durations, 95),
        "p99_ms": percentile(durations, 99),
        "max_ms": durations[-1],
        "series": series,
    }


def compute(rows: Iterable[Sequence[Any]], win: Window, buckets: int = BUCKETS) -> dict[str, Any]:
    """Per stage and per model: count, QPS, P50/P95/P99 (ms), error rate, a time series.

    ``rows`` are (start_ns, end_ns, status, stage, model), as ``LocalSource.metric_rows``
    returns them.
    """
    stages: defaultdict[str, list[tuple[int, float, bool]]] = defaultdict(list)
    models: defaultdict[str, list[tuple[int, float, bool]]] = defaultdict(list)
    for start, end, status, stage, model in rows:
        call = (int(start), (int(end) - int(start)) / 1e6, status == "ERROR")
        if stage is not None:
            stages[str(stage)].append(call)
        if model is not None:
            models[str(model)].append(call)
    return {
        "window": {
            "start_ns": win.start_ns,
            "end_ns": win.end_ns,
            "seconds": win.seconds,
            "label": win.label,
        },
        "stages": [_group(k, v, win, buckets) for k, v in sorted(stages.items())],
        "models": [_group(k, v, win, buckets) for k, v in sorted(models.items())],
    }


def stage_metrics(source: Source, window_text: str) -> dict[str, Any]:
    """The metrics of the store behind ``source`` over the window ``window_text`` (e.g. 1h)."""
    win = window(source, window_text)
    return compute(source.metric_rows(win.start_ns, win.end_ns), win)
