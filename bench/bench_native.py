"""Native export path vs OpenTelemetry's Python OTLP exporter, alternated in one process.

1. Into the real Collector (exporters/collector/config.yaml, forwarding to the real Jaeger):
   spans/s end to end (``glmtrace.span`` on the calling thread, then flushed), and spans/s of
   the export pipeline alone (finished spans handed to the span processor as fast as it takes
   them, then flushed). Every round checks with the Collector's own receiver metrics that it
   accepted every span, and with ``stats()`` that none was dropped.
2. A black-holed endpoint (accepts, never answers): 100,000 traced calls, the worst and the
   99.9th-percentile call, RSS growth, and exported + dropped + pending == calls.

Usage: ``bash scripts/provision.sh && python bench/bench_native.py [--spans 50000] [--rounds 3]
[--protocol http/protobuf|grpc]`` (both paths speak the one protocol chosen).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import socket
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import glmtrace
from glmtrace._internal import native_export
from glmtrace._internal.runtime import DEFAULT
from glmtrace._internal.stats import STATS
from tests.integration.backends import (
    COLLECTOR_CONFIG,
    clean_env,
    collector_binary,
    free_port,
    port_open,
    spawn,
    start_jaeger,
    wait_until,
)

# The Collector's own receiver metrics, on a port of ours (config.yaml turns them off).
METRICS_OVERRIDE = """
service:
  telemetry:
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: {port}
"""


class Collector:
    def __init__(self, workdir: Path, jaeger_grpc: str, protocol: str) -> None:
        grpc_port, http_port, metrics = free_port(), free_port(), free_port()
        override = workdir / "metrics.yaml"
        override.write_text(METRICS_OVERRIDE.format(port=metrics))
        env = clean_env(
            GLMTRACE_COLLECTOR_LISTEN_OTLP_GRPC=f"127.0.0.1:{grpc_port}",
            GLMTRACE_COLLECTOR_LISTEN_OTLP_HTTP=f"127.0.0.1:{http_port}",
            GLMTRACE_COLLECTOR_LISTEN_FLUENT=f"127.0.0.1:{free_port()}",
            GLMTRACE_COLLECTOR_LISTEN_PROMETHEUS=f"127.0.0.1:{free_port()}",
            GLMTRACE_COLLECTOR_JAEGER_OTLP=jaeger_grpc,
            GLMTRACE_COLLECTOR_ES_URL=f"http://127.0.0.1:{free_port()}",  # logs unused here
            GLMTRACE_COLLECTOR_LOG_LEVEL="warn",
        )
        argv = [str(collector_binary()), f"--config={COLLECTOR_CONFIG}", f"--config={override}"]
        self.process = spawn("collector", argv, workdir / "collector.log", env, workdir)
        self.protocol = protocol
        port = http_port if protocol == "http/protobuf" else grpc_port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        wait_until(
            self.process,
            "OTLP and metrics ports",
            lambda: all(port_open(f"127.0.0.1:{p}") for p in (grpc_port, http_port, metrics)),
        )

    def accepted(self) -> int:
        """Spans the OTLP receiver accepted so far (its own counter)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as reply:
            text = reply.read().decode()
        pattern = r"^otelcol_receiver_accepted_spans(?:_total)?\{[^}]*\} (\S+)"  # http or grpc
        return int(sum(float(v) for v in re.findall(pattern, text, re.M)))


def _init(endpoint: str, protocol: str, native: bool, shutdown_timeout: float = 5.0) -> None:
    os.environ["GLMTRACE_NATIVE"] = "1" if native else "0"
    STATS.reset()
    glmtrace.init(
        service_name="bench-native",
        traces="otlp",
        endpoint=endpoint,
        protocol=protocol,
        logs="none",
        shutdown_timeout=shutdown_timeout,
    )
    active = glmtrace.stats().get("otlp", {}).get("native", 0)
    assert active == int(native), (native, glmtrace.stats())


def _processor() -> Any:
    (processor,) = DEFAULT._span_processors
    return processor


def _wait_for_room() -> None:
    """ "None dropped" needs a producer that waits when the queue is near full (both paths)."""
    processor = _processor()
    while processor.pending() > _ROOM:
        time.sleep(0.0005)


_ROOM = 15_000  # of the 20,000 both paths queue


def _spans_end_to_end(n: int) -> None:
    for i in range(n):
        with glmtrace.span("step", attributes={"i": i, "phase": "train"}):
            pass
        if i % 1000 == 0:
            _wait_for_room()


