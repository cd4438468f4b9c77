"""`yogo train` and `yogo.train(config)`: set-up, loop, validation, checkpoints, logging.

    run_dir = train(TrainConfig(ddf="data.yml", epochs=20))

`train` reads top to bottom as the run goes: `setup` (yogo.training.setup: data, model, loaders,
optimiser, schedule), then per epoch `train_one_epoch`, `validate` and `end_epoch` (the
metrics row, plots, checkpoints, early stop), then `finish`. Where a run is lives in one
`TrainState` (yogo.training.resume), which last.pth saves and a resumed run restores.

The run folder holds config.yaml (every resolved value; `yogo train --config` repeats the run),
last.pth (every epoch, and at a stop), best.pth (best val mAP@0.5), metrics.csv,
training_curves.png (at most a minute behind, current at the end or a stop), and at the end the
validation PR curves and confusion matrix of best.pth.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from yogo.config import TrainConfig
from yogo.data.index import DEFAULT_NAME
from yogo.data.loader import Batch, Loaders
from yogo.dist import DistContext, lost_contact, setup_process, teardown
from yogo.errors import Interrupted, RunError, display_path
from yogo.evaluation.counting import calibration_errors, fit_count_model
from yogo.evaluation.evaluate import evaluate_model, evaluate_sharded
from yogo.evaluation.plots import (
    ece_text,
    first_frames,
    plot_evaluation,
    plot_train_batch,
)
from yogo.log import progress, set_console_rank, speak_unless_configured
from yogo.model.checkpoint import Checkpoint, checkpoint_payload, load_checkpoint, save_checkpoint
from yogo.model.loss import forward_loss
from yogo.signals import StopRequest, requeue_slurm_job
from yogo.training.report import PER_CLASS, print_epoch
from yogo.training.resume import LOSS_PARTS, TrainState, restore_state, save_state, start_or_resume
from yogo.training.run_folder import claim_run_folder
from yogo.training.setup import Run, setup

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> Path:
    """Train a detector as `cfg` says; returns the run folder. Under torchrun or srun every
    rank calls this; rank 0 writes the run folder."""
    speak_unless_configured()
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
    run = setup(cfg, ctx, resume, loaders, run_dir, run_dir.parent / DEFAULT_NAME)
    run.launched = launched
    state = start_state(run, resume)
    no_loss = torch.zeros((), dtype=torch.bool, device=ctx.device)
    stop_signal, _ = stop.agree(ctx, no_loss)
    if stop_signal:
        interrupt(run, state, stop_signal, "during set-up", saved=resume is not None)
    # A requeued SLURM job whose run had finished training only writes the end-of-run results.
    trained = resume is not None and resume.payload.get("finished", False)
    for epoch in range(run.cfg.epochs + 1 if trained else state.epoch, run.cfg.epochs + 1):
        row = train_one_epoch(run, state, stop)
        report = validate(run, row) if run.validation_due(epoch) else None
        if end_epoch(run, state, stop, row, report):
            break
    finish(run, state, loaders)
    return run.dir


# --- set-up --------------------------------------------------------------------------------


def start_state(run: Run, resume: Checkpoint | None) -> TrainState:
    """A new run's state, or the resumed one's (optimizer, schedule, RNG and all)."""
    if resume is None:
        state = TrainState(sums=torch.zeros(len(LOSS_PARTS), device=run.ctx.device))
        if run.cfg.hard_frames:
            frames = len(run.data.train_set)
            state.frame_loss = torch.zeros(2, frames, device=run.ctx.device)
    else:
        state = restore_state(
            resume.payload["resume"], run.optimizer, run.schedule, run.scaler, run.model, run.ema
        )
        if state.frame_loss is not None:  # summed over the ranks when saved: counted once
            state.frame_loss = state.frame_loss.to(run.ctx.device) * float(run.ctx.is_main)
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
    run.data.train_sampler.set_epoch(epoch, skip=first * cfg.batch_size, hard=state.hard)
    order = run.data.train_sampler.indices() if state.frame_loss is not None else []
    batches_per_epoch = len(run.data.train_loader) + first
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
        images = run.images(batch)
        stepping = (i + 1) % cfg.grad_accum == 0 or i + 1 == batches_per_epoch
        compiling = cfg.compile and not run.compiled
        step_start = time.perf_counter()
        with gradient_sync(run.net, stepping):
            _, parts = forward_loss(
                run.net, run.model, run.loss_fn, images, batch.labels, run.autocast
            )
            nonfinite |= ~torch.isfinite(parts["loss"].detach())
            run.scaler.scale(parts["loss"] / cfg.grad_accum).backward()
        if compiling:  # the first pass compiles: reported, and left out of images/s
            run.compiled = True
            compile_s = time.perf_counter() - step_start
            epoch_start += compile_s
            log.info(f"torch.compile: {compile_s:.1f} s (not counted in images/s)")
        stop_signal = optimizer_step(run, state, stop, nonfinite, i) if stepping else 0
        state.sums += torch.stack([parts[k].detach() for k in LOSS_PARTS]) * len(images)
        if state.frame_loss is not None:
            start = (i - first) * cfg.batch_size
            record_frame_loss(run, state, order[start : start + cfg.batch_size], batch, parts)
        state.images_seen += len(images)
        if not batches.disable:  # the visible progress bar is the only per-step sync
            batches.set_postfix(
                loss=f"{float(parts['loss'].detach()):.3g}",
                lr=f"{run.schedule.get_last_lr()[0]:.2e}",
            )
        if stop_signal and i + 1 < batches_per_epoch:
            state.batch = i + 1
            if state.frame_loss is not None:  # every rank's, for last.pth
                state.frame_loss = ctx.sum(state.frame_loss.clone())
            if ctx.is_main:
                save_checkpoint(run.dir / "last.pth", payload(run, state, epoch, finished=False))
            interrupt(run, state, stop_signal, f"epoch {epoch}, batch {i + 1}")
        wait_start = time.perf_counter()
    if run.swa_due(epoch):
        assert run.ema is not None
        run.ema.update()  # this epoch's final weights join the SWA mean
    if state.frame_loss is not None:
        state.hard = hardest_frames(ctx.sum(state.frame_loss.clone()), cfg.hard_frames)
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


def record_frame_loss(
    run: Run, state: TrainState, indices: list[int], batch: Batch, parts: dict[str, torch.Tensor]
) -> None:
    """Add each image's loss to its frame's sum and count (--hard-frames); `indices` are the
    batch's frames in the sampler's order, undecodable ones among them left out."""
    if batch.skipped:
        samples = run.data.train_set.samples
        skipped = set(batch.skipped)
        indices = [i for i in indices if samples[i].image not in skipped]
    assert state.frame_loss is not None and len(indices) == len(parts["per_image"])
    where = torch.tensor(indices, device=state.frame_loss.device)
    state.frame_loss[0].index_add_(0, where, parts["per_image"].float())
    state.frame_loss[1].index_add_(0, where, torch.ones_like(where, dtype=torch.float32))


def hardest_frames(frame_loss: torch.Tensor, share: float) -> list[int]:
    """The ceil(share x frames) frames with the highest mean loss this epoch (of those seen):
    the pool the next epoch draws its --hard-frames share from."""
    sums, counts = frame_loss
    mean = torch.where(counts > 0, sums / counts.clamp(min=1), -torch.inf)
    k = min(math.ceil(share * len(mean)), int((counts > 0).sum()))
    return mean.topk(k).indices.sort().values.tolist()


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
    if ctx.is_main:
        run.curves.update(run.rows, now=finished)
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
    """Stop after last.pth is saved and training_curves.png brought up to date (or before any
    training, `saved=False`: nothing to save); on SIGUSR1 inside SLURM, rank 0 requeues the
    job. The message comes first: a requeue ends the job step within seconds, and srun stops
    forwarding output when it does."""
    requeue = run.ctx.is_main and signum == signal.SIGUSR1 and "SLURM_JOB_ID" in os.environ
    if saved:
        if run.ctx.is_main:
            run.curves.update(run.rows, now=True)
        where = f"after optimizer step {state.step} ({position})"
        command = f"yogo train --resume {display_path(run.dir / 'last.pth')}"
        continued = "last.pth holds the exact position"
        if "SLURM_JOB_ID" in os.environ and not requeue:
            continued += f"; resubmit the same job script (it resumes by itself), or: {command}"
        elif not requeue:  # a requeued job continues by itself (Interrupted says so)
            continued += f"; continue with: {command}"
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
    """On the whole val split with best.pth: fit the per-class thresholds, calibration and
    count correction into best.pth (docs/counting.md), then its pictures at those
    thresholds; the summary."""
    cfg, device = run.cfg, run.ctx.device
    if len(run.data.val_set) and run.ctx.is_main:
        checkpoint = load_checkpoint(run.dir / "best.pth")
        best = checkpoint.build_model().to(device)
        pin = device.type == "cuda"
        whole_val = loaders.make(
            run.data.val_set, cfg.batch_size, run.data.num_workers, cfg.seed, pin
        )
        metrics, _ = evaluate_model(
            best, whole_val, device, run.class_names, cfg.obj_thresh, cfg.iou_thresh
        )
        source = f"{Path(cfg.ddf).name} val split, {len(metrics.images)} frames"
        counting = fit_count_model(metrics, source)
        save_checkpoint(
            run.dir / "best.pth", {**checkpoint.payload, "counting": counting.to_plain()}
        )
        metrics.thresholds = np.asarray(counting.thresholds)
        val_frames = first_frames(run.data.val_set, metrics)
        plot_evaluation(metrics, run.dir / "val", counting, val_frames)
        ece = calibration_errors(metrics, counting)["all"]
        log.info(
            f"best.pth: {counting.describe()}; calibration error (ECE) on val "
            f"{ece_text(ece['raw'])} raw, {ece_text(ece['calibrated'])} calibrated "
            "(docs/counting.md)"
        )
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
