"""instrument_torch(): module spans, selection, idempotence, uninstrument, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import glmtrace
from glmtrace._internal.torch.modules import instrumented_paths

torch = pytest.importorskip("torch")


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: Any) -> Any:
        return self.head(self.encoder(x))


def _by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in spans}


def test_forward_spans_are_children_of_current_span(traced: Any) -> None:
    """Depth 1: the model and its direct children become nested child spans of the step."""
    model = glmtrace.instrument_torch(Block())
    with glmtrace.span("step"):
        model(torch.randn(3, 4))
    spans = _by_name(traced.spans())
    step, root = spans["step"], spans["torch.module Block"]
    encoder, head = spans["torch.module encoder"], spans["torch.module head"]
    assert root["parent_span_id"] == step["span_id"]
    assert encoder["parent_span_id"] == root["span_id"]
    assert head["parent_span_id"] == root["span_id"]
    assert "torch.module encoder.0" not in spans
    assert {s["trace_id"] for s in spans.values()} == {step["trace_id"]}
    assert step["start_ns"] <= root["start_ns"] <= encoder["start_ns"] <= head["end_ns"]
    assert head["end_ns"] <= root["end_ns"] <= step["end_ns"]


def test_tensor_summaries(traced: Any) -> None:
    """Inputs and outputs are recorded as {shape, dtype, device} summaries."""
    model = glmtrace.instrument_torch(Block(), depth=0)
    with glmtrace.span("step"):
        model(torch.randn(3, 4))
    attrs = traced.one("torch.module Block")["attributes"]
    assert json.loads(attrs["glmtrace.torch.inputs"]) == [
        {"shape": [3, 4], "dtype": "torch.float32", "device": "cpu"}
    ]
    assert json.loads(attrs["glmtrace.torch.outputs"])["shape"] == [3, 2]
    assert attrs["glmtrace.torch.module.type"] == "Block"


def test_include_and_exclude_select_by_path_or_type(traced: Any) -> None:
    """include selects at any depth (globs or classes); exclude removes matches."""
    model = Block()
    glmtrace.instrument_torch(model, include=["encoder.*", torch.nn.Linear], exclude=["*.1"])
    assert instrumented_paths(model) == ["encoder.0", "head"]


@pytest.mark.parametrize("argument", ["include", "exclude"])
def test_bad_selectors_raise_config_error_naming_the_value(argument: str) -> None:
    """A selector that is neither a glob nor a class fails at once, naming the bad value."""
    with pytest.raises(glmtrace.ConfigError, match=rf"{argument}=.*42"):
        glmtrace.instrument_torch(Block(), **{argument: ["encoder", 42]})


def test_one_selector_string_is_one_pattern(traced: Any) -> None:
    """include="head" selects the module head, not modules named by its letters."""
    model = Block()
    glmtrace.instrument_torch(model, include="head")
    assert instrumented_paths(model) == ["head"]


def test_idempotent(traced: Any) -> None:
    """Instrumenting twice does not double the spans; new settings re-hook."""
    model = Block()
    glmtrace.instrument_torch(model)
    glmtrace.instrument_torch(model)
    with glmtrace.span("step"):
        model(torch.randn(1, 4))
    assert [s["name"] for s in traced.spans()].count("torch.module head") == 1
    glmtrace.instrument_torch(model, depth=2)
    assert "encoder.0" in instrumented_paths(model)


def test_uninstrument_removes_every_hook(traced: Any) -> None:
    """After uninstrument_torch no hook is left and no module span is produced."""
    model = Block()
    before = [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]
    glmtrace.instrument_torch(model, depth=5, backward=True)
    glmtrace.uninstrument_torch(model)
    after = [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]
    assert after == before
    assert all(not m._backward_hooks and not m._backward_pre_hooks for m in model.modules())
    assert all("forward" not in vars(m) for m in model.modules())
    with glmtrace.span("step"):
        model(torch.randn(1, 4))
    assert [s["name"] for s in traced.spans()] == ["step"]


def test_exception_in_forward_ends_span_with_error(traced: Any) -> None:
    """A module that raises still closes its span, marked ERROR; the exception propagates."""

    class Bad(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            raise ValueError("boom")

    model = glmtrace.instrument_torch(Bad())
    with pytest.raises(ValueError, match="boom"), glmtrace.span("step"):
        model(torch.ones(1))
    span = traced.one("torch.module Bad")
    assert span["status"] == "ERROR"
    assert "boom" in span["status_message"]


# torch warns that a full backward hook on the first layer fires early (inputs need no grad).
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_backward_spans(traced: Any) -> None:
    """backward=True adds torch.backward spans under the span current at backward()."""
    model = glmtrace.instrument_torch(Block(), backward=True)
    with glmtrace.span("step"):
        loss = model(torch.randn(2, 4)).sum()
        with glmtrace.span("backward"):
            loss.backward()
    spans = _by_name(traced.spans())
    assert spans["torch.backward head"]["parent_span_id"] == spans["backward"]["span_id"]


def test_no_op_before_init() -> None:
    """Before init() the hooks do nothing and the model runs."""
    model = glmtrace.instrument_torch(Block())
    try:
        assert model(torch.randn(1, 4)).shape == (1, 2)
    finally:
        glmtrace.uninstrument_torch(model)


def test_rejects_non_modules() -> None:
    """A clear TypeError for something that is not an nn.Module."""
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        glmtrace.instrument_torch(object())


def test_internal_error_leaves_forward_running(tmp_path: Any) -> None:
    """Outside strict mode, a failing hook is logged and the forward still returns."""
    script = textwrap.dedent(
        """
        import glmtrace, torch
        from glmtrace._internal import thin
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        glmtrace.init(traces="none", logs="none", exporter=InMemorySpanExporter())
        def broken(*a, **k):
            raise RuntimeError("internal")
        thin.start.__code__ = broken.__code__
        model = glmtrace.instrument_torch(torch.nn.Linear(2, 2))
        with glmtrace.span("step"):
            out = model(torch.ones(1, 2))
        print("shape", tuple(out.shape))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "GLMTRACE_STRICT"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "shape (1, 2)" in result.stdout
    assert "glmtrace internal error in torch module span" in result.stderr