def _prepared(n: int) -> Callable[[int], None]:
    """Finished spans made beforehand; the timed part only hands them to the processor."""
    provider = DEFAULT._provider
    assert provider is not None
    tracer = TracerProvider(resource=provider.resource).get_tracer("bench")  # no processor
    spans = []
    for i in range(n):
        span = tracer.start_span("kernel", attributes={"i": i, "stream": 7, "name": "gemm"})
        span.end()
        spans.append(span)

    def feed(count: int) -> None:
        on_end = _processor().on_end
        for i, span in enumerate(spans[:count]):
            on_end(span)
            if i % 1000 == 0:
                _wait_for_room()

    return feed


def throughput(collector: Collector, n: int, native: bool, pipeline_only: bool) -> float:
    _init(collector.endpoint, collector.protocol, native)
    feed = _prepared(n) if pipeline_only else _spans_end_to_end
    glmtrace.force_flush(30)
    before_accepted, before_exported = (
        collector.accepted(),
        glmtrace.stats().get("otlp", {}).get("exported", 0),
    )
    start = time.perf_counter()
    feed(n)
    assert glmtrace.force_flush(60), "flush did not finish"
    elapsed = time.perf_counter() - start
    stats = glmtrace.stats().get("otlp", {})
    assert stats.get("dropped", 0) == 0, stats
    assert stats.get("exported", 0) - before_exported == n, stats
    glmtrace.shutdown()
    deadline = time.monotonic() + 20
    while collector.accepted() - before_accepted < n and time.monotonic() < deadline:
        time.sleep(0.2)
    assert collector.accepted() - before_accepted == n, "the Collector did not accept them all"
    return n / elapsed


def black_holed(n: int, protocol: str, native: bool) -> dict[str, float]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _init(endpoint, protocol, native, shutdown_timeout=1.0)
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worst, times = 0.0, []
    clock = time.perf_counter
    gc_pauses: list[float] = []
    gc_started = [0.0]

    def gc_timer(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = clock()
        else:
            gc_pauses.append(clock() - gc_started[0])

    gc.callbacks.append(gc_timer)
    for i in range(n):
        t0 = clock()
        with glmtrace.span("call", attributes={"i": i}):
            pass
        dt = clock() - t0
        times.append(dt)
        worst = max(worst, dt)
    pending = _processor().pending()
    gc.callbacks.remove(gc_timer)
    stats = dict(glmtrace.stats().get("otlp", {}))
    glmtrace.shutdown()
    after = glmtrace.stats().get("otlp", {})
    sock.close()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times.sort()
    accounted = after.get("exported", 0) + after.get("dropped", 0)
    return {
        "worst_ms": worst * 1e3,
        "p999_ms": times[int(len(times) * 0.999)] * 1e3,
        "median_us": times[len(times) // 2] * 1e6,
        "worst_gc_ms": max(gc_pauses, default=0.0) * 1e3,
        "maxrss_growth_mb": (rss_after - rss_before) / 1024,
        "dropped_while_running": stats.get("dropped", 0),
        "pending_at_end": pending,
        "all_accounted": float(accounted == n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--protocol", choices=["http/protobuf", "grpc"], default="http/protobuf")
    args = parser.parse_args()
    if not native_export.available():
        sys.exit("glmtrace_native is not built (scripts/setup.sh builds it when cargo is here)")
    work = Path(tempfile.mkdtemp(prefix="bench-native-"))
    with start_jaeger(work / "jaeger") as jaeger:
        collector = Collector(work, jaeger.otlp_grpc, args.protocol)
        try:
            for pipeline_only in (False, True):
                label = "export pipeline only" if pipeline_only else "end to end (glmtrace.span)"
                rates: dict[bool, list[float]] = {True: [], False: []}
                throughput(collector, 2000, True, pipeline_only)  # warm-up, both paths
                throughput(collector, 2000, False, pipeline_only)
                for _ in range(args.rounds):
                    for native in (True, False):
                        rates[native].append(
                            throughput(collector, args.spans, native, pipeline_only)
                        )
                best = {k: max(v) for k, v in rates.items()}
                print(
                    f"{args.protocol}, {label}: native {best[True]:,.0f} spans/s, "
                    f"python {best[False]:,.0f} spans/s, ratio {best[True] / best[False]:.2f}x "
                    f"(rounds: native {[round(r) for r in rates[True]]}, "
                    f"python {[round(r) for r in rates[False]]})"
                )
        finally:
            collector.process.stop()
    for native in (True, False):
        result = black_holed(args.calls, args.protocol, native)
        name = "native" if native else "python"
        print(
            f"black-holed {args.protocol}, {args.calls:,} calls, {name}: "
            + ", ".join(f"{k}={v:,.2f}" for k, v in result.items())
        )


if __name__ == "__main__":
    main()
