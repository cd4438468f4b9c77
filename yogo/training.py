"""`yogo train` and `yogo.train(config)`: set-up, loop, validation, checkpoints, logging.

    run_dir = train(TrainConfig(ddf="data.yml", epochs=20))

The run folder holds config.yaml (every resolved value; `yogo train --config` repeats the run),
last.pth (every epoch), best.pth (best val mAP@0.5), metrics.csv, training_curves.png, and at
the end the validation PR curves and confusion matrix of best.pth.
"""

from __future__ import annotations

import contextlib
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
    ModelInfo,
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
from yogo.model import YOGO, build_model, grid_shape
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
                    ema.update(model)
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


def training_state(
    optimizer: torch.optim.Optimizer, schedule: Any, scaler: Any, best_map: float, since_best: int
) -> dict[str, Any]:
    """What resuming needs besides the weights and the position: plain data only."""
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "best_map": best_map,
        "since_best": since_best,
    }


def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors, numbers and lists (weights_only-loadable)."""
    numpy_state: dict[str, Any] = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(numpy_state["bit_generator"]),
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_resume(cfg: TrainConfig) -> Checkpoint | None:
    """The checkpoint `--resume` names: a path, or with "auto" OUTPUT_DIR/NAME/last.pth when
    that run is unfinished (else None: a new run)."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        if cfg.name is None:
            log.info("--resume auto without --name: starting a new run")
            return None
        last = Path(cfg.output_dir) / cfg.name / "last.pth"
        if not last.is_file():
            return None
        path = last
    else:
        path = Path(cfg.resume)
    checkpoint = load_checkpoint(path)
    if "resume" not in checkpoint.payload:
        raise UserError("has no resume state (written by another tool or version)", path=path)
    if checkpoint.payload.get("finished"):
        if cfg.resume == "auto":
            raise UserError(
                f"the run '{cfg.name}' is finished",
                path=path,
                fix="choose another --name for a new run",
            )
        raise UserError("is from a finished run; nothing to resume", path=path)
    return checkpoint


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


def make_model(
    cfg: TrainConfig,
    class_names: tuple[str, ...],
    train: tuple[LabelledSample, ...],
    pretrained: Checkpoint | None,
    weights: torch.Tensor | None,
) -> tuple[YOGO, ModelInfo]:
    """A new model fitted to the data, or one starting from `pretrained` (whose model
    settings travel with it); a different class count re-initialises the output layer."""
    boxes = np.concatenate([s.boxes for s in train]) if train else np.zeros((0, 5))
    if pretrained is not None:
        old = pretrained.info
        image_hw = tuple(cfg.image_hw) if cfg.image_hw else old.image_hw
        info = ModelInfo(
            old.model_name,
            class_names,
            old.channels,
            old.normalize_images,
            (int(image_hw[0]), int(image_hw[1])),
            old.anchor_w,
            old.anchor_h,
        )
        model = build_model(
            info.model_name,
            len(class_names),
            info.channels,
            info.normalize_images,
            info.anchor_w,
            info.anchor_h,
        )
        state = dict(pretrained.state_dict)
        if len(old.class_names) != len(class_names):
            head = f"model.{len(model.model) - 1}."
            state = {k: v for k, v in state.items() if not k.startswith(head)}
            log.info(
                f"--from-pretrained: {len(old.class_names)} classes in the checkpoint, "
                f"{len(class_names)} here: the output layer starts fresh"
            )
            model.load_state_dict(state, strict=False)
            _init_priors(model, train, weights, info.image_hw)
        else:
            if old.class_names != class_names:
                log.warning(
                    f"--from-pretrained: class names differ ([{', '.join(old.class_names)}]"
                    f" -> [{', '.join(class_names)}]); outputs are reused by index"
                )
            model.load_state_dict(state)
        log.info(
            f"--from-pretrained {display_path(pretrained.path)}: {info.model_name}, "
            f"{info.channels} channel(s), normalize_images={info.normalize_images}, "
            f"image {info.image_hw[0]}x{info.image_hw[1]}, anchor "
            f"{info.anchor_w:.4f} x {info.anchor_h:.4f}"
        )
        return model, info
    if not len(boxes) and (cfg.anchor_w is None or cfg.anchor_h is None):
        raise UserError(
            "the train split has no objects to fit the anchor to",
            fix="label some objects, or give --anchor-w and --anchor-h",
        )
    first = train[0]
    image_hw = tuple(cfg.image_hw) if cfg.image_hw else (first.height, first.width)
    anchor_w = cfg.anchor_w if cfg.anchor_w is not None else float(boxes[:, 3].mean())
    anchor_h = cfg.anchor_h if cfg.anchor_h is not None else float(boxes[:, 4].mean())
    info = ModelInfo(
        cfg.model,
        class_names,
        3 if cfg.rgb_images else 1,
        cfg.normalize_images,
        (int(image_hw[0]), int(image_hw[1])),
        anchor_w,
        anchor_h,
    )
    model = build_model(
        info.model_name, len(class_names), info.channels, info.normalize_images, anchor_w, anchor_h
    )
    _init_priors(model, train, weights, info.image_hw)
    return model, info


def _init_priors(
    model: YOGO,
    train: tuple[LabelledSample, ...],
    weights: torch.Tensor | None,
    image_hw: tuple[int, int],
) -> None:
    """Output biases at the priors the loss converges to: the object fraction of cells, and
    the class frequencies times their class weights."""
    rows, cols = grid_shape(image_hw)
    counts = class_counts(train, model.num_classes)
    fraction = counts.sum() / max(1, len(train) * rows * cols)
    prior = torch.from_numpy(counts + 1.0).float()
    if weights is not None:
        prior = prior * weights.clamp_min(1e-6)
    model.init_output_priors(float(fraction), prior)


def class_counts(train: tuple[LabelledSample, ...], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes)
    for s in train:
        counts += np.bincount(s.boxes[:, 0].astype(np.int64), minlength=num_classes)
    return counts


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


def class_weights(
    spec: str, train: tuple[LabelledSample, ...], num_classes: int
) -> torch.Tensor | None:
    if spec == "none":
        return None
    if spec == "auto":
        # Balanced: n / (C * n_c), so every class weighs as much in total and the loss's
        # equilibrium class prior is uniform; the mean weight per object stays 1.
        counts = class_counts(train, num_classes)
        present = counts > 0
        weights = np.zeros(num_classes)
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return torch.tensor(weights, dtype=torch.float32)
    values = [float(w) for w in spec.split(",")]
    if len(values) != num_classes:
        raise UserError(f"--class-weights has {len(values)} values for {num_classes} classes")
    return torch.tensor(values, dtype=torch.float32)


def make_optimizer(model: YOGO, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and batch-norm parameters (decaying them only
    fights the normalisation)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
    )


def lr_factor(step: int, total: int, warmup: int, decay_factor: float) -> float:
    """Multiplier of the base learning rate at optimizer step `step`: linear warm-up, then
    cosine from 1 to 1/decay_factor at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = 1 / decay_factor
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def precision_context(precision: str, device: torch.device) -> tuple[Any, Any]:
    """An autocast context factory and a gradient scaler (a no-op unless fp16)."""
    if precision == "32":
        return contextlib.nullcontext, torch.amp.GradScaler(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=dtype)

    return autocast, torch.amp.GradScaler(device.type, enabled=precision == "fp16")


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
