"""Data-parallel training on CPU: 2 gloo ranks, DataLoader workers, traced with glmtrace.

Written like the usual ImageNet-style DDP script (``mp.spawn`` of ``main_worker``, a
``DistributedSampler``, one optimizer step per batch), on synthetic images so that it needs no
download. glmtrace adds four lines: ``init()`` in each rank, ``instrument_torch``,
``instrument_collectives`` and ``worker_init_fn``, plus one ``share_trace`` per step.

    python examples/ddp_train/train.py --epochs 2 --workers 2 --start-method spawn --persistent
    glmtrace ls && glmtrace show <trace id>

Each step is one trace: rank 0's ``train step`` span, rank 1's as its child, and under each the
batch's ``torch.dataloader.worker`` span (with its ``decode`` and ``collate`` spans), the model's
module spans and the loss ``all_reduce``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate
from torch.utils.data.distributed import DistributedSampler

import glmtrace
import glmtrace.distributed

log = logging.getLogger("ddp_train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DDP training on CPU, traced")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=32, help="dataset size")
    parser.add_argument("--batch-size", type=int, default=4, help="per rank")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank")
    parser.add_argument("--start-method", choices=["fork", "spawn", "forkserver"], default="fork")
    parser.add_argument("--persistent", action="store_true", help="persistent_workers=True")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--service", default="ddp-train")
    return parser.parse_args(argv)


class SyntheticImages(Dataset):  # type: ignore[type-arg]
    """Deterministic 3x8x8 "images" in 4 classes: item i is always the same."""

    def __init__(self, samples: int, classes: int = 4) -> None:
        self.samples = samples
        self.classes = classes

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with glmtrace.span("decode", {"index": index}):
            generator = torch.Generator().manual_seed(index)
            label = index % self.classes
            image = torch.randn(3, 8, 8, generator=generator) + label
            return image, label


def collate(samples: list[tuple[torch.Tensor, int]]) -> Any:
    with glmtrace.span("collate", {"samples": len(samples)}):
        return default_collate(samples)


class SmallConvNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.classifier = nn.Linear(8 * 2 * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,  # type: ignore[type-arg]
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    rank: int,
    world_size: int,
) -> None:
    model.train()
    for step, (images, target) in enumerate(loader):
        with glmtrace.distributed.share_trace(
            "train step", attributes={"epoch": epoch, "step": step}
        ):
            output = model(images)
            loss = criterion(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            reduced = loss.detach().clone()
            dist.all_reduce(reduced)  # the mean loss over ranks, for the log line
            if rank == 0:
                log.info("epoch %d step %d loss %.4f", epoch, step, reduced.item() / world_size)


def main_worker(rank: int, args: argparse.Namespace, port: int) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(message)s")
    glmtrace.init(service_name=args.service)  # in each rank: mp.spawn starts new interpreters
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=args.world_size)

    torch.manual_seed(0)
    model = DistributedDataParallel(glmtrace.instrument_torch(SmallConvNet()))
    glmtrace.distributed.instrument_collectives()  # after DDP's own setup collectives
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    dataset = SyntheticImages(args.samples)
    sampler = DistributedSampler(dataset, num_replicas=args.world_size, rank=rank, seed=0)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=collate,
        multiprocessing_context=args.start_method if args.workers else None,
        persistent_workers=args.persistent and args.workers > 0,
        worker_init_fn=glmtrace.distributed.worker_init_fn(),
    )
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        train_one_epoch(model, loader, criterion, optimizer, epoch, rank, args.world_size)

    del loader  # persistent workers exit (and flush) now
    dist.destroy_process_group()
    glmtrace.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    mp.spawn(main_worker, args=(args, free_port()), nprocs=args.world_size)


if __name__ == "__main__":
    main()
