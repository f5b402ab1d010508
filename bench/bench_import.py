"""How long ``import glmtrace`` takes, and what dominates it.

Runs ``python -X importtime -c "import glmtrace"`` in fresh interpreters and reports the median
cumulative import time of ``glmtrace``, the median wall-clock cost of the import over an empty
interpreter (alternated with it), and the packages whose own import time adds up to most.

    python bench/bench_import.py [--runs 9]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict

LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtime() -> dict[str, tuple[int, int, int]]:
    """Module -> (self us, cumulative us, depth) for what one fresh ``import glmtrace`` loads.

    Interpreter start-up (``site``, encodings) is left out: -X importtime prints a module
    after everything it imported, so glmtrace's imports are the lines between the last
    top-level line before ``glmtrace`` and ``glmtrace`` itself.
    """
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import glmtrace"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for match in LINE.finditer(done.stderr):
        own, cumulative, indent, name = match.groups()
        rows.append((name, int(own), int(cumulative), (len(indent) - 1) // 2))
    end = next(i for i, row in enumerate(rows) if row[0] == "glmtrace" and row[3] == 0)
    start = max((i for i in range(end) if rows[i][3] == 0), default=-1) + 1
    return {name: (own, cum, depth) for name, own, cum, depth in rows[start : end + 1]}


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def group(name: str) -> str:
    """The package a module's import time is charged to in the summary."""
    parts = name.split(".")
    if parts[0] == "glmtrace":
        return name
    if parts[0] in ("opentelemetry", "google") and len(parts) > 1:
        depth = 3 if parts[:2] in (["opentelemetry", "sdk"], ["opentelemetry", "exporter"]) else 2
        return ".".join(parts[:depth])
    return parts[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    totals: list[int] = []
    by_group: defaultdict[str, list[int]] = defaultdict(list)
    by_top: defaultdict[str, list[int]] = defaultdict(list)
    children: defaultdict[str, list[int]] = defaultdict(list)
    empty: list[float] = []
    full: list[float] = []
    for i in range(args.runs):
        rows = importtime()
        totals.append(rows["glmtrace"][1])
        sums: defaultdict[str, int] = defaultdict(int)
        for name, (own, cumulative, depth) in rows.items():
            sums[group(name)] += own
            if depth == 1:  # imported by glmtrace itself, with everything under it
                children[name].append(cumulative)
        for name, us in sums.items():
            by_group[name].append(us)
        tops: defaultdict[str, int] = defaultdict(int)
        for name, (own, _, _) in rows.items():
            top = name.split(".")[0]
            tops["standard library" if top in sys.stdlib_module_names else top] += own
        for name, us in tops.items():
            by_top[name].append(us)
        pair = [("pass", empty), ("import glmtrace", full)]
        for code, out in pair if i % 2 == 0 else reversed(pair):
            out.append(wall(code))
    median_total = statistics.median(totals) / 1e3
    print(
        f"import glmtrace: {median_total:.0f} ms median, {min(totals) / 1e3:.0f} ms min "
        f"cumulative (-X importtime, {args.runs} runs)"
    )
    full_ms, empty_ms = statistics.median(full) * 1e3, statistics.median(empty) * 1e3
    print(
        f"wall clock: {full_ms:.0f} ms vs {empty_ms:.0f} ms for an empty interpreter "
        f"= {full_ms - empty_ms:.0f} ms (medians)"
    )
    print("own import time by distribution (median ms):")
    for name, values in sorted(by_top.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {name:<40} {statistics.median(values) / 1e3:7.1f} ms")
    print("own import time by package (median ms, share of the total):")
    ranked = sorted(by_group.items(), key=lambda kv: -statistics.median(kv[1]))
    for name, values in ranked[: args.top]:
        ms = statistics.median(values) / 1e3
        print(f"  {name:<40} {ms:7.1f} ms  {100 * ms / median_total:4.0f}%")
    print("imported directly by glmtrace/__init__.py (cumulative, median ms):")
    ranked = sorted(children.items(), key=lambda kv: -statistics.median(kv[1]))
    for name, values in ranked[: args.top]:
        print(f"  {name:<40} {statistics.median(values) / 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
