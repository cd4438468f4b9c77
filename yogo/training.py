"""`yogo train` and `yogo.train(config)`: set-up, loop, validation, checkpoints, logging.

    run_dir = train(TrainConfig(ddf="data.yml", epochs=20))

The run folder holds config.yaml (every resolved value; `yogo train --config` repeats the run),
last.pth (every epoch), best.pth (best val mAP@0.5), metrics.csv, training_curves.png, and at
the end the validation PR curves and confusion matrix of best.pth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import random
import signal
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from yogo.boxes import build_targets
from yogo.checkpoint import (
    Checkpoint,
    checkpoint_payload,
    load_checkpoint,
    remove_partial_files,
    save_checkpoint,
)
from yogo.config import (
    DEFAULT_BATCH_SIZE,
    MIN_STEPS_PER_EPOCH,
    TrainConfig,
    default_batch_size,
    save_config,
)
from yogo.data.dataset import DetectionDataset
from yogo.data.loader import (
    EpochSampler,
    ShardSampler,
    close_loaders,
    default_num_workers,
    make_loader,
)
from yogo.data.verify import LabelledSample, require_trainable, scan_dataset
from yogo.ddf import DatasetDefinition
from yogo.dist import DistContext, lost_contact, setup, teardown
from yogo.ema import WeightAverage
from yogo.errors import RunError, UserError, display_path
from yogo.evaluate import evaluate_model
from yogo.log import (
    MetricsCSV,
    plot_evaluation,
    plot_training_curves,
    set_console_rank,
    start_wandb,
)
from yogo.loss import LossSettings, YOGOLoss
from yogo.metrics import DetectionMetrics
from yogo.model import YOGO, grid_shape
from yogo.optim import lr_factor, make_optimizer, precision_context
from yogo.priors import class_weights, make_model
from yogo.resume import find_resume, set_rng_state, training_state
from yogo.signals import Interrupted, StopRequest, requeue_slurm_job

log = logging.getLogger(__name__)
LOSS_PARTS = ("loss", "objectness", "box", "class")


def train(cfg: TrainConfig) -> Path:
    """Train a detector as `cfg` says; returns the run folder. Under torchrun or srun every
    rank calls this; rank 0 writes the run folder."""
    cfg.validate()
    resume = find_resume(cfg)
    if resume is not None:
        cfg = dataclasses.replace(TrainConfig.from_dict(resume.payload["config"]), resume=None)
    elif not cfg.ddf:
        raise UserError("nothing to resume here; give a dataset definition file to start a run")
    ctx = setup(cfg.device, cfg.dist_timeout)
    set_console_rank(ctx.rank)
    try:
        return _train(cfg, ctx, resume)
    except RuntimeError as e:
        failure = lost_contact(ctx, e, cfg.dist_timeout)
        if failure is None:
            raise
        raise failure from e
    finally:
        close_loaders()
        teardown(ctx)


def _train(cfg: TrainConfig, ctx: DistContext, resume: Checkpoint | None) -> Path:
    device = ctx.device
    if resume is None:
        require_new_run_name(cfg)  # before the slow part: a taken name fails at once
    seed_everything(cfg.seed)

    # --- data ------------------------------------------------------------------------------
    ddf = DatasetDefinition.from_yaml(cfg.ddf, cfg.dataset_split_override)
    scan = scan_dataset(ddf, cfg.bad_labels)  # type: ignore[arg-type]
    require_trainable(scan)
    handled = Counter(p.action.split(":")[0] for p in scan.problems if p.action is not None)
    if handled:
        summary = ", ".join(f"{n} {action}" for action, n in sorted(handled.items()))
        log.warning(f"--bad-labels {cfg.bad_labels}: {summary} (`yogo check` lists each)")
    splits = {name: subsample(samples, cfg.subsample) for name, samples in scan.splits.items()}
    if not splits["val"]:
        log.info(
            "no validation split: best.pth is not written (add val to "
            "dataset_split_fractions to select the best epoch)"
        )

    # --- model -----------------------------------------------------------------------------
    pretrained = load_checkpoint(Path(cfg.from_pretrained)) if cfg.from_pretrained else None
    weights = class_weights(cfg.class_weights, splits["train"], len(ddf.classes))
    if resume is not None:
        model, info = resume.build_model(), resume.info
    else:
        model, info = make_model(cfg, ddf.classes, splits["train"], pretrained, weights)
    model.to(device)
    cfg = dataclasses.replace(
        cfg,
        ddf=str(ddf.path),  # resolved, so `--config` works from any working directory
        from_pretrained=str(pretrained.path.resolve()) if pretrained else None,
        model=info.model_name,
        image_hw=list(info.image_hw),
        rgb_images=info.channels == 3,
        normalize_images=info.normalize_images,
        anchor_w=info.anchor_w,
        anchor_h=info.anchor_h,
    )

    per_rank = len(splits["train"]) // ctx.world_size
    batch_size = cfg.batch_size or default_batch_size(per_rank, cfg.grad_accum)
    if cfg.batch_size is None and batch_size != DEFAULT_BATCH_SIZE:
        log.info(
            f"batch size {batch_size}: with {per_rank} training images per process, "
            f"{DEFAULT_BATCH_SIZE} would give fewer than {MIN_STEPS_PER_EPOCH} optimizer steps "
            "per epoch (--batch-size sets it)"
        )
    cfg = dataclasses.replace(cfg, batch_size=batch_size)

    # --- run folder ------------------------------------------------------------------------
    if resume is not None:
        run_dir = resume.path.parent
        if ctx.is_main:
            for path in remove_partial_files(run_dir):
                log.info(f"removed {display_path(path)} (a write interrupted by a crash)")
    else:
        new_dir = str(create_run_dir(cfg, ddf.path)) if ctx.is_main else None
        run_dir = Path(ctx.broadcast(new_dir))
    cfg = dataclasses.replace(cfg, name=run_dir.name)
    if ctx.is_main and resume is None:
        record = {
            "command": " ".join(sys.argv),
            "world_size": ctx.world_size,
            "dataset": dataset_record(ddf, splits),
        }
        save_config(run_dir / "config.yaml", cfg, record)
        log.info(f"run folder: {display_path(run_dir)}")

    # --- loaders, optimisation -------------------------------------------------------------
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    pin = device.type == "cuda"
    train_set = DetectionDataset(
        splits["train"], info.image_hw, info.channels, cfg.augment, cfg.seed
    )
    # One code path for every world size: each rank draws its share of a seeded permutation.
    train_sampler = EpochSampler(len(train_set), ctx.rank, ctx.world_size, cfg.seed)
    train_loader = make_loader(
        train_set, batch_size, False, workers, cfg.seed, pin, sampler=train_sampler
    )
    val_set = DetectionDataset(splits["val"], info.image_hw, info.channels)
    val_shard = ShardSampler(len(val_set), ctx.rank, ctx.world_size)
    val_loader = make_loader(val_set, batch_size, False, workers, cfg.seed, pin, sampler=val_shard)
    grid = grid_shape(info.image_hw)
    loss_fn = YOGOLoss(
        LossSettings(
            no_obj_weight=cfg.no_obj_weight,
            iou_weight=cfg.iou_weight,
            classify_weight=cfg.classify_weight,
            label_smoothing=cfg.label_smoothing,
            class_weights=weights,
        )
    )
    optimizer = make_optimizer(model, cfg)
    batches_per_epoch = len(train_loader)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, cfg.lr_decay_factor)
    )
    autocast, scaler = precision_context(cfg.precision, device)
    anchors: torch.Tensor = model.anchors  # type: ignore[assignment]
    ema = WeightAverage(model) if cfg.ema else None
    net = model
    if ctx.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)  # type: ignore[assignment]
    wandb_run = (
        None
        if not ctx.is_main
        else start_wandb(
            cfg.wandb,
            run_dir,
            cfg.to_dict(),
            run_dir.name,
            cfg.wandb_project,
            cfg.wandb_entity,
            cfg.note,
            cfg.tags,
            resume.payload["resume"].get("wandb_id") if resume is not None else None,
        )
    )

    # --- the loop --------------------------------------------------------------------------
    csv = MetricsCSV(run_dir / "metrics.csv")
    rows: list[dict[str, Any]] = csv.read() if resume is not None else []
    best_map, since_best, step = -1.0, 0, 0
    start_epoch, start_batch = 1, 0
    sums = torch.zeros(len(LOSS_PARTS), device=device)  # summed on the device: no sync
    images_seen, elapsed_before = 0, 0.0
    if resume is not None:
        state = resume.payload["resume"]
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
        best_map, since_best = state["best_map"], state["since_best"]
        sums, images_seen = state["sums"].to(device), state["images_seen"]
        if ema is not None:  # the checkpoint's weights are the average; the raw ones are here
            model.load_state_dict(state["train_weights"])
            ema.updates = state["ema_updates"]
        log.info(
            f"resuming {display_path(run_dir)} at optimizer step {step} (epoch {start_epoch}, "
            f"batch {start_batch})"
        )
        elapsed_before = state.get("elapsed_s", 0.0)

    def checkpoint(
        next_epoch: int, next_batch: int, loss_sums: torch.Tensor, seen: int, **extra: Any
    ) -> dict[str, Any]:
        """last.pth's payload: weights, settings, and the exact position to resume from."""
        position = {
            "epoch": next_epoch,
            "batch": next_batch,
            "step": step,
            "sums": loss_sums,
            "images_seen": seen,
            "elapsed_s": time.perf_counter() - start,
        }
        state = training_state(optimizer, schedule, scaler, best_map, since_best)
        if ema is not None:
            state["train_weights"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            state["ema_updates"] = ema.updates
        if wandb_run is not None:
            state["wandb_id"] = wandb_run.id
        return checkpoint_payload(
            ema.model if ema is not None else model,
            info,
            config=cfg.to_dict(),
            epoch=epoch,
            step=step,
            resume={**position, **state},
            **extra,
        )

    stop = StopRequest.install()

    def interrupt(signum: int, position: str) -> NoReturn:
        requeued = ctx.is_main and signum == signal.SIGUSR1 and requeue_slurm_job()
        raise Interrupted(signum, requeued, f"after optimizer step {step} ({position})")

    skipped: set[Path] = set()
    start = time.perf_counter() - elapsed_before
    for epoch in range(start_epoch, cfg.epochs + 1):
        model.train()
        first = start_batch if epoch == start_epoch else 0
        train_sampler.set_epoch(epoch, skip=first * batch_size)
        if first == 0:
            sums, images_seen = torch.zeros(len(LOSS_PARTS), device=device), 0
        data_wait, epoch_start = 0.0, time.perf_counter()
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        stop_signal = 0
        wait_start = time.perf_counter()
        batches = progress(train_loader, f"epoch {epoch}/{cfg.epochs}")
        for i, batch in enumerate(batches, start=first):
            data_wait += time.perf_counter() - wait_start
            skipped.update(batch.skipped)
            for path in batch.skipped:
                log.warning(f"{display_path(path)}: image fails to decode; skipped")
            images = batch.images.to(device, non_blocking=True)
            labels = batch.labels.to(device, non_blocking=True)
            targets = build_targets(labels, len(images), grid)
            with autocast():
                raw = net(images)
            parts = loss_fn(raw, targets, anchors)
            nonfinite |= ~torch.isfinite(parts["loss"].detach())
            scaler.scale(parts["loss"] / cfg.grad_accum).backward()
            stepped = (i + 1) % cfg.grad_accum == 0 or i + 1 == batches_per_epoch
            if stepped:
                # One collective per optimizer step: stop signals and non-finite losses.
                stop_signal, bad_rank = stop.agree(ctx, nonfinite)
                if bad_rank:
                    raise RunError(
                        f"the loss became non-finite on rank {bad_rank - 1} in epoch {epoch}, "
                        f"batch {i + 1}; no optimizer step was taken with it and last.pth "
                        "holds the last finished epoch. Lower --learning-rate or set "
                        "--grad-clip."
                    )
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                schedule.step()
                step += 1
                nonfinite.zero_()
                if ema is not None:
                    ema.update()
            sums += torch.stack([parts[k].detach() for k in LOSS_PARTS]) * len(images)
            images_seen += len(images)
            if not batches.disable:  # the visible progress bar is the only per-step sync
                batches.set_postfix(
                    loss=f"{float(parts['loss'].detach()):.3g}",
                    lr=f"{schedule.get_last_lr()[0]:.2e}",
                )
            if stepped and stop_signal and i + 1 < batches_per_epoch:
                if ctx.is_main:
                    save_checkpoint(
                        run_dir / "last.pth",
                        checkpoint(epoch, i + 1, sums, images_seen, finished=False),
                    )
                interrupt(stop_signal, f"epoch {epoch}, batch {i + 1}")
            wait_start = time.perf_counter()
        elapsed = time.perf_counter() - epoch_start
        row: dict[str, Any] = {"epoch": epoch, "step": step, "lr": schedule.get_last_lr()[0]}
        # One collective per epoch: every rank then takes the same NaN decision.
        totals = ctx.sum(torch.cat([sums, torch.tensor([float(images_seen)], device=device)]))
        means = (totals[:-1] / max(float(totals[-1]), 1.0)).tolist()
        row.update(dict(zip(LOSS_PARTS, means, strict=True)))

        due = epoch % cfg.val_every == 0 or epoch == cfg.epochs
        report = None
        if splits["val"] and due:
            metrics, val_loss = validate(
                ctx,
                ema.model if ema is not None else model,
                val_loader,
                val_shard,
                ddf.classes,
                cfg,
                loss_fn,
            )
            report = metrics.compute()  # the same on every rank: decisions agree
            row.update(
                val_loss=val_loss, val_mAP50=report["mAP50"], val_mAP50_95=report["mAP50_95"]
            )
        row.update(
            images_per_s=float(totals[-1]) / elapsed,
            data_wait_fraction=data_wait / elapsed,
            elapsed_s=time.perf_counter() - start,
        )
        rows.append(row)
        if ctx.is_main:
            csv.append(row)
            plot_training_curves(rows, run_dir / "training_curves.png")
            if wandb_run is not None:
                wandb_run.log({k: v for k, v in row.items() if v is not None}, step=step)
            print_epoch(row, report)

        improved = report is not None and (report["mAP50"] or 0.0) > best_map
        if report is not None:
            best_map, since_best = (
                (report["mAP50"] or 0.0, 0) if improved else (best_map, since_best + 1)
            )
        early_stop = cfg.patience is not None and report is not None and since_best >= cfg.patience
        finished = epoch == cfg.epochs or early_stop
        payload = checkpoint(
            epoch + 1,
            0,
            torch.zeros(len(LOSS_PARTS)),
            0,
            metrics={k: v for k, v in row.items() if v is not None},
            finished=finished,
        )
        if ctx.is_main:
            save_checkpoint(run_dir / "last.pth", payload)
            if improved:
                save_checkpoint(run_dir / "best.pth", payload)
        if not finished:  # a signal during validation or the save: last.pth is the epoch end
            stop_signal, _ = stop.agree(ctx, torch.zeros((), dtype=torch.bool, device=device))
            if stop_signal:
                interrupt(stop_signal, f"end of epoch {epoch}")
        if early_stop:
            log.info(
                f"early stop: val mAP@0.5 has not improved for {since_best} validations "
                f"(best {best_map:.4f})"
            )
            break

    # --- the end ---------------------------------------------------------------------------
    if splits["val"] and ctx.is_main:
        best = load_checkpoint(run_dir / "best.pth").build_model().to(device)
        whole_val = make_loader(val_set, batch_size, False, workers, cfg.seed, pin)
        metrics, _ = evaluate_model(
            best, whole_val, device, ddf.classes, cfg.obj_thresh, cfg.iou_thresh
        )
        plot_evaluation(metrics.compute(), metrics.pr_curves(), run_dir / "val")
    if skipped:
        log.warning(f"{len(skipped)} image(s) failed to decode and were skipped:")
        for path in sorted(skipped):
            log.warning(f"  {display_path(path)}")
    if wandb_run is not None:
        wandb_run.finish()
    log.info(
        f"done: {display_path(run_dir)}"
        + (f" (best val mAP@0.5 {best_map:.4f})" if best_map >= 0 else "")
    )
    return run_dir


def validate(
    ctx: DistContext,
    model: YOGO,
    loader: Any,
    shard: ShardSampler,
    class_names: tuple[str, ...],
    cfg: TrainConfig,
    loss_fn: YOGOLoss,
) -> tuple[DetectionMetrics, float | None]:
    """Each rank evaluates its shard; the per-image results are gathered and put back in
    dataset order, so the metrics equal a single-process evaluation of the whole split."""
    local, mean_loss = evaluate_model(
        model, loader, ctx.device, class_names, cfg.obj_thresh, cfg.iou_thresh, loss_fn
    )
    loss_sum = (mean_loss or 0.0) * len(local.images)
    parts = ctx.gather((shard.indices, local.images, loss_sum))
    merged = DetectionMetrics(class_names, cfg.obj_thresh)
    ordered = sorted(
        (
            (i, image)
            for indices, images, _ in parts
            for i, image in zip(indices, images, strict=True)
        ),
        key=lambda pair: pair[0],
    )
    merged.images = [image for _, image in ordered]
    total = sum(loss for _, _, loss in parts)
    return merged, total / len(merged.images) if merged.images else None


# --- set-up helpers, in the order train() uses them ----------------------------------------


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


def require_new_run_name(cfg: TrainConfig) -> None:
    """An existing run folder of that name is never overwritten."""
    if cfg.name is None:
        return
    run_dir = Path(cfg.output_dir) / cfg.name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(
            f"a run named '{cfg.name}' already exists",
            path=run_dir,
            fix="choose another --name (runs are never overwritten)",
        )


def create_run_dir(cfg: TrainConfig, ddf_path: Path) -> Path:
    """OUTPUT_DIR/NAME (or a generated name), new."""
    output = Path(cfg.output_dir)
    if cfg.name is not None:
        require_new_run_name(cfg)
        run_dir = output / cfg.name
    else:
        stem = f"{datetime.now():%Y-%m-%d_%H%M%S}_{ddf_path.stem}"
        run_dir, n = output / stem, 1
        while run_dir.exists():
            n += 1
            run_dir = output / f"{stem}-{n}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def dataset_record(
    ddf: DatasetDefinition, splits: dict[str, tuple[LabelledSample, ...]]
) -> dict[str, Any]:
    """The DDF, the split sizes and a SHA-256 of the resolved sample list, for config.yaml."""
    digest = hashlib.sha256()
    for name in ("train", "val", "test"):
        for s in splits[name]:
            digest.update(f"{name}\t{s.label}\t{s.image}\n".encode())
    return {
        "ddf": str(ddf.path),
        "samples_sha256": digest.hexdigest(),
        "num_samples": {name: len(splits[name]) for name in ("train", "val", "test")},
    }


def progress(loader: Any, description: str) -> Any:
    """A tqdm bar on a terminal; silent otherwise (one line per epoch is printed instead)."""
    from tqdm import tqdm

    return tqdm(
        loader, desc=description, leave=False, disable=not sys.stderr.isatty(), dynamic_ncols=True
    )


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
