"""Text generation with dynamic batching: concurrent requests, one batched generate loop.

Written like a small serving stack in the transformers style: a decoder model called with
keyword arguments (``model(input_ids=..., attention_mask=...)``), a greedy ``generate()`` loop
with a streamer, and a batcher thread that serves several waiting requests with one loop. The
model is tiny, seeded and built in code: nothing is downloaded.

    python examples/generate/serve.py --requests 5 --max-batch 2
    glmtrace ls && glmtrace show <trace id>

Each request is one trace (``request`` > ``chat tiny-decoder``, with time to first token and
token counts); each batch is one trace (``batch inference`` > ``generate`` > the model's module
spans per decoding step), linked both ways with the requests it served.
"""

from __future__ import annotations

import argparse
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import glmtrace

log = logging.getLogger("generate")

MODEL = "tiny-decoder"
VOCAB = "abcdefghijklmnopqrstuvwxyz .,!?"
PAD, EOS = 0, 1  # token ids; characters start at 2


def encode(text: str) -> list[int]:
    return [VOCAB.index(c) + 2 for c in text.lower() if c in VOCAB]


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i - 2] for i in ids if i >= 2)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, causal: torch.Tensor, padding: torch.Tensor) -> Any:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, key_padding_mask=padding)[0]
        return x + self.mlp(self.norm2(x))


class TinyDecoder(nn.Module):
    """A two-layer causal decoder: ``forward(input_ids=..., attention_mask=...)`` -> logits."""

    def __init__(self, vocab: int = len(VOCAB) + 2, dim: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(128, dim)
        self.layers = nn.ModuleList([DecoderLayer(dim, heads) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab)

    def forward(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        assert input_ids is not None and attention_mask is not None
        length = input_ids.shape[1]
        positions = torch.arange(length).unsqueeze(0)
        x = self.embed(input_ids) + self.position(positions)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        for layer in self.layers:
            x = layer(x, causal, attention_mask == 0)
        return {"logits": self.lm_head(self.norm(x))}


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    min_new_tokens: int = 1,
    streamer: Callable[[list[int]], None] | None = None,
) -> torch.Tensor:
    """Greedy decoding of a left-padded batch; ``streamer`` gets each step's new tokens."""
    with glmtrace.span("generate", {"max_new_tokens": max_new_tokens}) as span:
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        for step in range(max_new_tokens):
            span.set_attribute("steps", step + 1)
            logits = model(input_ids=input_ids, attention_mask=attention_mask)["logits"][:, -1]
            logits[:, PAD] = float("-inf")  # never generated
            if step < min_new_tokens:
                logits[:, EOS] = float("-inf")
            next_tokens = logits.argmax(dim=-1)
            next_tokens = torch.where(finished, torch.full_like(next_tokens, PAD), next_tokens)
            if streamer is not None:
                streamer(next_tokens.tolist())
            finished |= next_tokens == EOS
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=1)
            attention_mask = torch.cat([attention_mask, (~finished).long()[:, None]], dim=1)
            if bool(finished.all()):
                break
        return input_ids


@dataclass
class Request:
    prompt: str
    max_new_tokens: int
    call: glmtrace.InferenceCall
    tokens: queue.Queue[int | None] = field(default_factory=queue.Queue)  # the stream


class Batcher:
    """Collects waiting requests into batches of up to ``max_batch`` and runs generate()."""

    def __init__(self, model: nn.Module, max_batch: int, expected: int) -> None:
        self.model = model
        self.max_batch = max_batch
        self.expected = expected  # how many requests this run will get
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.thread = threading.Thread(target=self.run, name="batcher", daemon=True)

    def run(self) -> None:
        served = 0
        while served < self.expected:
            batch = [self.waiting.get()]
            while len(batch) < min(self.max_batch, self.expected - served):
                batch.append(self.waiting.get())  # wait for a full batch: a fixed layout
            served += len(batch)
            self.serve(batch)

    def serve(self, requests: list[Request]) -> None:
        with glmtrace.batch(
            [r.call for r in requests], model=MODEL, batch_size=len(requests)
        ) as batch:
            log.info("serving a batch of %d requests", batch.size)
            prompts = [encode(r.prompt) for r in requests]
            width = max(len(p) for p in prompts)
            input_ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
            attention_mask = (input_ids != PAD).long()

            def stream(step_tokens: list[int]) -> None:
                for request, token in zip(requests, step_tokens, strict=True):
                    if token != PAD:
                        request.tokens.put(token)

            generate(
                self.model,
                input_ids,
                attention_mask,
                max(r.max_new_tokens for r in requests),
                streamer=stream,
            )
            for request in requests:
                request.tokens.put(None)  # end of stream


def handle(batcher: Batcher, number: int, prompt: str, max_new_tokens: int) -> str:
    """One client request: submit, then read the streamed tokens as they come."""
    with (
        glmtrace.span("request", {"request.number": number}),
        glmtrace.inference(MODEL, max_tokens=max_new_tokens, temperature=0.0) as call,
    ):
        request = Request(prompt, max_new_tokens, call)
        batcher.waiting.put(request)
        generated: list[int] = []
        while (token := request.tokens.get()) is not None:
            if not generated:
                call.first_token()
            if token == EOS or len(generated) >= max_new_tokens:
                break
            generated.append(token)
        while token is not None:  # drain the rest of the stream
            token = request.tokens.get()
        reason = "stop" if len(generated) < max_new_tokens else "length"
        call.usage(input_tokens=len(encode(prompt)), output_tokens=len(generated))
        call.response(model=MODEL, finish_reasons=[reason])
        text = decode(generated)
        log.info("request %d done: %d tokens", number, len(generated))
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="batched generation, traced")
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--max-batch", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--service", default="generate")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    glmtrace.init(service_name=args.service)
    torch.manual_seed(0)
    model = glmtrace.instrument_torch(TinyDecoder().eval())
    batcher = Batcher(model, args.max_batch, args.requests)
    batcher.thread.start()  # before any request: batches are traces of their own

    prompts = ["hello world", "the quick brown fox", "tracing is fun", "a b c", "why?"]
    with ThreadPoolExecutor(args.requests) as pool:
        futures = [
            pool.submit(handle, batcher, i, prompts[i % len(prompts)], args.max_new_tokens)
            for i in range(args.requests)
        ]
        for i, future in enumerate(futures):
            print(f"request {i}: {future.result()!r}")
    batcher.thread.join()
    glmtrace.shutdown()


if __name__ == "__main__":
    main()
