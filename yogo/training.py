"""`yogo train` and `yogo.train(config)`: set-up, loop, validation, checkpoints, logging.

    run_dir = train(TrainConfig(ddf="data.yml", epochs=20))

`train` reads top to bottom as the run goes: `setup` (data, model, run folder, loaders,
optimiser, schedule), then per epoch `train_one_epoch`, `validate` and `end_epoch` (the
metrics row, plots, checkpoints, early stop), then `finish`. Where a run is lives in one
`TrainState` (yogo.resume), which last.pth saves and a resumed run restores.

The run folder holds config.yaml (every resolved value; `yogo train --config` repeats the run),
last.pth (every epoch, and at a stop), best.pth (best val mAP@0.5), metrics.csv,
training_curves.png, and at the end the validation PR curves and confusion matrix of best.pth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import signal
import socket
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from yogo.boxes import build_targets
from yogo.checkpoint import (
    Checkpoint,
    checkpoint_payload,
    load_checkpoint,
    remove_partial_files,
    require_checkpoint_file,
    save_checkpoint,
)
from yogo.config import (
    DEFAULT_BATCH_SIZE,
    MIN_STEPS_PER_EPOCH,
    TrainConfig,
    augment_settings,
    default_batch_size,
    default_learning_rate,
    save_config,
)
from yogo.data.cache import FrameCache, plan_cache, size_text
from yogo.data.dataset import DetectionDataset
from yogo.data.index import INDEX_NAME
from yogo.data.loader import EpochSampler, Loaders, ShardSampler, default_num_workers
from yogo.data.paste import PastePool
from yogo.data.report import collision_losses, grid_collisions
from yogo.data.scan import LabelledSample, require_trainable, scan_dataset
from yogo.ddf import DatasetDefinition
from yogo.dist import DistContext, lost_contact, setup_process, teardown
from yogo.ema import WeightAverage
from yogo.errors import Interrupted, RunError, UserError, display_path
from yogo.evaluate import evaluate_model, evaluate_sharded
from yogo.grid import require_usable_image_hw
from yogo.log import (
    MetricsCSV,
    plot_training_curves,
    progress,
    set_console_rank,
    start_wandb,
)
from yogo.loss import LossSettings, YOGOLoss
from yogo.model import YOGO, ModelConfig
from yogo.optim import lr_factor, make_optimizer, precision_context, resolve_precision
from yogo.outputs import require_output_folder
from yogo.plots import first_frames, plot_evaluation, plot_train_batch
from yogo.priors import class_weights, frame_weights, make_model
from yogo.resume import (
    LOSS_PARTS,
    TrainState,
    find_resume,
    restore_state,
    resumed_config,
    save_state,
)
from yogo.run_folder import RunFolder, dataset_record, require_new_run_name
from yogo.signals import StopRequest, requeue_slurm_job

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> Path:
    """Train a detector as `cfg` says; returns the run folder. Under torchrun or srun every
    rank calls this; rank 0 writes the run folder."""
    launched = time.perf_counter()
    cfg.require_valid()
    with StopRequest.install() as stop:  # from the start: a stop during set-up is one too
        cfg, resume = start_or_resume(cfg)
        ctx = setup_process(cfg.device, cfg.dist_timeout)
        set_console_rank(ctx.rank)
        try:
            with Loaders() as loaders, claim_run_folder(cfg, ctx, resume) as run_dir:
                return run_training(cfg, ctx, resume, stop, loaders, run_dir, launched)
        except RuntimeError as e:
            failure = lost_contact(ctx, e, cfg.dist_timeout)
            if failure is None:
                raise
            raise failure from e
        finally:
            teardown(ctx)


def run_training(
    cfg: TrainConfig,
    ctx: DistContext,
    resume: Checkpoint | None,
    stop: StopRequest,
    loaders: Loaders,
    run_dir: Path,
    launched: float,
) -> Path:
    """Set up, train every epoch, finish. Its own function so that the model (DDP, holding
    the process group) lives only in frames that `teardown` can clear."""
    run = setup(cfg, ctx, resume, loaders, run_dir)
    run.launched = launched
    state = start_state(run, resume)
    no_loss = torch.zeros((), dtype=torch.bool, device=ctx.device)
    stop_signal, _ = stop.agree(ctx, no_loss)
    if stop_signal:
        interrupt(run, state, stop_signal, "during set-up", saved=resume is not None)
    for epoch in range(state.epoch, run.cfg.epochs + 1):
        row = train_one_epoch(run, state, stop)
        report = validate(run, row) if run.validation_due(epoch) else None
        if end_epoch(run, state, stop, row, report):
            break
    finish(run, state, loaders)
    return run.dir


def start_or_resume(cfg: TrainConfig) -> tuple[TrainConfig, Checkpoint | None]:
    """The settings and checkpoint to continue (--resume), or `cfg` for a new run whose
    output folder and name are usable: refused now, before the slow set-up."""
    resume = find_resume(cfg)
    if resume is not None:
        require_output_folder(resume.path.parent, option="--resume", create=False)
        return resumed_config(cfg, resume), resume
    if not cfg.ddf:
        raise UserError("nothing to resume here; give a dataset definition file to start a run")
    require_output_folder(Path(cfg.output_dir), option="--output-dir")
    require_new_run_name(cfg)
    if cfg.from_pretrained:
        require_checkpoint_file(Path(cfg.from_pretrained))
    return cfg, None


@dataclass
class Data:
    """The datasets, samplers and loaders of a run."""

    train_loader: torch.utils.data.DataLoader[Any]
    train_sampler: EpochSampler
    val_set: DetectionDataset
    val_loader: torch.utils.data.DataLoader[Any]
    val_shard: ShardSampler
    num_workers: int


@dataclass
class Run:
    """What `setup` builds and the loop uses. Where the run is lives in `TrainState`; here only
    the objects' own state (weights, optimizer, ...) changes, and the bookkeeping fields below
    `csv`."""

    cfg: TrainConfig  # resolved: every None the run decided is filled in
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

    def swa_due(self, epoch: int) -> bool:
        """Whether epoch `epoch`'s final weights go into the SWA average."""
        return self.cfg.swa_epochs > 0 and epoch > self.cfg.epochs - self.cfg.swa_epochs

    def validation_due(self, epoch: int) -> bool:
        due = epoch % self.cfg.val_every == 0 or epoch == self.cfg.epochs
        return due and len(self.data.val_set) > 0