def test_missing_torch_message() -> None:
    """Without torch, every entry point raises MissingDependencyError with the pip command."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        import glmtrace, glmtrace.distributed
        for call in (lambda: glmtrace.instrument_torch(object()), lambda: glmtrace.cuda_span("x"),
                     lambda: glmtrace.profile().__enter__(),
                     lambda: glmtrace.distributed.instrument_collectives()):
            try:
                call()
            except glmtrace.MissingDependencyError as exc:
                print(exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4
    assert all("pip install 'glmtrace[torch]'" in line for line in lines)


class Logger(torch.nn.Module):
    """A module run for its side effect: its forward returns None."""

    def forward(self, x: Any) -> None:
        self.last = x.sum()


def test_forward_inside_an_except_block_is_not_an_error(traced: Any) -> None:
    """A module run while the caller handles another exception ends its span without error."""
    model = glmtrace.instrument_torch(Logger())
    try:
        raise RuntimeError("primary model unavailable")
    except RuntimeError:
        model(torch.randn(3, 4))  # succeeds, returning None
    assert {s["status"] for s in traced.spans()} == {"UNSET"}


def test_fused_transformer_fast_path_is_kept(traced: Any) -> None:
    """Instrumenting does not turn off TransformerEncoderLayer's fused path (no forward hooks).

    In that path the layer never calls its children, so only the layer has a span.
    """
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0).eval()
    glmtrace.instrument_torch(layer, depth=1)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in layer.modules())
    with torch.no_grad(), glmtrace.span("step"):
        layer(torch.randn(2, 5, 16))
    names = sorted(s["name"] for s in traced.spans())
    assert names == ["step", "torch.module TransformerEncoderLayer"]


def test_deepcopy_of_an_instrumented_model_traces_the_copy(traced: Any) -> None:
    """A deep copy (an EMA model, say) runs its own weights, traced, and survives uninstrument."""
    import copy

    model = glmtrace.instrument_torch(Block())
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    glmtrace.uninstrument_torch(model)
    x = torch.randn(2, 4)
    with torch.no_grad(), glmtrace.span("step"):
        assert not torch.equal(twin(x), model(x))
    names = [s["name"] for s in traced.spans()]
    assert names.count("torch.module Block") == 1  # the copy's; the original is untraced now


class KeywordModel(torch.nn.Module):
    """Called the transformers way: model(input_ids=..., attention_mask=...)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)

    def forward(self, input_ids: Any = None, attention_mask: Any = None, use_cache: bool = False):
        return self.embed(input_ids) * attention_mask.unsqueeze(-1)


def test_keyword_inputs_are_summarised(traced: Any) -> None:
    """Tensors passed by keyword are summarised by name on the module span."""
    model = glmtrace.instrument_torch(KeywordModel(), depth=0)
    ids = torch.tensor([[1, 2, 3]])
    with glmtrace.span("step"):
        model(input_ids=ids, attention_mask=torch.ones(1, 3), use_cache=True)
    inputs = json.loads(
        traced.one("torch.module KeywordModel")["attributes"]["glmtrace.torch.inputs"]
    )
    assert inputs == {
        "input_ids": {"shape": [1, 3], "dtype": "torch.int64", "device": "cpu"},
        "attention_mask": {"shape": [1, 3], "dtype": "torch.float32", "device": "cpu"},
    }


def test_torch_compile_of_an_instrumented_model_skips_module_spans(traced: Any) -> None:
    """Dynamo traces the model's code, not glmtrace's: one graph, no break, no span per module."""
    model = glmtrace.instrument_torch(Block().eval())
    x = torch.randn(3, 4)
    expected = model(x)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    with glmtrace.span("compiled"):
        out = torch.compile(model, backend="eager")(x)
    assert torch.allclose(out, expected)
    names = [s["name"] for s in traced.spans()]
    assert names.count("torch.module Block") == 1  # the eager call only
    torch._dynamo.reset()
