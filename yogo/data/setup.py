"""What a training run reads: the splits of its DDF, scanned once per job, and the datasets,
samplers, loaders and frame cache over them.

    ddf, splits = load_splits(cfg, ctx, run_dir.parent / DEFAULT_NAME)   # rank 0 scans
    data = make_data(cfg, ctx, run_dir, splits, model.config, loaders)
    for batch in data.train_loader: ...

Every rank calls both; each draws its share of the training frames (EpochSampler) and
validates its shard (ShardSampler).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yogo.config import ResolvedTrainConfig, TrainConfig, augment_settings
from yogo.data.cache import FrameCache, plan_cache, size_text
from yogo.data.dataset import DetectionDataset
from yogo.data.index import DEFAULT_NAME, LabelCache, open_cache
from yogo.data.loader import EpochSampler, Loaders, ShardSampler, default_num_workers, frame_weights
from yogo.data.paste import PastePool
from yogo.data.scan import LabelledSample, require_trainable, scan_dataset
from yogo.ddf import DatasetDefinition
from yogo.dist import DistContext
from yogo.errors import UserError
from yogo.model.network import ModelConfig
from yogo.outputs import Inputs

log = logging.getLogger(__name__)


@dataclass
class Data:
    """The datasets, samplers and loaders of a run."""

    train_loader: torch.utils.data.DataLoader[Any]
    train_sampler: EpochSampler
    train_set: DetectionDataset
    val_set: DetectionDataset
    val_loader: torch.utils.data.DataLoader[Any]
    val_shard: ShardSampler
    num_workers: int


def paste_pool(
    cfg: TrainConfig,
    splits: dict[str, tuple[LabelledSample, ...]],
    model: ModelConfig,
    thumbnails: dict[str, tuple[Path, ...]],
) -> PastePool | None:
    """What `--copy-paste` pastes (None when off): the DDF's usable thumbnails, else objects
    of the rare classes. Made before the run folder is written: no usable thumbnail is a
    UserError that leaves nothing behind."""
    if not (cfg.augment and cfg.copy_paste > 0):
        return None
    if thumbnails:
        train = splits["train"]
        smallest = (min(s.height for s in train), min(s.width for s in train))
        pool = PastePool.from_thumbnails(thumbnails, model.class_names, model.channels, smallest)
        source = "thumbnail(s) of the DDF's thumbnail_augmentation"
    else:
        pool = PastePool.from_frames(splits["train"], model.num_classes)
        source = "object(s) of the rare classes from the training frames"
    log.info(f"copy-paste {cfg.copy_paste:g}: from {len(pool)} {source}")
    return pool


def make_data(
    cfg: ResolvedTrainConfig,
    ctx: DistContext,
    run_dir: Path,
    splits: dict[str, tuple[LabelledSample, ...]],
    model: ModelConfig,
    loaders: Loaders,
    pool: PastePool | None = None,
) -> Data:
    """The loaders `yogo train` reads (benchmarks/bench_loader.py times exactly these)."""
    # Not saved in the config: a resumed or repeated run uses the CPUs of its own allocation.
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    pin = ctx.device.type == "cuda"
    paste = (pool, cfg.copy_paste) if pool is not None else None
    train_set = DetectionDataset(
        splits["train"],
        model.image_hw,
        model.channels,
        cfg.augment,
        cfg.seed,
        augment_settings(cfg),
        paste,
        model.bit_depth,
        tile=model.tile_overlap is not None,
    )
    # One code path for every world size: each rank draws its share of a seeded permutation.
    weights = None
    if cfg.sampler == "balanced":
        weights = frame_weights(splits["train"], model.num_classes)
        log.info(
            f"sampler balanced: frames holding rare classes drawn up to "
            f"{float(weights.max() / weights.min()):.1f}x as often as the others"
        )
    train_sampler = EpochSampler(
        len(train_set), ctx.rank, ctx.world_size, cfg.seed, weights, cfg.hard_frames,
        cfg.batch_size,
    )  # fmt: skip
    val_set = DetectionDataset(
        splits["val"],
        model.image_hw,
        model.channels,
        bit_depth=model.bit_depth,
        tile=model.tile_overlap is not None,
    )
    if model.tile_overlap is None:
        attach_frame_cache(cfg.cache, ctx, run_dir, train_set, val_set)
    elif ctx.is_main:  # the cache holds frames at the model's size; tiles cut whole frames
        log.info("frame cache: none (--tile reads whole frames); every epoch decodes every frame")
    val_shard = ShardSampler(len(val_set), ctx.rank, ctx.world_size)
    return Data(
        loaders.make(train_set, cfg.batch_size, workers, cfg.seed, pin, train_sampler),
        train_sampler,
        train_set,
        val_set,
        loaders.make(val_set, cfg.batch_size, workers, cfg.seed, pin, val_shard),
        val_shard,
        workers,
    )


def attach_frame_cache(
    mode: str, ctx: DistContext, run_dir: Path, *datasets: DetectionDataset
) -> None:
    """One frame cache (yogo.data.cache) for `datasets`, made by the first process of each
    node and opened by the others; rank 0 decides where it lives and says so in one line."""
    sizes = [len(d) for d in datasets]
    shape = (datasets[0].channels, *datasets[0].image_hw)
    dtype = np.dtype(np.uint16 if datasets[0].bit_depth == 16 else np.uint8)
    count = sum(sizes)
    plan, refusal = None, None
    if ctx.is_main:
        try:
            plan = plan_cache(mode, count * int(np.prod(shape)) * dtype.itemsize, run_dir)
        except UserError as e:
            refusal = str(e)
    plan, refusal = ctx.broadcast((plan, refusal))
    if refusal is not None:
        raise UserError(refusal)
    if plan.mode == "none" or count == 0:
        if ctx.is_main and plan.mode == "none":
            log.info(f"frame cache: none ({plan.reason}); every epoch decodes every frame")
        return
    host, cache, failure = socket.gethostname(), None, None
    if ctx.local_rank == 0:
        try:
            cache = FrameCache.create(plan, count, shape, dtype)
        except UserError as e:
            failure = str(e)
    shared = ctx.gather((host, cache.handle() if cache else None, failure))
    failures = [reason for _, _, reason in shared if reason is not None]
    if failures:
        raise UserError(failures[0])
    if cache is None:
        handle = next(h for name, h, _ in shared if name == host and h is not None)
        try:
            cache = FrameCache.open(handle, count, shape, dtype)
        except OSError as e:  # /proc of another process hidden (hardened kernels)
            log.warning(f"rank {ctx.rank}: cannot share the node's frame cache ({e}); own copy")
            cache = FrameCache.create(plan, count, shape, dtype)
    start = 0
    for dataset, size in zip(datasets, sizes, strict=True):
        dataset.use_cache(cache, start)
        start += size
    if ctx.is_main:
        where = "memory" if plan.mode == "ram" else f"a deleted file in {plan.folder}"
        log.info(
            f"frame cache: {plan.mode}, {count:,} frames of {'x'.join(map(str, shape))} = "
            f"{size_text(cache.frames.nbytes)} in {where} ({plan.reason}), shared by this "
            "node's loaders, filled during the first epoch"
        )


def label_cache(cfg: TrainConfig, output_dir: Path, inputs: Inputs) -> LabelCache | None:
    """The label index a run reads and updates (yogo.data.index): --cache-dir, else
    $YOGO_CACHE_DIR, else OUTPUT_DIR/.yogo-cache; refused (UserError) before any work when it
    cannot be used."""
    return open_cache(cfg.cache_dir, inputs, output_dir / DEFAULT_NAME)


def load_splits(
    cfg: TrainConfig, ctx: DistContext, default_cache: Path | None
) -> tuple[DatasetDefinition, dict[str, tuple[LabelledSample, ...]]]:
    """The DDF and the samples of each split, scanned under --bad-labels and subsampled.

    Rank 0 scans and brings the label index (--cache-dir, else $YOGO_CACHE_DIR, else
    `default_cache`: OUTPUT_DIR/.yogo-cache for a run) up to date; the other ranks then read
    the index instead of every label file (on a shared file system, once per job, not per
    rank)."""
    started = time.perf_counter()
    folds = (cfg.folds, cfg.fold) if cfg.folds is not None and cfg.fold is not None else None
    ddf = DatasetDefinition.from_yaml(cfg.ddf, cfg.dataset_split_override, folds)
    cache = open_cache(cfg.cache_dir, Inputs.of(cfg.ddf) | ddf.inputs(), default_cache)
    scan = None
    try:
        if ctx.is_main:
            scan = scan_dataset(
                ddf, cfg.bad_labels, cache=cache, min_confidence=cfg.min_label_confidence
            )
    finally:
        ctx.broadcast(None)  # the index is written (or rank 0 failed; the others will too)
    if scan is None:
        scan = scan_dataset(
            ddf, cfg.bad_labels, cache=cache, min_confidence=cfg.min_label_confidence
        )
    count = sum(map(len, ddf.splits.values()))
    log.info(f"{count:,} label files ready in {time.perf_counter() - started:.1f} s")
    require_trainable(scan)
    handled = Counter(p.action.split(":")[0] for p in scan.problems if p.action is not None)
    if handled:
        summary = ", ".join(f"{n} {action}" for action, n in sorted(handled.items()))
        log.warning(f"--bad-labels {cfg.bad_labels}: {summary} (`yogo check` lists each)")
    if scan.below_confidence:
        log.info(
            f"--min-label-confidence {cfg.min_label_confidence:g}: {scan.below_confidence} of "
            f"{len(scan.confidence)} machine-labelled row(s) left out"
        )
    splits = {name: subsample(samples, cfg.subsample) for name, samples in scan.splits.items()}
    if not splits["val"]:
        log.info(
            "no validation split: best.pth is not written (add val to "
            "dataset_split_fractions to select the best epoch)"
        )
    return ddf, splits


def subsample(
    samples: tuple[LabelledSample, ...], fraction: float | None
) -> tuple[LabelledSample, ...]:
    """Evenly spaced samples (by label path), so every acquisition keeps its share."""
    if fraction is None or not samples:
        return samples
    keep = max(1, round(fraction * len(samples)))
    return tuple(samples[int(i)] for i in np.linspace(0, len(samples) - 1, keep).round())