# --- set-up --------------------------------------------------------------------------------


@contextlib.contextmanager
def claim_run_folder(
    cfg: TrainConfig, ctx: DistContext, resume: Checkpoint | None
) -> Iterator[Path]:
    """The run folder, held by this job while the block runs (yogo.run_folder.RunFolder):
    rank 0 claims it and every rank gets its path, or rank 0's reason for refusing it."""
    folder, refusal = None, None
    if ctx.is_main:
        try:
            folder = RunFolder.claim(cfg, Path(cfg.ddf), resume.path if resume else None)
        except UserError as e:
            refusal = e
    path, reason = ctx.broadcast(
        (str(folder.path), None) if folder else (None, str(refusal) if refusal else None)
    )
    if refusal is not None:
        raise refusal
    if path is None:
        raise UserError(f"rank 0 could not use the run folder: {reason}")
    try:
        yield Path(path)
    except BaseException:
        if folder is not None:
            folder.release(failed=True)
        raise
    if folder is not None:
        folder.release()


def setup(
    cfg: TrainConfig,
    ctx: DistContext,
    resume: Checkpoint | None,
    loaders: Loaders,
    run_dir: Path,
) -> Run:
    """Data, model, run folder, loaders, loss, optimiser, schedule, precision, EMA, DDP, W&B."""
    seed_everything(cfg.seed)
    ddf, splits = load_splits(cfg, ctx, run_dir / INDEX_NAME)
    pretrained = load_checkpoint(Path(cfg.from_pretrained)) if cfg.from_pretrained else None
    weights = class_weights(cfg.class_weights, splits["train"], len(ddf.class_names))
    if resume is not None:
        model = resume.build_model()
    else:
        model = make_model(cfg, ddf.class_names, splits["train"], pretrained, weights)
        require_usable_image_hw(model.config.image_hw)
        if ctx.is_main:
            warn_collision_losses(splits["train"], model.config)
    model.to(ctx.device)
    cfg = resolved_config(cfg, ddf, model, pretrained, len(splits["train"]) // ctx.world_size)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, ctx.device))
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    cfg = dataclasses.replace(cfg, name=run_dir.name)
    prepare_run_dir(cfg, ctx, run_dir, resume, ddf, splits)

    assert cfg.batch_size is not None  # resolved above
    data = make_data(cfg, ctx, run_dir, splits, model.config, loaders, ddf.thumbnail_augmentation)
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
    )


