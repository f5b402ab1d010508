"""Stage ``infer``: route by ``model_hint`` to a tiny GLM-style model built in code.

No weights are downloaded: each model is a small randomly initialised (seeded) transformer
that runs a real forward pass and greedily decodes a few tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

import glmtrace

log = logging.getLogger("autoglm.glm_router")

VOCAB = 256  # byte-level tokens


class TinyGLM(nn.Module):
    def __init__(self, dim: int, layers: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, dim)
        block = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=dim * 2, batch_first=True)
        self.encoder = nn.TransformerEncoder(block, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


MODELS: dict[str, tuple[int, int]] = {"chatglm3": (64, 2), "glm4-mini": (32, 1)}
DEFAULT_MODEL = "glm4-mini"
_loaded: dict[str, TinyGLM] = {}


def route(model_hint: str | None) -> str:
    return model_hint if model_hint in MODELS else DEFAULT_MODEL


def _model(name: str) -> TinyGLM:
    if name not in _loaded:
        dim, layers = MODELS[name]
        model = TinyGLM(dim, layers, seed=len(name)).eval()
        glmtrace.instrument_torch(model, depth=1)  # embed / encoder / head as child spans
        _loaded[name] = model
    return _loaded[name]


@torch.no_grad()
def generate(
    model: TinyGLM, text: str, max_new_tokens: int, call: glmtrace.InferenceCall
) -> list[int]:
    tokens = torch.tensor([list(text.encode("utf-8"))[-128:] or [32]])
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(tokens)[:, -1, :]
        nxt = int(logits.argmax(-1))
        if not out:
            call.first_token()
        out.append(nxt)
        tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
    return out


def invoke(envelope: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    hint = config.get("model_hint")
    name = route(hint)
    log.info("routing request: model_hint=%s -> %s", hint, name)
    model = _model(name)
    text = str(envelope["payload"])
    max_new_tokens = int(config.get("max_new_tokens", 4))
    with glmtrace.inference(name, max_tokens=max_new_tokens, batch_size=1) as call:
        new_tokens = generate(model, text, max_new_tokens, call)
        call.usage(input_tokens=len(text.encode("utf-8")), output_tokens=len(new_tokens))
    log.info("generated %d tokens with %s", len(new_tokens), name)
    return {**envelope, "payload": {"text": text, "model": name, "tokens": new_tokens}}
