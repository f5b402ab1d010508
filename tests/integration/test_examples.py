"""The examples, run as users run them, against the local store and the real Jaeger.

Each example runs in a fresh interpreter (strict mode: an internal error fails it). The traces
are then read back (from the store, or through Jaeger's query API) and their exact structure is
checked: every span kept, in the right trace, under the right parent; logs under their spans.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.remote.jaeger import jaeger_recent, jaeger_trace
from glmtrace._internal.store.database import Store

from .backends import Jaeger

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Rows = list[dict[str, Any]]


def run_example(script: str, args: list[str], tmp_path: Path, env: dict[str, str]) -> Path:
    """Run an example in ``tmp_path``; returns the local store it wrote (logs, maybe spans)."""
    store = tmp_path / "glmtrace.db"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GLMTRACE_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path,
        env={**clean, "GLMTRACE_STRICT": "1", "GLMTRACE_STORE": str(store), **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return store


def from_jaeger(jaeger: Jaeger, service: str, complete: Callable[[Rows], bool]) -> Rows:
    """Every span of ``service`` in Jaeger, once ``complete(rows)`` says all have arrived."""
    deadline = time.monotonic() + 60
    rows: Rows = []
    while time.monotonic() < deadline:
        found = jaeger_recent(jaeger.query_url, service, limit=100)
        rows = [r for t in found for r in jaeger_trace(jaeger.query_url, t.trace_id)]
        if complete(rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"Jaeger holds {len(rows)} spans of {service}: incomplete")


def children(rows: Rows) -> dict[str | None, Rows]:
    out: dict[str | None, Rows] = {}
    for row in rows:
        out.setdefault(row["parent_span_id"], []).append(row)
    return out


def names(rows: Rows) -> Counter[str]:
    return Counter(r["name"] for r in rows)


def attrs(row: dict[str, Any], key: str) -> Any:
    value = row["attributes"][key]
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


# ------------------------------------------------------------------------------- DDP training

WORLD, SAMPLES, BATCH, EPOCHS = 2, 32, 4, 2
STEPS = SAMPLES // WORLD // BATCH  # per epoch and rank
SPANS_PER_RANK_STEP = 1 + 1 + BATCH + 1 + 3 + 1  # step, worker, decodes, collate, model, reduce


def expected_batch(rank: int, epoch: int, step: int) -> list[int]:
    """The sample indices DistributedSampler gives ``rank`` at ``step`` of ``epoch``."""
    sampler = torch.utils.data.distributed.DistributedSampler(
        range(SAMPLES), num_replicas=WORLD, rank=rank, seed=0
    )
    sampler.set_epoch(epoch)
    order = list(sampler)
    return order[step * BATCH : (step + 1) * BATCH]


def check_ddp(rows: Rows, logs: list[dict[str, Any]]) -> None:
    assert len(rows) == EPOCHS * STEPS * WORLD * SPANS_PER_RANK_STEP  # every span, once
    assert len({(r["trace_id"], r["span_id"]) for r in rows}) == len(rows)
    by_parent = children(rows)
    roots = by_parent[None]
    assert names(roots) == {"train step": EPOCHS * STEPS}  # one trace per step, nothing else
    seen = set()
    for root in roots:
        trace = [r for r in rows if r["trace_id"] == root["trace_id"]]
        assert len(trace) == WORLD * SPANS_PER_RANK_STEP
        epoch, step = root["attributes"]["epoch"], root["attributes"]["step"]
        seen.add((epoch, step))
        (follower,) = [r for r in by_parent[root["span_id"]] if r["name"] == "train step"]
        for rank, step_span in ((0, root), (1, follower)):
            assert step_span["resource"]["glmtrace.distributed.rank"] == rank
            assert step_span["attributes"]["glmtrace.distributed.rank"] == rank
            assert (step_span["attributes"]["epoch"], step_span["attributes"]["step"]) == (
                epoch,
                step,
            )
            under = [r for r in by_parent[step_span["span_id"]] if r["name"] != "train step"]
            assert names(under) == {
                "torch.dataloader.worker": 1,
                "torch.module SmallConvNet": 1,
                "torch.distributed all_reduce": 1,
            }
            spans = {r["name"]: r for r in under}
            worker = spans["torch.dataloader.worker"]
            assert worker["resource"]["glmtrace.distributed.rank"] == rank
            loaded = by_parent[worker["span_id"]]
            assert names(loaded) == {"decode": BATCH, "collate": 1}
            indices = sorted(r["attributes"]["index"] for r in loaded if r["name"] == "decode")
            assert indices == sorted(expected_batch(rank, epoch, step))  # the batch it used
            model = spans["torch.module SmallConvNet"]
            assert names(by_parent[model["span_id"]]) == {
                "torch.module features": 1,
                "torch.module classifier": 1,
            }
        (log,) = [d for d in logs if d["message"].startswith(f"epoch {epoch} step {step} loss")]
        assert (log["trace.id"], log["span.id"]) == (root["trace_id"], root["span_id"])
    assert seen == {(e, s) for e in range(EPOCHS) for s in range(STEPS)}


def ddp_args(service: str, start_method: str, persistent: bool) -> list[str]:
    args = ["--epochs", str(EPOCHS), "--samples", str(SAMPLES), "--batch-size", str(BATCH)]
    args += ["--workers", "2", "--start-method", start_method, "--service", service]
    return args + (["--persistent"] if persistent else [])


def test_ddp_training_in_the_local_store(tmp_path: Path) -> None:
    """Fork workers, recreated each epoch: every step's trace is complete in the store."""
    store = run_example("ddp_train/train.py", ddp_args("ddp", "fork", False), tmp_path, {})
    check_ddp(Store(store).all_spans(), Store(store).all_logs())


