"""`yogo lr-find DDF [train flags]`: a learning-rate range test before training.

    result = lr_find(TrainConfig(ddf="data.yml"), steps=200)
    result.suggested          # the learning rate to train with
    plot_lr_find(result, Path("trained_models/lr_find.png"))

The run's own set-up (yogo.training.setup.setup: data, augmentation, model, loss, optimiser,
precision) in a temporary folder, then `steps` optimizer steps with the learning rate rising
geometrically from `start_lr` to `end_lr`. The suggestion is where the smoothed loss falls
fastest against log(lr) (not its minimum, which is already too close to divergence): Smith's
range test as fastai and Lightning run it, with their smoothing. The smoothing lags the raw
loss by a few dozen steps, which moves the suggestion up toward the rates that train best in
a full run (measured: docs/benchmarks.md). The model is thrown
away afterwards; nothing is written but the picture.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.config import TrainConfig
from yogo.data.loader import Loaders
from yogo.dist import setup_process, teardown
from yogo.errors import UserError
from yogo.evaluation.plots import save_picture
from yogo.log import progress
from yogo.model.loss import forward_loss
from yogo.outputs import plan_folder
from yogo.training.setup import Run, setup

log = logging.getLogger(__name__)

SMOOTHING = 0.98  # EMA of the loss (bias-corrected), the constant of fastai's and Lightning's
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times its minimum
SKIP_START = 0.1  # the first steps' slopes are noise (Adam's moments are still warming up)


@dataclass(frozen=True)
class LRFindResult:
    lrs: np.ndarray  # (N,) the learning rate of each step
    losses: np.ndarray  # (N,) the loss of each step
    smoothed: np.ndarray  # (N,)
    suggested: float
    minimum: float  # the learning rate of the lowest smoothed loss (for the picture)


def lr_find(
    cfg: TrainConfig, steps: int = 200, start_lr: float = 1e-7, end_lr: float = 1.0
) -> LRFindResult:
    """The range test over `steps` optimizer steps; stops early when the loss diverges."""
    cfg.require_valid()
    if steps < 20:
        raise UserError(f"--steps must be at least 20, got {steps}")
    if not (math.isfinite(end_lr) and 0 < start_lr < end_lr):
        raise UserError(
            f"--start-lr and --end-lr must be finite, with 0 < --start-lr < --end-lr; got "
            f"{start_lr:g} and {end_lr:g}"
        )
    # One process, plain steps: no weight averaging, logging or compilation to get in the way.
    # The learning rate is the test's own (the run's default would be logged for a whole run).
    cfg = dataclasses.replace(
        cfg, wandb=False, ema=False, swa_epochs=0, compile=False, learning_rate=start_lr
    )
    ctx = setup_process(cfg.device, cfg.dist_timeout)
    if ctx.distributed:
        teardown(ctx)
        raise UserError("yogo lr-find runs as one process", fix="run it without torchrun/srun")
    try:
        with Loaders() as loaders, tempfile.TemporaryDirectory(prefix="yogo-lr-find-") as folder:
            log.info(f"lr-find: {steps} steps from {start_lr:g} to {end_lr:g} (a temporary run)")
            # Its run folder is temporary: the label index only where --cache-dir or
            # $YOGO_CACHE_DIR puts it.
            run = setup(cfg, ctx, None, loaders, plan_folder(Path(folder), replace=True), None)
            return _range_test(run, steps, start_lr, end_lr)
    finally:
        teardown(ctx)


def _range_test(run: Run, steps: int, start_lr: float, end_lr: float) -> LRFindResult:
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))
    losses: list[float] = []
    smoothed: list[float] = []
    average = 0.0
    run.model.train()
    bar = progress(total=steps, description="lr-find", unit="step")
    for lr, batch in zip(lrs.tolist(), _batches(run), strict=False):
        bar.update()
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        _, parts = forward_loss(
            run.net, run.model, run.loss_fn, run.images(batch), batch.labels, run.autocast
        )
        loss = parts["loss"]
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        value = float(loss.detach())  # one sync per step: the test is about this number
        if not math.isfinite(value):
            break
        losses.append(value)
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed.append(average / (1 - SMOOTHING ** len(losses)))
        if smoothed[-1] > DIVERGED * min(smoothed):
            break
    bar.close()
    kept = len(smoothed)
    return suggest(lrs[:kept], np.array(losses), np.array(smoothed))


def _batches(run: Run) -> Iterator[Any]:
    """Training batches, epoch after epoch, as `yogo train` would draw them."""
    for epoch in itertools.count(1):
        run.data.train_sampler.set_epoch(epoch, skip=0)
        yield from run.data.train_loader


def suggest(lrs: np.ndarray, losses: np.ndarray, smoothed: np.ndarray) -> LRFindResult:
    """The steepest descent of the smoothed loss against log10(lr), before its minimum."""
    if len(smoothed) < 10:
        raise UserError(
            f"the loss diverged after {len(smoothed)} steps: no learning rate to suggest",
            fix="lower --start-lr",
        )
    lowest = int(np.argmin(smoothed))
    start = int(SKIP_START * len(smoothed))
    if lowest - start < 3:
        raise UserError(
            "the loss never fell over the range: no learning rate to suggest",
            fix="raise --end-lr, or use more --steps",
        )
    slope = np.gradient(smoothed, np.log10(lrs))
    steepest = start + int(np.argmin(slope[start:lowest]))
    return LRFindResult(lrs, losses, smoothed, float(lrs[steepest]), float(lrs[lowest]))


def plot_lr_find(result: LRFindResult, path: Path) -> None:
    """Loss against learning rate (log scale), the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.lrs, result.losses, color="#BBBBBB", linewidth=0.8, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="#0072B2", label="smoothed")
    at = int(np.searchsorted(result.lrs, result.suggested))
    ax.plot(result.suggested, result.smoothed[at], "o", color="#D55E00", markersize=9)
    ax.axvline(result.suggested, color="#D55E00", linestyle="--",
               label=f"suggested {result.suggested:.2g} (steepest descent)")  # fmt: skip
    ax.axvline(result.minimum, color="#999999", linestyle=":",
               label=f"lowest loss at {result.minimum:.2g} (too high to train at)")  # fmt: skip
    top = float(np.percentile(result.smoothed, 95)) * 1.5
    bottom = 0.9 * min(float(np.percentile(result.losses, 2)), float(result.smoothed.min()))
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss per image", ylim=(bottom, top))
    ax.set_title("learning-rate range test")
    ax.legend(loc="upper left")
    save_picture(fig, path)
