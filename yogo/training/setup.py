"""Building a training run: what `train` has in hand before its first step.

    run = setup(cfg, ctx, resume, loaders, run_dir, run_dir.parent / DEFAULT_NAME)
    run.cfg                                           # ResolvedTrainConfig: nothing left None

`setup` resolves every value the run decides (batch size, learning rate, precision, model
settings) into the config that config.yaml and every checkpoint save.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from yogo.config import (
    DEFAULT_BATCH_SIZE,
    MIN_STEPS_PER_EPOCH,
    ResolvedTrainConfig,
    TrainConfig,
    default_batch_size,
    default_learning_rate,
)
from yogo.data.loader import Batch, Loaders
from yogo.data.paste import PastePool
from yogo.data.scan import LabelledSample, missing_classes
from yogo.data.setup import Data, load_splits, make_data, paste_pool
from yogo.ddf import DatasetDefinition
from yogo.dist import DistContext, resolve_precision
from yogo.errors import display_path
from yogo.model.checkpoint import Checkpoint, load_checkpoint
from yogo.model.grid import require_usable_image_hw
from yogo.model.loss import LossSettings, YOGOLoss
from yogo.model.network import YOGO
from yogo.training.ema import WeightAverage
from yogo.training.optim import lr_factor, make_optimizer, precision_context
from yogo.training.priors import class_weights, make_model
from yogo.training.report import (
    MetricsCSV,
    TrainingCurves,
    metric_columns,
    start_wandb,
    warn_collision_losses,
)
from yogo.training.run_folder import dataset_record, save_config

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What `setup` builds and the loop uses. Where the run is lives in `TrainState`; here only
    the objects' own state (weights, optimizer, ...) changes, and the bookkeeping fields below
    `csv`."""

    cfg: ResolvedTrainConfig
    ctx: DistContext
    dir: Path
    class_names: tuple[str, ...]
    model: YOGO
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    ema: WeightAverage | None  # the EMA (--ema) or the SWA mean (--swa-epochs)
    loss_fn: YOGOLoss
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    autocast: Any
    scaler: Any
    data: Data
    wandb_run: Any
    csv: MetricsCSV
    curves: TrainingCurves
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: set[Path] = field(default_factory=set)
    started: float = 0.0  # perf_counter() at which the run's elapsed time would be 0
    compiled: bool = False  # torch.compile has compiled the network (its first pass ran)
    launched: float | None = None  # perf_counter() when train() was called, until the 1st step

    @property
    def evaluated_model(self) -> YOGO:
        """What validation, best.pth and export see: the average when there is one (SWA's
        from the first epoch it averages)."""
        return self.ema.model if self.ema is not None and self.ema.updates else self.model

    def images(self, batch: Batch) -> torch.Tensor:
        """A batch's images on this process's device, in the run's memory order."""
        images = batch.images.to(self.ctx.device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def swa_due(self, epoch: int) -> bool:
        """Whether epoch `epoch`'s final weights go into the SWA average."""
        return self.cfg.swa_epochs > 0 and epoch > self.cfg.epochs - self.cfg.swa_epochs

    def validation_due(self, epoch: int) -> bool:
        due = epoch % self.cfg.val_every == 0 or epoch == self.cfg.epochs
        return due and len(self.data.val_set) > 0


def setup(
    cfg: TrainConfig,
    ctx: DistContext,
    resume: Checkpoint | None,
    loaders: Loaders,
    run_dir: Path,
    default_cache: Path | None,
) -> Run:
    """Data, model, run folder, loaders, loss, optimiser, schedule, precision, EMA, DDP, W&B;
    the label index in `default_cache` unless --cache-dir or $YOGO_CACHE_DIR names one."""
    seed_everything(cfg.seed)
    ddf, splits = load_splits(cfg, ctx, default_cache)
    pretrained = load_checkpoint(Path(cfg.from_pretrained)) if cfg.from_pretrained else None
    weights = class_weights(cfg.class_weights, splits["train"], len(ddf.class_names))
    if resume is not None:
        model = resume.build_model()
    else:
        model = make_model(cfg, ddf.class_names, splits["train"], pretrained, weights)
        require_usable_image_hw(model.config.image_hw)
        if ctx.is_main:
            warn_collision_losses(splits["train"], model.config)
            used = {"train": splits["train"], "val": splits["val"], "test": ()}
            for message in missing_classes(used, ddf.class_names):
                log.warning(message)
    model.to(ctx.device)
    train_per_rank = len(splits["train"]) // ctx.world_size
    run_cfg = resolved_config(cfg, ddf, model, pretrained, train_per_rank, ctx, run_dir.name)
    if run_cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    pool = paste_pool(run_cfg, splits, model.config, ddf.thumbnail_augmentation)
    if ctx.is_main and resume is None:  # a resumed run keeps the config.yaml it started with
        record = {
            "command": " ".join(sys.argv),
            "world_size": ctx.world_size,
            "dataset": dataset_record(ddf.path, splits),
        }
        save_config(run_dir / "config.yaml", run_cfg, record)
        log.info(f"run folder: {display_path(run_dir)}")
    return build_run(run_cfg, ctx, run_dir, resume, ddf, splits, model, weights, loaders, pool)


def build_run(
    cfg: ResolvedTrainConfig,
    ctx: DistContext,
    run_dir: Path,
    resume: Checkpoint | None,
    ddf: DatasetDefinition,
    splits: dict[str, tuple[LabelledSample, ...]],
    model: YOGO,
    weights: torch.Tensor | None,
    loaders: Loaders,
    pool: PastePool | None,
) -> Run:
    """The loaders, loss, optimiser, schedule, precision, weight average, DDP and W&B of a
    run whose settings are resolved."""
    data = make_data(cfg, ctx, run_dir, splits, model.config, loaders, pool)
    loss_fn = YOGOLoss(
        LossSettings(
            no_obj_weight=cfg.no_obj_weight,
            iou_weight=cfg.iou_weight,
            classify_weight=cfg.classify_weight,
            label_smoothing=cfg.label_smoothing,
            class_weights=weights,
            obj_loss=cfg.obj_loss,
            obj_target=cfg.obj_target,
        )
    )
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(data.train_loader) / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, cfg.lr_decay_factor)
    )
    autocast, scaler = precision_context(cfg.precision, ctx.device)
    net: torch.nn.Module = model
    if ctx.distributed:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    if ctx.is_main:
        log.info(
            f"precision {cfg.precision}, "
            f"{'channels-last' if cfg.channels_last else 'contiguous'} memory order, "
            f"torch.compile {'on' if cfg.compile else 'off'}, {data.num_workers} loader "
            "worker(s)"
        )
    wandb_id = resume.payload["resume"].get("wandb_id") if resume is not None else None
    return Run(
        cfg=cfg,
        ctx=ctx,
        dir=run_dir,
        class_names=ddf.class_names,
        model=model,
        net=net,
        ema=weight_average(cfg, model, total_steps),
        loss_fn=loss_fn,
        optimizer=optimizer,
        schedule=schedule,
        autocast=autocast,
        scaler=scaler,
        data=data,
        wandb_run=start_wandb(cfg, run_dir, wandb_id) if ctx.is_main else None,
        csv=MetricsCSV(run_dir / "metrics.csv", metric_columns(ddf.class_names)),
        curves=TrainingCurves(run_dir / "training_curves.png"),
    )


