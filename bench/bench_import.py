"""How long ``import glmtrace`` takes, and what dominates it.

Runs ``python -X importtime -c "import glmtrace"`` in fresh interpreters and reports the median
cumulative import time of ``glmtrace``, the median wall-clock cost of the import over an empty
interpreter (alternated with it), and the packages whose own import time adds up to most.

Two ways of loading the code, alternated in each round (which goes first swapped each round):

- **with bytecode**: ``.pyc`` files exist, as after ``pip install``; written once, before the
  rounds, under a temporary ``-X pycache_prefix``.
- **from source**: no ``.pyc`` (``PYTHONDONTWRITEBYTECODE=1``, which development machines here
  set): every module of glmtrace and of anything else without bytecode is compiled each time.

The breakdown is of the bytecode runs: compiling is not what an installed glmtrace pays.
``python -c`` finds ``glmtrace`` in the current directory first: run this from the checkout
whose import is to be measured.

    python bench/bench_import.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
MODES = ("with bytecode", "from source")


def command(mode: str, cache: str, *args: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if mode == "with bytecode":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return [sys.executable, "-X", f"pycache_prefix={cache}", *args], env
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return [sys.executable, *args], env


def importtime(mode: str, cache: str) -> dict[str, tuple[int, int, int]]:
    """Module -> (self us, cumulative us, depth) for what one fresh ``import glmtrace`` loads.

    Interpreter start-up (``site``, encodings) is left out: -X importtime prints a module
    after everything it imported, so glmtrace's imports are the lines between the last
    top-level line before ``glmtrace`` and ``glmtrace`` itself.
    """
    args, env = command(mode, cache, "-X", "importtime", "-c", "import glmtrace")
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    rows = []
    for match in LINE.finditer(done.stderr):
        own, cumulative, indent, name = match.groups()
        rows.append((name, int(own), int(cumulative), (len(indent) - 1) // 2))
    end = next(i for i, row in enumerate(rows) if row[0] == "glmtrace" and row[3] == 0)
    start = max((i for i in range(end) if rows[i][3] == 0), default=-1) + 1
    return {name: (own, cum, depth) for name, own, cum, depth in rows[start : end + 1]}


def wall(mode: str, cache: str, code: str) -> float:
    args, env = command(mode, cache, "-c", code)
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True)
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


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    totals: dict[str, list[int]] = {mode: [] for mode in MODES}
    walls: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_group: defaultdict[str, list[int]] = defaultdict(list)
    by_top: defaultdict[str, list[int]] = defaultdict(list)
    children: defaultdict[str, list[int]] = defaultdict(list)
    print(f"load average (1/5/15 min) before: {load()}")
    with tempfile.TemporaryDirectory(prefix="glmtrace-pyc-") as cache:
        wall("with bytecode", cache, "import glmtrace")  # writes the bytecode, not counted
        for i in range(args.runs):
            for mode in MODES if i % 2 == 0 else reversed(MODES):
                rows = importtime(mode, cache)
                totals[mode].append(rows["glmtrace"][1])
                for code in ("pass", "import glmtrace") if i % 2 else ("import glmtrace", "pass"):
                    walls[mode, code].append(wall(mode, cache, code))
                if mode != "with bytecode":
                    continue
                sums: defaultdict[str, int] = defaultdict(int)
                tops: defaultdict[str, int] = defaultdict(int)
                for name, (own, cumulative, depth) in rows.items():
                    sums[group(name)] += own
                    top = name.split(".")[0]
                    tops["standard library" if top in sys.stdlib_module_names else top] += own
                    if depth == 1:  # imported by glmtrace itself, with everything under it
                        children[name].append(cumulative)
                for name, us in sums.items():
                    by_group[name].append(us)
                for name, us in tops.items():
                    by_top[name].append(us)
    print(f"load average (1/5/15 min) after: {load()}")
    print(f"import glmtrace, cumulative under -X importtime ({args.runs} runs, median / min):")
    for mode in MODES:
        median, least = statistics.median(totals[mode]) / 1e3, min(totals[mode]) / 1e3
        print(f"  {mode:<15} {median:5.0f} ms / {least:3.0f} ms")
    print("wall clock of `python -c 'import glmtrace'` minus an empty interpreter (medians):")
    for mode in MODES:
        full = statistics.median(walls[mode, "import glmtrace"]) * 1e3
        empty = statistics.median(walls[mode, "pass"]) * 1e3
        print(f"  {mode:<15} {full:5.0f} ms - {empty:3.0f} ms = {full - empty:3.0f} ms")
    median_total = statistics.median(totals["with bytecode"]) / 1e3
    print("with bytecode, own import time by distribution (median ms):")
    for name, values in sorted(by_top.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {name:<40} {statistics.median(values) / 1e3:7.1f} ms")
    print("with bytecode, own import time by package (median ms, share of the total):")
    ranked = sorted(by_group.items(), key=lambda kv: -statistics.median(kv[1]))
    for name, values in ranked[: args.top]:
        ms = statistics.median(values) / 1e3
        print(f"  {name:<40} {ms:7.1f} ms  {100 * ms / median_total:4.0f}%")
    print("with bytecode, imported directly by glmtrace/__init__.py (cumulative, median ms):")
    ranked = sorted(children.items(), key=lambda kv: -statistics.median(kv[1]))
    for name, values in ranked[: args.top]:
        print(f"  {name:<40} {statistics.median(values) / 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