def test_ddp_training_in_jaeger(tmp_path: Path, jaeger: Jaeger) -> None:
    """Spawned persistent workers, over OTLP: Jaeger holds each step's trace, complete."""
    service = f"ddp-{uuid.uuid4().hex[:8]}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp_grpc}", "GLMTRACE_LOGS": "local"}
    store = run_example("ddp_train/train.py", ddp_args(service, "spawn", True), tmp_path, env)
    total = EPOCHS * STEPS * WORLD * SPANS_PER_RANK_STEP
    rows = from_jaeger(jaeger, service, lambda rows: len(rows) >= total)
    check_ddp(rows, Store(store).all_logs())


# ------------------------------------------------------------------------- batched generation

REQUESTS, MAX_BATCH = 5, 2
MODULES = {"embed", "position", "norm", "lm_head"}  # depth 1; layers is a ModuleList


def check_generate(rows: Rows, logs: list[dict[str, Any]]) -> None:
    assert len({(r["trace_id"], r["span_id"]) for r in rows}) == len(rows)
    by_parent = children(rows)
    by_id = {r["span_id"]: r for r in rows}
    roots = by_parent[None]
    assert names(roots) == {"request": REQUESTS, "batch inference": 3}
    calls = {}
    for request in (r for r in roots if r["name"] == "request"):
        (call,) = by_parent[request["span_id"]]
        assert call["name"] == "chat tiny-decoder"
        assert call["span_id"] not in by_parent  # nothing under the call: the work is batched
        assert call["attributes"]["gen_ai.request.model"] == "tiny-decoder"
        assert call["attributes"]["gen_ai.usage.output_tokens"] >= 1
        assert call["attributes"]["glmtrace.gen_ai.ttft_ms"] >= 0
        assert [e["name"] for e in call["events"]] == ["gen_ai.first_token"]
        (link,) = call["links"]
        batch = by_id[link["span_id"]]
        assert batch["name"] == "batch inference"
        assert call["attributes"]["glmtrace.batch.span_id"] == batch["span_id"]
        calls[call["span_id"]] = (request["attributes"]["request.number"], call)
        (log,) = [
            d for d in logs if d["message"].startswith(f"request {calls[call['span_id']][0]} ")
        ]
        assert (log["trace.id"], log["span.id"]) == (call["trace_id"], call["span_id"])
    sizes = []
    for batch in (r for r in roots if r["name"] == "batch inference"):
        served = [link["span_id"] for link in batch["links"]]
        assert all(calls[s][1]["links"][0]["span_id"] == batch["span_id"] for s in served)
        sizes.append(len(served))
        assert batch["attributes"]["glmtrace.batch.size"] == len(served)
        assert batch["attributes"]["gen_ai.request.model"] == "tiny-decoder"
        (generate,) = by_parent[batch["span_id"]]
        assert generate["name"] == "generate"
        forwards = by_parent[generate["span_id"]]
        assert len(forwards) == generate["attributes"]["steps"]
        for forward in forwards:
            assert forward["name"] == "torch.module TinyDecoder"
            inputs = attrs(forward, "glmtrace.torch.inputs")
            assert set(inputs) == {"input_ids", "attention_mask"}  # keyword inputs, by name
            assert {r["name"].split()[-1] for r in by_parent[forward["span_id"]]} == MODULES
        (log,) = [d for d in logs if d.get("span.id") == batch["span_id"]]
        assert log["message"] == f"serving a batch of {len(served)} requests"
        assert log["trace.id"] == batch["trace_id"]
    assert sorted(sizes) == [1, 2, 2]
    assert sorted(n for n, _ in calls.values()) == list(range(REQUESTS))
    assert generation_complete(rows)
    assert sum(1 for r in rows if r["parent_span_id"] in by_id) == len(rows) - len(roots)


def generation_complete(rows: Rows) -> bool:
    """All requests, and each batch with the module spans of every decoding step it made."""
    steps = [r["attributes"]["steps"] for r in rows if r["name"] == "generate"]
    expected = 2 * REQUESTS + sum(2 + (1 + len(MODULES)) * n for n in steps)
    return len(steps) == 3 and len(rows) >= expected


def generate_args(service: str) -> list[str]:
    return ["--requests", str(REQUESTS), "--max-batch", str(MAX_BATCH), "--service", service]


def test_generation_in_the_local_store(tmp_path: Path) -> None:
    """Requests and batches, linked both ways, with their module spans and logs, in the store."""
    store = run_example("generate/serve.py", generate_args("generate"), tmp_path, {})
    check_generate(Store(store).all_spans(), Store(store).all_logs())


def test_generation_in_jaeger(tmp_path: Path, jaeger: Jaeger) -> None:
    """The same structure as Jaeger returns it over OTLP."""
    service = f"generate-{uuid.uuid4().hex[:8]}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp_grpc}", "GLMTRACE_LOGS": "local"}
    store = run_example("generate/serve.py", generate_args(service), tmp_path, env)
    rows = from_jaeger(jaeger, service, generation_complete)
    check_generate(rows, Store(store).all_logs())