def weight_average(cfg: ResolvedTrainConfig, model: YOGO, total_steps: int) -> WeightAverage | None:
    """The EMA (--ema) or the SWA mean (--swa-epochs), or None."""
    if cfg.ema:
        return WeightAverage.for_run(model, total_steps)
    if cfg.swa_epochs:
        return WeightAverage(model, uniform=True)
    return None


def resolved_config(
    cfg: TrainConfig,
    ddf: DatasetDefinition,
    model: YOGO,
    pretrained: Checkpoint | None,
    train_per_rank: int,
    ctx: DistContext,
    name: str,
) -> ResolvedTrainConfig:
    """`cfg` with what the run decided filled in (model settings, paths, batch size, learning
    rate, precision, run name), so config.yaml repeats the run exactly and from any working
    directory."""
    m = model.config
    batch_size = cfg.batch_size or default_batch_size(train_per_rank, cfg.grad_accum)
    if cfg.batch_size is None and batch_size != DEFAULT_BATCH_SIZE:
        log.info(
            f"batch size {batch_size}: with {train_per_rank} training images per process, "
            f"{DEFAULT_BATCH_SIZE} would give fewer than {MIN_STEPS_PER_EPOCH} optimizer steps "
            "per epoch (--batch-size sets it)"
        )
    learning_rate = cfg.learning_rate
    if learning_rate is None:
        total_steps = math.ceil(train_per_rank / (batch_size * cfg.grad_accum)) * cfg.epochs
        learning_rate = default_learning_rate(total_steps)
        log.info(
            f"learning rate {learning_rate:.2g} for a run of about {total_steps} optimizer "
            "steps (--learning-rate sets it)"
        )
    resolved = {
        "ddf": str(ddf.path),
        "from_pretrained": str(pretrained.path.resolve()) if pretrained else None,
        "model": m.model_name,
        "image_hw": list(m.image_hw),
        "tile": list(m.image_hw) if m.tile_overlap is not None else None,
        "tile_overlap": m.tile_overlap,
        "rgb_images": m.channels == 3,
        "channels": m.channels,
        "normalize_images": m.normalize_images,
        "anchor_w": m.anchor_w,
        "anchor_h": m.anchor_h,
        "neighbour_cells": m.neighbour_cells,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "precision": resolve_precision(cfg.precision, ctx.device),
        "name": name,
    }
    return ResolvedTrainConfig(**{**cfg.to_dict(), **resolved})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
