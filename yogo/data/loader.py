"""Batching: collate samples into a uint8 image tensor and packed labels; loaders, their
samplers, and the lifetime of their worker processes.

    with Loaders() as loaders:              # every worker has exited when the block ends
        loader = loaders.make(dataset, batch_size=64, num_workers=4, sampler=sampler)
        for batch in loader:
            batch.images    # (B, C, H, W) uint8
            batch.labels    # (N, 6) image index in batch, class, xc, yc, w, h
            batch.skipped   # paths of images that failed to decode (reported by the caller)

Packed labels let `boxes.build_targets` make grid targets for the whole batch at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from yogo.data.dataset import Item
from yogo.data.scan import LabelledSample, usable_cores


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[Path]

    def pin_memory(self) -> Batch:
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.skipped)


def collate(items: Sequence[Item]) -> Batch:
    skipped = [item for item in items if isinstance(item, Path)]
    good = [item for item in items if not isinstance(item, Path)]
    if not good:
        return Batch(torch.zeros(0, 1, 1, 1, dtype=torch.uint8), torch.zeros(0, 6), skipped)
    images = torch.stack([image for image, _ in good])
    labels = torch.cat(
        [
            torch.cat([torch.full((len(boxes), 1), float(i)), boxes], dim=1)
            for i, (_, boxes) in enumerate(good)
        ]
    )
    return Batch(images, labels, skipped)


def _init_worker(worker_id: int) -> None:
    """Loader workers leave SIGTERM/SIGUSR1/SIGINT to the main process, which stops at a
    step boundary and shuts them down; SLURM signals every process of a job step, a terminal
    sends Ctrl-C to every process of the foreground group. They drop the folder locks they
    inherited: a worker orphaned by kill -9 must not hold the run folder."""
    import signal

    from yogo.outputs import drop_inherited_locks

    drop_inherited_locks()
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


class Loaders:
    """The loaders of one command; leaving the `with` block stops their worker processes.

    Workers are persistent (kept between epochs) and ignore stop signals (`_init_worker`),
    so the terminate-then-join that multiprocessing applies to live workers at interpreter exit
    would wait forever; shut down here, after the loop or on any exception, they exit normally.
    """

    def __init__(self) -> None:
        self._loaders: list[torch.utils.data.DataLoader[Any]] = []

    def __enter__(self) -> Loaders:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def make(
        self,
        dataset: torch.utils.data.Dataset[Any],
        batch_size: int,
        num_workers: int,
        seed: int = 0,
        pin_memory: bool = False,
        sampler: torch.utils.data.Sampler[int] | None = None,
        collate_fn: Callable[[Any], Any] | None = None,
    ) -> torch.utils.data.DataLoader[Any]:
        """Batches in the sampler's order (dataset order without one), collated by
        `collate_fn` (default: `collate`, detection batches); its workers end with the block."""
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_fn or collate,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=_init_worker,
        )
        self._loaders.append(loader)
        return loader

    def close(self) -> None:
        for loader in self._loaders:
            # DataLoader has no public way to stop persistent workers; its iterator's
            # shutdown is what its own finaliser calls.
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()
                loader._iterator = None
        self._loaders.clear()


def default_num_workers() -> int:
    """Loader processes for one training process: its share of the CPUs (SLURM's CPUs per
    task, else the usable cores divided among torchrun's processes on this node), less one
    for the process itself, at most 8."""
    env = os.environ
    if "SLURM_CPUS_PER_TASK" in env:
        cores = int(env["SLURM_CPUS_PER_TASK"])
    else:
        cores = usable_cores() // int(env.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(8, cores - 1))


class ShardSampler(torch.utils.data.Sampler[int]):
    """Indices rank, rank + world, ... of `length`: every sample exactly once over all ranks
    (unlike DistributedSampler, no padding duplicates), for evaluation."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochSampler(torch.utils.data.Sampler[int]):
    """This rank's share of a seeded permutation per epoch, as tokens `epoch * n + index` (so
    the dataset knows the epoch), optionally starting `skip` samples in (resuming). With
    `weights` (one per sample, `--sampler balanced`), an epoch is n draws with replacement in
    proportion to them instead. With `hard_share` and a pool of hard frames (`set_epoch`), that
    share of each rank's batches of `batch_size` is drawn from the pool (`--hard-frames`).

    Like DistributedSampler, the permutation is padded to a multiple of the world size so every
    rank runs the same number of steps."""

    def __init__(
        self,
        length: int,
        rank: int,
        world_size: int,
        seed: int,
        weights: torch.Tensor | None = None,
        hard_share: float = 0.0,
        batch_size: int = 1,
    ) -> None:
        self.length, self.rank, self.world_size, self.seed = length, rank, world_size, seed
        self.weights = weights
        self.hard_share, self.batch_size = hard_share, batch_size
        self.epoch, self.skip = 0, 0
        self.hard: list[int] = []

    def set_epoch(self, epoch: int, skip: int = 0, hard: Sequence[int] = ()) -> None:
        self.epoch, self.skip, self.hard = epoch, skip, list(hard)

    def indices(self) -> list[int]:
        """This rank's sample indices of the epoch, from `skip` on: what it yields, in order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = torch.multinomial(
                self.weights, self.length, replacement=True, generator=generator
            ).tolist()
        per_batch = round(self.hard_share * self.batch_size)
        if self.hard and per_batch:
            shuffled = torch.randperm(len(self.hard), generator=generator).tolist()
            pool = [self.hard[i] for i in shuffled]
            places = [
                p for p in range(len(order)) if (p // self.world_size) % self.batch_size < per_batch
            ]
            for k, p in enumerate(places):
                order[p] = pool[k % len(pool)]
        padding = (-len(order)) % self.world_size
        order += order[:padding]
        return order[self.rank :: self.world_size][self.skip :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch * self.length + i for i in self.indices())

    def __len__(self) -> int:
        return len(self.indices())


def class_counts(train: Sequence[LabelledSample], num_classes: int) -> np.ndarray:
    classes = [s.boxes[:, 0] for s in train]
    every = np.concatenate(classes).astype(np.int64) if classes else np.zeros(0, np.int64)
    return np.bincount(every, minlength=num_classes).astype(np.float64)


def balanced_class_weights(train: Sequence[LabelledSample], num_classes: int) -> torch.Tensor:
    """n / (C * n_c) per class (0 for a class without objects): every class weighs as much in
    total and the loss's equilibrium class prior is uniform; the mean weight per object is 1."""
    counts = class_counts(train, num_classes)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def frame_weights(train: Sequence[LabelledSample], num_classes: int) -> torch.Tensor:
    """`--sampler balanced`: how often each training frame is drawn, relative to the others:
    the largest among its objects' classes of sqrt(max(1, balanced class weight)), the boost
    the loss gives their object cells (1 for a frame of common classes or of none)."""
    boost = balanced_class_weights(train, num_classes).clamp(min=1.0).sqrt()
    weights = torch.ones(len(train))
    for i, sample in enumerate(train):
        if len(sample.boxes):
            weights[i] = boost[torch.from_numpy(sample.boxes[:, 0]).long()].max()
    return weights
