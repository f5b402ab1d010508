"""Instructions per decorated call, counted by valgrind's callgrind: figures load cannot move.

Each variant runs in its own interpreter under ``valgrind --tool=callgrind`` twice, with a
small and a large number of calls; the difference of the two totals divided by the difference
of the call counts is the cost of one call, with interpreter start-up, imports and set-up
cancelled. Every thread is counted, so the batch thread's export work (into a discarding
exporter, after the same 20,000/512/500 ms batch processor for every traced variant) is in.

The "OTLP/HTTP" variants export for real, to a receiver in this (parent) process that answers
200 to every request and is not counted: glmtrace through its native pipeline (the calling
thread's hand-off, the Rust thread's encoding and POSTs), raw OpenTelemetry through its Python
OTLP/HTTP exporter. Neither may drop a span.

    python bench/bench_instructions.py [--small 1000] [--large 6000] [--only VARIANT ...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

VARIANTS = (
    "bare call",
    "OTel no-op tracer, start_as_current_span",
    "raw OTel start_as_current_span",
    "raw OTel start_span+attach",
    "@glmtrace.stage",
    "@glmtrace.stage, sampled out",
    "raw OTel start_as_current_span, OTLP/HTTP",
    "@glmtrace.stage, native OTLP/HTTP",
)
_ENDPOINT = "GLMTRACE_BENCH_OTLP"  # the parent's receiver, for the children


def _traced(variant: str) -> tuple[Callable[[int], int], Callable[[], Any]]:
    """The decorated function for ``variant`` and what flushes its pipeline."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_core import Discard, attach_decorator, bounded_processor, raw_decorator
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NoOpTracer

    import glmtrace

    def work(x: int) -> int:
        return x + 1

    if variant == "bare call":
        return work, lambda: None
    if variant.startswith("OTel no-op"):
        return raw_decorator(NoOpTracer())(work), lambda: None
    if variant.startswith("raw OTel"):
        provider = TracerProvider()
        exporter: Any = Discard()
        if "OTLP" in variant:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=os.environ[_ENDPOINT] + "/v1/traces")
        provider.add_span_processor(bounded_processor(exporter))
        tracer = provider.get_tracer("bench")
        decorate = raw_decorator if "current" in variant else attach_decorator
        return decorate(tracer)(work), provider.shutdown
    if "native" in variant:
        return _native(glmtrace.stage(work))
    rate = 0.0 if "sampled out" in variant else 1.0
    glmtrace.init(
        traces="none", logs="none", capture_logs=False, exporter=Discard(), sample_rate=rate
    )

    def finish() -> None:
        glmtrace.shutdown(30)
        dropped = glmtrace.stats().get("custom", {}).get("dropped", 0)
        assert not dropped, f"{dropped} spans dropped"

    return glmtrace.stage(work), finish


def _native(fn: Callable[[int], int]) -> tuple[Callable[[int], int], Callable[[], Any]]:
    """glmtrace's native OTLP pipeline into the parent's receiver."""
    import glmtrace
    from glmtrace._internal import native_export

    assert native_export.available(), "glmtrace_native is not built"
    glmtrace.init(
        traces="otlp",
        endpoint=os.environ[_ENDPOINT],
        protocol="http/protobuf",
        logs="none",
        capture_logs=False,
        shutdown_timeout=60,
    )
    assert glmtrace.stats()["otlp"].get("native") == 1, "the native path is not active"

    def finish() -> None:
        glmtrace.shutdown(60)
        otlp = glmtrace.stats()["otlp"]
        assert not otlp.get("dropped") and otlp.get("exported"), otlp

    return fn, finish


class _Receiver(BaseHTTPRequestHandler):
    """Takes any OTLP/HTTP request and answers 200 with an empty response."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def child(variant: str, calls: int) -> None:
    fn, finish = _traced(variant)
    for i in range(200):  # first calls fill caches and import lazily: in both runs alike
        fn(i)
    for i in range(calls):
        fn(i)
    finish()


def count(variant: str, calls: int) -> int:
    """Instructions callgrind collected over a whole run of ``child(variant, calls)``."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            variant,
            str(calls),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in every run
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or not found:
        raise SystemExit(f"{variant} x {calls}: rc={done.returncode}\n{done.stderr[-3000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=6_000)
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at a time")
    parser.add_argument("--only", nargs="+", choices=VARIANTS, help="these variants only")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    variants = args.only or VARIANTS
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ[_ENDPOINT] = f"http://127.0.0.1:{server.server_address[1]}"
    runs = [(v, n) for v in variants for n in (args.small, args.large)]
    with ThreadPoolExecutor(args.jobs) as pool:
        totals = dict(zip(runs, pool.map(lambda run: count(*run), runs), strict=True))
    server.shutdown()
    per_call = {
        v: (totals[(v, args.large)] - totals[(v, args.small)]) / (args.large - args.small)
        for v in variants
    }
    raw = per_call.get("raw OTel start_as_current_span")
    print(f"instructions per call (callgrind, {args.large} - {args.small} calls):")
    for v in variants:
        ratio = f"{per_call[v] / raw:5.2f}x raw OTel" if raw else ""
        print(f"  {v:<42} {per_call[v]:>10,.0f}  {ratio}")
    pairs = [
        ("@glmtrace.stage", "raw OTel start_as_current_span", "discarding exporter"),
        ("@glmtrace.stage", "raw OTel start_span+attach", "discarding, vs start_span+attach"),
        (
            "@glmtrace.stage, native OTLP/HTTP",
            "raw OTel start_as_current_span, OTLP/HTTP",
            "both exporting OTLP/HTTP",
        ),
        (
            "@glmtrace.stage, native OTLP/HTTP",
            "raw OTel start_as_current_span",
            "native OTLP/HTTP vs raw OTel into a discarding exporter",
        ),
    ]
    for ours, theirs, what in pairs:
        if ours in per_call and theirs in per_call:
            print(f"{ours} / {theirs} ({what}) = {per_call[ours] / per_call[theirs]:.2f}x")


if __name__ == "__main__":
    main()
