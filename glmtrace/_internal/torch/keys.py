"""Attribute keys written by the torch integration, each defined once."""

from __future__ import annotations

# Module spans
MODULE_PATH = "glmtrace.torch.module.path"
MODULE_TYPE = "glmtrace.torch.module.type"
MODULE_PHASE = "glmtrace.torch.module.phase"  # "forward" | "backward"
INPUTS = "glmtrace.torch.inputs"
OUTPUTS = "glmtrace.torch.outputs"

# CUDA timings
CLOCK = "glmtrace.clock"  # "gpu": measured with CUDA events; "cpu": host wall time
GPU_DURATION_MS = "glmtrace.gpu.duration_ms"
CPU_DURATION_MS = "glmtrace.cpu.duration_ms"
GPU_DEVICE = "glmtrace.gpu.device"
GPU_STREAM = "glmtrace.gpu.stream"
GPU_UNRESOLVED = "glmtrace.gpu.unresolved"

# Profiler events
EVENT_KIND = "glmtrace.torch.event.kind"  # cpu_op | kernel | memcpy | memset | collective | ...
EVENT_NAME = "glmtrace.torch.event.name"
EVENT_THREAD = "glmtrace.torch.event.thread"
EVENT_SHAPES = "glmtrace.torch.event.input_shapes"
EVENT_CORRELATION = "glmtrace.torch.event.correlation_id"
EVENT_LAUNCH_OP = "glmtrace.torch.event.launch_op"
KERNEL_GRID = "glmtrace.torch.kernel.grid"
KERNEL_BLOCK = "glmtrace.torch.kernel.block"
PROFILE_WINDOW = "glmtrace.torch.profile.window"
PROFILE_EVENTS = "glmtrace.torch.profile.events"
PROFILE_SPANS = "glmtrace.torch.profile.spans"
PROFILE_AGGREGATED = "glmtrace.torch.profile.aggregated"
PROFILE_TOP = "glmtrace.torch.profile.top"
PROFILE_COUNTS = "glmtrace.torch.profile.counts"

# DataLoader workers
WORKER_ID = "glmtrace.torch.worker.id"
WORKER_COUNT = "glmtrace.torch.worker.count"
WORKER_PID = "process.pid"
BATCH_SAMPLES = "glmtrace.torch.batch.samples"

# torch.distributed (also the resource attributes of every rank's process)
RANK = "glmtrace.distributed.rank"
LOCAL_RANK = "glmtrace.distributed.local_rank"
WORLD_SIZE = "glmtrace.distributed.world_size"
COLLECTIVE = "glmtrace.distributed.collective"
COLLECTIVE_ASYNC = "glmtrace.distributed.async"
COLLECTIVE_BYTES = "glmtrace.distributed.bytes"