PER_CLASS = ("AP50", "precision", "recall")  # per-class values of each validation


def metric_columns(class_names: Sequence[str]) -> list[str]:
    """metrics.csv's columns (and W&B's keys): the epoch's training values, then validation's,
    per class as `val_AP50/<class>` and so on (W&B groups them by the part before `/`)."""
    per_class = [f"val_{key}/{name}" for key in PER_CLASS for name in class_names]
    return [
        *("epoch", "step", "lr", *LOSS_PARTS, "images_per_s", "data_wait_fraction"),
        *("val_loss", "val_mAP50", "val_mAP50_95", *per_class, "elapsed_s"),
    ]


def weight_average(cfg: TrainConfig, model: YOGO, total_steps: int) -> WeightAverage | None:
    """The EMA (--ema) or the SWA mean (--swa-epochs), or None."""
    if cfg.ema:
        return WeightAverage.for_run(model, total_steps)
    if cfg.swa_epochs:
        return WeightAverage(model, uniform=True)
    return None


def make_data(
    cfg: TrainConfig,
    ctx: DistContext,
    run_dir: Path,
    splits: dict[str, tuple[LabelledSample, ...]],
    model: ModelConfig,
    loaders: Loaders,
    thumbnails: dict[str, tuple[Path, ...]] | None = None,
) -> Data:
    """The loaders `yogo train` reads (benchmarks/bench_loader.py times exactly these)."""
    assert cfg.batch_size is not None
    # Not saved in the config: a resumed or repeated run uses the CPUs of its own allocation.
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    pin = ctx.device.type == "cuda"
    paste = None
    if cfg.augment and cfg.copy_paste > 0:
        if thumbnails:
            pool = PastePool.from_thumbnails(thumbnails, model.class_names, model.channels)
            source = "thumbnail(s) of the DDF's thumbnail_augmentation"
        else:
            pool = PastePool.from_frames(splits["train"], model.num_classes)
            source = "object(s) of the rare classes from the training frames"
        paste = (pool, cfg.copy_paste)
        log.info(f"copy-paste {cfg.copy_paste:g}: from {len(pool)} {source}")
    train_set = DetectionDataset(
        splits["train"],
        model.image_hw,
        model.channels,
        cfg.augment,
        cfg.seed,
        augment_settings(cfg),
        paste,
    )
    # One code path for every world size: each rank draws its share of a seeded permutation.
    weights = None
    if cfg.sampler == "balanced":
        weights = frame_weights(splits["train"], model.num_classes)
        log.info(
            f"sampler balanced: frames holding rare classes drawn up to "
            f"{float(weights.max() / weights.min()):.1f}x as often as the others"
        )
    train_sampler = EpochSampler(len(train_set), ctx.rank, ctx.world_size, cfg.seed, weights)
    val_set = DetectionDataset(splits["val"], model.image_hw, model.channels)
    attach_frame_cache(cfg.cache, ctx, run_dir, train_set, val_set)
    val_shard = ShardSampler(len(val_set), ctx.rank, ctx.world_size)
    return Data(
        loaders.make(train_set, cfg.batch_size, workers, cfg.seed, pin, train_sampler),
        train_sampler,
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
    count = sum(sizes)
    plan, refusal = None, None
    if ctx.is_main:
        try:
            plan = plan_cache(mode, count * int(np.prod(shape)), run_dir)
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
            cache = FrameCache.create(plan, count, shape)
        except UserError as e:
            failure = str(e)
    shared = ctx.gather((host, cache.handle() if cache else None, failure))
    failures = [reason for _, _, reason in shared if reason is not None]
    if failures:
        raise UserError(failures[0])
    if cache is None:
        handle = next(h for name, h, _ in shared if name == host and h is not None)
        try:
            cache = FrameCache.open(handle, count, shape)
        except OSError as e:  # /proc of another process hidden (hardened kernels)
            log.warning(f"rank {ctx.rank}: cannot share the node's frame cache ({e}); own copy")
            cache = FrameCache.create(plan, count, shape)
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


def load_splits(
    cfg: TrainConfig, ctx: DistContext, index: Path
) -> tuple[DatasetDefinition, dict[str, tuple[LabelledSample, ...]]]:
    """The DDF and the samples of each split, scanned under --bad-labels and subsampled.

    Rank 0 scans and brings the run's label index up to date; the other ranks then read the
    index instead of every label file (on a shared file system, once per job, not per rank)."""
    started = time.perf_counter()
    ddf = DatasetDefinition.from_yaml(cfg.ddf, cfg.dataset_split_override)
    scan = None
    try:
        if ctx.is_main:
            scan = scan_dataset(
                ddf, cfg.bad_labels, index=index, min_confidence=cfg.min_label_confidence
            )
    finally:
        ctx.broadcast(None)  # the index is written (or rank 0 failed; the others will too)
    if scan is None:
        scan = scan_dataset(
            ddf, cfg.bad_labels, index=index, min_confidence=cfg.min_label_confidence
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


def resolved_config(
    cfg: TrainConfig,
    ddf: DatasetDefinition,
    model: YOGO,
    pretrained: Checkpoint | None,
    train_per_rank: int,
) -> TrainConfig:
    """`cfg` with what the run decided filled in (model settings, paths, batch size), so
    config.yaml repeats the run exactly and from any working directory."""
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
    return dataclasses.replace(
        cfg,
        ddf=str(ddf.path),
        from_pretrained=str(pretrained.path.resolve()) if pretrained else None,
        model=m.model_name,
        image_hw=list(m.image_hw),
        rgb_images=m.channels == 3,
        normalize_images=m.normalize_images,
        anchor_w=m.anchor_w,
        anchor_h=m.anchor_h,
        neighbour_cells=m.centre_range > 1,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )


def prepare_run_dir(
    cfg: TrainConfig,
    ctx: DistContext,
    run_dir: Path,
    resume: Checkpoint | None,
    ddf: DatasetDefinition,
    splits: dict[str, tuple[LabelledSample, ...]],
) -> None:
    """Rank 0: a resumed run's folder loses the partial files of a crash; a new run's gets
    config.yaml."""
    if not ctx.is_main:
        return
    if resume is not None:
        for path in remove_partial_files(run_dir):
            log.info(f"removed {display_path(path)} (a write interrupted by a crash)")
        return
    record = {
        "command": " ".join(sys.argv),
        "world_size": ctx.world_size,
        "dataset": dataset_record(ddf.path, splits),
    }
    save_config(run_dir / "config.yaml", cfg, record)
    log.info(f"run folder: {display_path(run_dir)}")


def start_state(run: Run, resume: Checkpoint | None) -> TrainState:
    """A new run's state, or the resumed one's (optimizer, schedule, RNG and all)."""
    if resume is None:
        state = TrainState(sums=torch.zeros(len(LOSS_PARTS), device=run.ctx.device))
    else:
        state = restore_state(
            resume.payload["resume"], run.optimizer, run.schedule, run.scaler, run.model, run.ema
        )
        # Rows of epochs that last.pth does not hold (a crash between the row and the save)
        # are trained again: the file keeps what last.pth holds, so no row appears twice.
        run.rows = run.csv.read()
        kept = [row for row in run.rows if row["epoch"] < state.epoch]
        if len(kept) < len(run.rows) and run.ctx.is_main:
            run.csv.rewrite(kept)
            log.info(
                f"metrics.csv: removed {len(run.rows) - len(kept)} row(s) after the epoch "
                "last.pth holds (they are trained again)"
            )
        run.rows = kept
        log.info(
            f"resuming {display_path(run.dir)} at optimizer step {state.step} (epoch "
            f"{state.epoch}, batch {state.batch})"
        )
    if run.wandb_run is not None:
        state.wandb_id = run.wandb_run.id
    run.started = time.perf_counter() - state.elapsed_s
    return state


# --- the loop ------------------------------------------------------------------------------


def train_one_epoch(run: Run, state: TrainState, stop: StopRequest) -> dict[str, Any]:
    """The rest of `state.epoch` from `state.batch`; returns the start of its metrics row.
    A stop signal saves last.pth after an optimizer step and raises Interrupted."""
    cfg, ctx, device = run.cfg, run.ctx, run.ctx.device
    epoch, first = state.epoch, state.batch
    run.model.train()
    assert cfg.batch_size is not None
    run.data.train_sampler.set_epoch(epoch, skip=first * cfg.batch_size)
    batches_per_epoch = len(run.data.train_loader) + first
    grid, reach = run.model.config.grid, run.model.config.centre_range
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    data_wait, epoch_start = 0.0, time.perf_counter()
    wait_start = time.perf_counter()
    batches = progress(run.data.train_loader, f"epoch {epoch}/{cfg.epochs}")
    for i, batch in enumerate(batches, start=first):
        data_wait += time.perf_counter() - wait_start
        run.skipped.update(batch.skipped)
        for path in batch.skipped:
            log.warning(f"{display_path(path)}: image fails to decode; skipped")
        if epoch == 1 and i == 0 and ctx.is_main:  # what the model is fed, once per run
            plot_train_batch(
                batch.images.numpy(), batch.labels.numpy(), run.class_names,
                run.dir / "train_batch.png",
            )  # fmt: skip
        images = batch.images.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = build_targets(batch.labels, len(images), grid, device, neighbours=reach > 1)
        stepping = (i + 1) % cfg.grad_accum == 0 or i + 1 == batches_per_epoch
        compiling = cfg.compile and not run.compiled
        step_start = time.perf_counter()
        with gradient_sync(run.net, stepping):
            with run.autocast():
                raw = run.net(images)
            parts = run.loss_fn(raw, targets, run.model.anchors, reach)
            nonfinite |= ~torch.isfinite(parts["loss"].detach())
            run.scaler.scale(parts["loss"] / cfg.grad_accum).backward()
        if compiling:  # the first pass compiles: reported, and left out of images/s
            run.compiled = True
            compile_s = time.perf_counter() - step_start
            epoch_start += compile_s
            log.info(f"torch.compile: {compile_s:.1f} s (not counted in images/s)")
        stop_signal = optimizer_step(run, state, stop, nonfinite, i) if stepping else 0
        state.sums += torch.stack([parts[k].detach() for k in LOSS_PARTS]) * len(images)
        state.images_seen += len(images)
        if not batches.disable:  # the visible progress bar is the only per-step sync
            batches.set_postfix(
                loss=f"{float(parts['loss'].detach()):.3g}",
                lr=f"{run.schedule.get_last_lr()[0]:.2e}",
            )
        if stop_signal and i + 1 < batches_per_epoch:
            state.batch = i + 1
            if ctx.is_main:
                save_checkpoint(run.dir / "last.pth", payload(run, state, epoch, finished=False))
            interrupt(run, state, stop_signal, f"epoch {epoch}, batch {i + 1}")
        wait_start = time.perf_counter()
    if run.swa_due(epoch):
        assert run.ema is not None
        run.ema.update()  # this epoch's final weights join the SWA mean
    elapsed = time.perf_counter() - epoch_start
    # One collective per epoch: every rank then reports the same means.
    images_seen = torch.tensor([float(state.images_seen)], device=device)
    totals = ctx.sum(torch.cat([state.sums, images_seen]))
    means = (totals[:-1] / max(float(totals[-1]), 1.0)).tolist()
    return {
        "epoch": epoch,
        "step": state.step,
        "lr": run.schedule.get_last_lr()[0],
        **dict(zip(LOSS_PARTS, means, strict=True)),
        "images_per_s": float(totals[-1]) / elapsed,
        "data_wait_fraction": data_wait / elapsed,
    }


def gradient_sync(net: torch.nn.Module, stepping: bool) -> contextlib.AbstractContextManager[Any]:
    """Where the forward and backward passes of a micro-batch run: DDP all-reduces gradients
    only on the micro-batch that ends an optimizer step (`no_sync` on the others), so
    `--grad-accum N` costs one all-reduce per step, not N."""
    if isinstance(net, DistributedDataParallel) and not stepping:
        return net.no_sync()
    return contextlib.nullcontext()


def optimizer_step(
    run: Run, state: TrainState, stop: StopRequest, nonfinite: torch.Tensor, batch: int
) -> int:
    """Step with the accumulated gradients, after one collective that decides for every rank
    whether a loss was non-finite (no rank steps then) and whether a stop signal arrived
    (returned: act on it after this step)."""
    cfg = run.cfg
    stop_signal, bad_rank = stop.agree(run.ctx, nonfinite)
    if bad_rank:
        raise RunError(
            f"the loss became non-finite on rank {bad_rank - 1} in epoch {state.epoch}, "
            f"batch {batch + 1}; no optimizer step was taken with it and last.pth "
            "holds the last finished epoch. Lower --learning-rate or set --grad-clip."
        )
    if cfg.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # fp16's scaler skips the steps whose gradients overflow, by design; the schedule
        # follows the step count all the same (torch would warn that it ran first).
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`", UserWarning)
        run.schedule.step()
    state.step += 1
    nonfinite.zero_()
    if run.launched is not None:
        log.info(f"first optimizer step {time.perf_counter() - run.launched:.1f} s after start")
        run.launched = None
    if run.ema is not None and not run.ema.uniform:
        run.ema.update()
    return stop_signal


def validate(run: Run, row: dict[str, Any]) -> dict[str, Any]:
    """Evaluate on the val split, every rank its shard; the report is the same on every rank
    (decisions agree). Adds val_loss and val mAPs to `row`."""
    metrics, val_loss = evaluate_sharded(
        run.ctx,
        run.evaluated_model,
        run.data.val_loader,
        run.data.val_shard,
        run.class_names,
        run.cfg.obj_thresh,
        run.cfg.iou_thresh,
        run.loss_fn,
    )
    report = metrics.compute()
    row.update(val_loss=val_loss, val_mAP50=report["mAP50"], val_mAP50_95=report["mAP50_95"])
    for name, values in report["per_class"].items():
        row.update({f"val_{key}/{name}": values[key] for key in PER_CLASS})
    return report


def end_epoch(
    run: Run,
    state: TrainState,
    stop: StopRequest,
    row: dict[str, Any],
    report: dict[str, Any] | None,
) -> bool:
    """Log the epoch, keep the best, save last.pth (and best.pth), then stop on a signal or
    on --patience. True when training is over before the last epoch."""
    cfg, ctx, epoch = run.cfg, run.ctx, state.epoch
    row["elapsed_s"] = time.perf_counter() - run.started
    run.rows.append(row)
    if ctx.is_main:
        run.csv.append(row)
        plot_training_curves(run.rows, run.dir / "training_curves.png")
        if run.wandb_run is not None:
            run.wandb_run.log({k: v for k, v in row.items() if v is not None}, step=state.step)
        print_epoch(row, report)

    improved = report is not None and (report["mAP50"] or 0.0) > state.best_map
    if improved:
        assert report is not None
        state.best_map, state.since_best = report["mAP50"] or 0.0, 0
    elif report is not None:
        state.since_best += 1
    early_stop = (
        cfg.patience is not None and report is not None and state.since_best >= cfg.patience
    )
    finished = epoch == cfg.epochs or early_stop
    state.next_epoch()
    saved = payload(
        run, state, epoch, finished, metrics={k: v for k, v in row.items() if v is not None}
    )
    if ctx.is_main:
        save_checkpoint(run.dir / "last.pth", saved)
        if improved:
            save_checkpoint(run.dir / "best.pth", saved)
    if not finished:  # a signal during validation or the save: last.pth is the epoch end
        stop_signal, _ = stop.agree(ctx, torch.zeros((), dtype=torch.bool, device=ctx.device))
        if stop_signal:
            interrupt(run, state, stop_signal, f"end of epoch {epoch}")
    if early_stop:
        log.info(
            f"early stop: val mAP@0.5 has not improved for {state.since_best} validations "
            f"(best {state.best_map:.4f})"
        )
    return early_stop


def payload(
    run: Run, state: TrainState, epoch: int, finished: bool, **extra: Any
) -> dict[str, Any]:
    """last.pth's content: weights (the EMA's with --ema), settings, and `state` with all an
    exact continuation needs."""
    state.elapsed_s = time.perf_counter() - run.started
    resume = save_state(state, run.optimizer, run.schedule, run.scaler, run.model, run.ema)
    return checkpoint_payload(
        run.evaluated_model,
        config=run.cfg.to_dict(),
        epoch=epoch,
        step=state.step,
        resume=resume,
        finished=finished,
        **extra,
    )


def interrupt(
    run: Run, state: TrainState, signum: int, position: str, saved: bool = True
) -> NoReturn:
    """Stop after last.pth is saved (or before any training, `saved=False`: nothing to
    save); on SIGUSR1 inside SLURM, rank 0 requeues the job. The message comes first: a
    requeue ends the job step within seconds, and srun stops forwarding output when it does."""
    requeue = run.ctx.is_main and signum == signal.SIGUSR1 and "SLURM_JOB_ID" in os.environ
    if saved:
        where = f"after optimizer step {state.step} ({position})"
        continued = "last.pth holds the exact position"
    else:
        where = position
        continued = (
            f"nothing was trained yet; `--resume auto --name {run.dir.name}` "
            f"(--output-dir {display_path(run.dir.parent)}) starts it again"
        )
    stopped = Interrupted(signum, requeue, where, continued)
    log.info(str(stopped))  # rank 0 speaks
    sys.stdout.flush()
    sys.stderr.flush()
    if requeue:
        requeue_slurm_job()  # says so itself when it fails
    raise stopped


def finish(run: Run, state: TrainState, loaders: Loaders) -> None:
    """best.pth's PR curves and confusion matrix on the whole val split; the summary."""
    cfg, device = run.cfg, run.ctx.device
    if len(run.data.val_set) and run.ctx.is_main:
        assert cfg.batch_size is not None
        best = load_checkpoint(run.dir / "best.pth").build_model().to(device)
        pin = device.type == "cuda"
        whole_val = loaders.make(
            run.data.val_set, cfg.batch_size, run.data.num_workers, cfg.seed, pin
        )
        metrics, _ = evaluate_model(
            best, whole_val, device, run.class_names, cfg.obj_thresh, cfg.iou_thresh
        )
        plot_evaluation(metrics, run.dir / "val", first_frames(run.data.val_set, metrics))
    if run.skipped:
        log.warning(f"{len(run.skipped)} image(s) failed to decode and were skipped:")
        for path in sorted(run.skipped):
            log.warning(f"  {display_path(path)}")
    if run.wandb_run is not None:
        run.wandb_run.finish()
    log.info(
        f"done: {display_path(run.dir)}"
        + (f" (best val mAP@0.5 {state.best_map:.4f})" if state.best_map >= 0 else "")
    )


# --- helpers -------------------------------------------------------------------------------


def warn_collision_losses(train: tuple[LabelledSample, ...], config: ModelConfig) -> None:
    """Say when the grid keeps too few objects of a class (one object per cell)."""
    _, lost, total = grid_collisions(train, config.grid, config.num_classes)
    for message in collision_losses(lost, total, config.class_names, config.image_hw):
        log.warning(message)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def subsample(
    samples: tuple[LabelledSample, ...], fraction: float | None
) -> tuple[LabelledSample, ...]:
    """Evenly spaced samples (by label path), so every acquisition keeps its share."""
    if fraction is None or not samples:
        return samples
    keep = max(1, round(fraction * len(samples)))
    return tuple(samples[int(i)] for i in np.linspace(0, len(samples) - 1, keep).round())


def print_epoch(row: dict[str, Any], report: dict[str, Any] | None) -> None:
    text = (
        f"epoch {row['epoch']}: loss {row['loss']:.4g} (obj {row['objectness']:.3g}, "
        f"box {row['box']:.3g}, class {row['class']:.3g}), lr {row['lr']:.2e}, "
        f"{row['images_per_s']:.1f} img/s, data wait {100 * row['data_wait_fraction']:.0f}%"
    )
    if report is not None and report["mAP50"] is not None:
        per_class = ", ".join(
            f"{n} {c['AP50']:.3f}" for n, c in report["per_class"].items() if c["AP50"] is not None
        )
        text += f"; val mAP@0.5 {report['mAP50']:.4f} ({per_class})"
    log.info(text)
    if report is not None:
        for line in dead_classes(report):
            log.warning(line)


# A class below DEAD_AP while the mean is at least LOOKS_FINE is a class the mean hides.
DEAD_AP, LOOKS_FINE = 0.1, 0.5


def dead_classes(report: dict[str, Any]) -> list[str]:
    """One line per class (with val labels) that the model does not find although the
    validation mAP@0.5 looks fine."""
    mean = report["mAP50"]
    if mean is None or mean < LOOKS_FINE:
        return []
    return [
        f"class '{name}': val AP@0.5 {c['AP50']:.3f} while mAP@0.5 is {mean:.3f}; the mean "
        f"hides a class the model does not find ({c['num_true']} labelled in val)"
        for name, c in report["per_class"].items()
        if c["AP50"] is not None and c["AP50"] < DEAD_AP
    ]
