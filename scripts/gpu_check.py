"""Check glmtrace's CUDA paths on a real GPU: kernel spans, GPU timings, no hot-path syncs.

Runs a matmul + attention loop under ``glmtrace.profile()`` and ``glmtrace.cuda_span()`` and
asserts that:
  1. every cuda_span was resolved with the GPU clock and a positive ``glmtrace.gpu.duration_ms``,
     under its step span;
  2. profiler kernel spans exist, with positive durations, device/stream, grid and block,
     parented under the cuda_span that launched them (or its ancestors);
  3. no synchronisation was called from the training thread during the loop
     (torch.cuda.synchronize, Stream/Event.synchronize, Event.elapsed_time), apart from the
     one torch.profiler itself makes when a profiled window closes (reported separately).

Prints a report; exits 1 on failure. Without CUDA it says so and exits 0.

    python scripts/gpu_check.py
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any


def _counting(counter: Counter[str], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    main = threading.main_thread()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is main and counter["armed"]:
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            # torch.profiler synchronises when a profiled window closes: its own, documented
            # cost, only on profiled steps. Counted apart from everything else.
            if "torch/autograd/profiler" in caller or "torch/profiler" in caller:
                counter[f"profiler window end: {name}"] += 1
            else:
                counter[name] += 1
        return fn(*args, **kwargs)

    return wrapper


def _gpu_ms(span: Any) -> float:
    value = (span.attributes or {}).get("glmtrace.gpu.duration_ms")
    return float(value) if isinstance(value, int | float) else 0.0


def main() -> int:
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; nothing to check (pip install 'glmtrace[torch]')")
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; the GPU checks were skipped (exit 0).")
        return 0

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import glmtrace
    from glmtrace._internal.torch.cuda import resolve_pending

    exporter = InMemorySpanExporter()
    glmtrace.init(service_name="gpu-check", traces="none", logs="none", exporter=exporter)

    syncs: Counter[str] = Counter()
    patched = [
        (torch.cuda, "synchronize"),
        (torch.cuda.Event, "synchronize"),
        (torch.cuda.Event, "elapsed_time"),
        (torch.cuda.Stream, "synchronize"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name in patched]
    for owner, name, fn in originals:
        setattr(owner, name, _counting(syncs, f"{getattr(owner, '__name__', owner)}.{name}", fn))

    device = torch.device("cuda")
    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    q = torch.randn(8, 16, 512, 64, device=device, dtype=torch.float16)
    steps = 6
    try:
        torch.cuda.synchronize()  # warm-up, outside the measured loop
        syncs["armed"] = 1
        with glmtrace.profile(every=2, active=1, max_spans=5000) as prof:
            for i in range(steps):
                with glmtrace.span("step", {"i": i}):
                    with glmtrace.cuda_span("matmul"):
                        c = a @ b
                    with glmtrace.cuda_span("attention"):
                        torch.nn.functional.scaled_dot_product_attention(q, q, q)
                    c.add_(1)
                prof.step()
            syncs["armed"] = 0
    finally:
        syncs["armed"] = 0
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    resolved = resolve_pending(timeout=30)
    glmtrace.force_flush(10)
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def ancestors(span: Any) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    failures: list[str] = []
    cuda_spans = [s for s in spans if s.name in ("matmul", "attention")]
    kernels = [
        s for s in spans if (s.attributes or {}).get("glmtrace.torch.event.kind") == "kernel"
    ]
    print(f"device: {torch.cuda.get_device_name(0)}  torch {torch.__version__}")
    print(f"spans: {len(spans)}  cuda_span: {len(cuda_spans)}  kernel spans: {len(kernels)}")
    print(f"profile windows: {prof.windows}  results: {[r['spans'] for r in prof.results]}")

    if not resolved:
        failures.append("some cuda_span events were still pending after 30 s")
    if len(cuda_spans) != 2 * steps:
        failures.append(f"expected {2 * steps} cuda_span spans, got {len(cuda_spans)}")
    for s in cuda_spans:
        attrs = s.attributes or {}
        gpu_ms = attrs.get("glmtrace.gpu.duration_ms")
        parent = by_id.get(s.parent.span_id) if s.parent else None
        if attrs.get("glmtrace.clock") != "gpu" or not isinstance(gpu_ms, float) or gpu_ms <= 0:
            failures.append(f"{s.name}: clock={attrs.get('glmtrace.clock')} gpu_ms={gpu_ms}")
        if parent is None or parent.name != "step":
            failures.append(f"{s.name}: parent is {parent.name if parent else None}, not step")
    for name in ("matmul", "attention"):
        sample = [s for s in cuda_spans if s.name == name]
        if sample:
            ms = sorted(_gpu_ms(s) for s in sample)
            print(f"  cuda_span {name:9}: gpu ms median {ms[len(ms) // 2]:.3f}")

    if not kernels:
        failures.append("no kernel spans were produced by profile()")
    under_cuda_span = 0
    with_grid = 0
    for k in kernels:
        attrs = k.attributes or {}
        assert k.end_time is not None and k.start_time is not None
        if k.end_time - k.start_time <= 0:
            failures.append(f"kernel {k.name}: non-positive duration")
        if not str(attrs.get("glmtrace.gpu.device", "")).startswith("cuda:"):
            failures.append(f"kernel {k.name}: device {attrs.get('glmtrace.gpu.device')}")
        if "glmtrace.torch.kernel.grid" in attrs and "glmtrace.torch.kernel.block" in attrs:
            with_grid += 1
        chain = [k.name, *ancestors(k)]
        if any(n in ("matmul", "attention") for n in chain):
            under_cuda_span += 1
    if kernels and under_cuda_span == 0:
        failures.append("no kernel span sits under the cuda_span that launched it")
    if kernels and with_grid == 0:
        failures.append("no kernel span carries grid/block")
    for k in kernels[:5]:
        attrs = k.attributes or {}
        print(
            f"  kernel {k.name[:60]:60} {attrs.get('glmtrace.gpu.duration_ms', 0):.3f} ms"
            f" grid={attrs.get('glmtrace.torch.kernel.grid')} "
            f"block={attrs.get('glmtrace.torch.kernel.block')} <- {' < '.join(ancestors(k)[:3])}"
        )
    print(f"kernels under a cuda_span: {under_cuda_span}/{len(kernels)}; grid/block: {with_grid}")

    window_syncs = {k: v for k, v in syncs.items() if k.startswith("profiler window end") and v}
    hot_syncs = {k: v for k, v in syncs.items() if k != "armed" and v and k not in window_syncs}
    print(f"synchronisations on the training thread during the loop: {hot_syncs or 'none'}")
    print(f"(torch.profiler's own, at window ends: {window_syncs or 'none'})")
    if hot_syncs:
        failures.append(f"hot-path synchronisation: {hot_syncs}")

    glmtrace.shutdown()
    if failures:
        print("FAILED:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("OK: GPU timings resolved without hot-path syncs; kernel spans under their parents.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
