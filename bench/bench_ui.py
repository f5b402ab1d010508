"""``glmtrace ui`` at scale: the trace list over 100,000 stored traces, and a 50,000-span
trace in headless Chromium (Debian's ``chromium``, driven by Playwright).

Targets (issue 13): first list page < 300 ms of server time; a 50,000-span trace interactive
(rows drawn, a click answered) in < 2 s. Absolute times on the 2-core build machine.

    python bench/bench_ui.py [--traces 100000] [--spans 50000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glmtrace._internal.store.database import Store
from glmtrace._internal.ui.queries import LocalSource
from glmtrace._internal.ui.server import App, make_server

BASE = 1_764_590_000 * 10**9
MS = 1_000_000
STEP = "d4" * 16
FLAT = "e5" * 16


def _row(
    trace: str,
    span: int,
    parent: int | None,
    name: str,
    start: int,
    end: int,
    attrs: dict[str, Any] | None = None,
    status: str = "UNSET",
) -> dict[str, Any]:
    return {
        "trace_id": trace,
        "span_id": f"{span:016x}",
        "parent_span_id": None if parent is None else f"{parent:016x}",
        "name": name,
        "kind": "INTERNAL",
        "start_ns": start,
        "end_ns": end,
        "status": status,
        "status_message": None,
        "service_name": "bench",
        "attributes": attrs or {},
        "events": [],
        "links": [],
        "resource": {"service.name": "bench", "process.pid": 1},
    }


def fill_many(store: Store, traces: int) -> None:
    """``traces`` three-span pipeline traces one millisecond apart, each with a log line."""
    batch: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    for i in range(traces):
        t, base = f"{i + 1:032x}", BASE + i * MS
        batch += [
            _row(t, 1, None, "pipeline", base, base + 900_000, {"session.id": f"s{i % 97}"}),
            _row(t, 2, 1, "stage preprocess", base, base + 300_000, {"glmtrace.stage": "pre"}),
            _row(
                t,
                3,
                1,
                "stage infer",
                base + 300_000,
                base + 900_000,
                {"glmtrace.stage": "infer"},
                "ERROR" if i % 50 == 0 else "UNSET",
            ),
        ]
        logs.append(
            {
                "log.id": f"l{i}",
                "timestamp_ns": base,
                "trace.id": t,
                "span.id": f"{2:016x}",
                "log.level": "INFO",
                "log.logger": "bench",
                "message": f"request {i} cleaned",
            }
        )
        if len(batch) >= 30_000:
            store.write_spans(batch)
            store.write_logs(logs)
            batch, logs = [], []
    store.write_spans(batch)
    store.write_logs(logs)


def fill_step(store: Store, spans: int) -> None:
    """A profiled step: 50 modules, CPU ops under them, 4 kernels per op on 4 streams."""
    end = BASE + 10**9
    rows = [_row(STEP, 1, None, "train step", BASE, end)]
    ops = (spans - 51) // 5
    per_module = ops // 50
    for m in range(50):
        m0 = BASE + m * 20 * MS
        rows.append(
            _row(
                STEP,
                2 + m,
                1,
                f"layers.{m}",
                m0,
                m0 + 20 * MS,
                {"glmtrace.torch.module.path": f"layers.{m}"},
            )
        )
    n = 100
    for o in range(ops):
        m = min(o // per_module, 49)
        o0 = BASE + m * 20 * MS + (o % per_module) * (20 * MS // per_module)
        op = n
        rows.append(
            _row(
                STEP, op, 2 + m, "aten::mm", o0, o0 + 2000, {"glmtrace.torch.event.kind": "cpu_op"}
            )
        )
        n += 1
        for k in range(4):
            k0 = o0 + 3000 + k * 500
            rows.append(
                _row(
                    STEP,
                    n,
                    op,
                    "cuda.kernel gemm",
                    k0,
                    k0 + 400,
                    {
                        "glmtrace.torch.event.kind": "kernel",
                        "glmtrace.gpu.device": "cuda:0",
                        "glmtrace.gpu.stream": 7 + k,
                    },
                )
            )
            n += 1
    while len(rows) < spans:
        rows.append(_row(STEP, n, 1, "tail", end - 1000, end))
        n += 1
    store.write_spans(rows)
    # The worst case for the waterfall: every span a CPU row of its own.
    flat = [_row(FLAT, 1, None, "step", BASE, end)]
    flat += [
        _row(
            FLAT,
            i + 2,
            1 + (i // 100) * 100 if i >= 100 else 1,
            f"op {i}",
            BASE + i * 19_000,
            BASE + i * 19_000 + 15_000,
        )
        for i in range(spans - 1)
    ]
    store.write_spans(flat)


def timed(fn: Callable[[], Any], repeats: int = 7) -> float:
    """Median wall time of ``fn`` in ms."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def browser_figures(url: str, trace_id: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        figures: dict[str, list[float]] = {"open": [], "scroll": [], "click": []}
        for _ in range(3):
            start = time.perf_counter()
            page.goto(f"{url}/trace/{trace_id}")
            page.wait_for_selector("body[data-ready='1'] .span-row")
            figures["open"].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            page.locator("#waterfall").evaluate("w => { w.scrollTop = w.scrollHeight / 2; }")
            page.wait_for_function(
                "() => [...document.querySelectorAll('.span-row')].some(r => "
                "parseFloat(r.style.top) > document.getElementById('waterfall').scrollTop)"
            )
            figures["scroll"].append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            page.locator(".span-row").nth(5).click()
            page.wait_for_selector("#details .span-name")
            figures["click"].append((time.perf_counter() - start) * 1000)
            rows = page.locator(".span-row, .gpu-row .bar").count()
        browser.close()
    return {**{k: statistics.median(v) for k, v in figures.items()}, "dom_rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--keep", type=Path, help="reuse/keep the generated store here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp())
    path = folder / "bench-ui.db"
    if not path.exists():
        start = time.perf_counter()
        store = Store(path)
        fill_many(store, args.traces)
        fill_step(store, args.spans)
        store.close()
        print(
            f"store: {args.traces:,} traces + 2 x {args.spans:,}-span traces written in "
            f"{time.perf_counter() - start:.1f} s ({path.stat().st_size / 1e6:.0f} MB)"
        )

    with open("/proc/loadavg") as load:
        print(f"load average before: {load.read().split()[0]} on this machine")
    app = App(LocalSource(path))
    first = timed(lambda: app.traces({}))
    print(
        f"trace list, first page of 50 over {args.traces:,} traces: {first:.1f} ms "
        "(target < 300 ms)"
    )
    for label, query in [
        ("status=error", {"status": "error"}),
        ("session.id", {"session": "s5"}),
        ("session.id matching nothing", {"session": "none"}),
        ("service + name", {"service": "bench", "name": "infer"}),
        ("log text", {"log": "request 99999 cleaned"}),
        ("page 100 (keyset)", {"before": f"{BASE + 95_000 * MS}:"}),
    ]:
        print(f"  filtered ({label}): {timed(lambda q=query: app.traces(q), 3):.1f} ms")

    server = make_server(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for trace_id, label in (
            (STEP, "profiled step (10k ops + 40k kernels)"),
            (FLAT, "flat (50k CPU rows)"),
        ):

            def fetch(t: str = trace_id) -> int:
                with urllib.request.urlopen(f"{url}/api/trace/{t}") as reply:
                    return len(reply.read())

            size = fetch()
            server_ms = timed(fetch, 3)
            cpu = time.process_time()  # the same work in this process: CPU, not wall, time
            for _ in range(3):
                json.dumps(app.waterfall(trace_id))
            cpu_ms = (time.process_time() - cpu) / 3 * 1000
            got = browser_figures(url, trace_id)
            print(
                f"{args.spans:,}-span trace, {label}: server {server_ms:.0f} ms wall, "
                f"{cpu_ms:.0f} ms CPU ({size / 1e6:.1f} MB JSON); in Chromium: open to rows drawn "
                f"{got['open']:.0f} ms, scroll {got['scroll']:.0f} ms, click to details "
                f"{got['click']:.0f} ms; {got['dom_rows']:.0f} rows/bars in the DOM "
                "(target: interactive < 2000 ms)"
            )
            print(json.dumps({"trace": label, **got, "server_ms": server_ms, "cpu_ms": cpu_ms}))
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
