"""Resuming a run: which checkpoint `--resume` means, where a run is (`TrainState`), and the
state besides the weights that an exact continuation needs (optimizer, scheduler, scaler, every
random generator), saved and restored by one pair of functions.

    checkpoint = find_resume(cfg)                      # None: start a new run
    payload["resume"] = save_state(state, optimizer, schedule, scaler, model, ema)
    state = restore_state(payload["resume"], optimizer, schedule, scaler, model, ema)

Everything is plain data (tensors, numbers, lists), so last.pth stays weights_only-loadable.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yogo.config import TrainConfig, load_config
from yogo.data.setup import label_cache
from yogo.ddf import ddf_inputs
from yogo.dist import slurm_restart
from yogo.errors import UserError, display_path
from yogo.model.checkpoint import Checkpoint, load_checkpoint, require_checkpoint_file
from yogo.model.grid import require_usable_image_hw
from yogo.model.network import YOGO, require_known_model
from yogo.outputs import Inputs, require_output_folder, same_file
from yogo.training.ema import WeightAverage
from yogo.training.run_folder import require_new_run_name

LOSS_PARTS = ("loss", "objectness", "box", "class")


@dataclass
class TrainState:
    """Where a run is: the position of the next batch and what the loop carries across
    batches and epochs. A run stopped anywhere continues from it exactly."""

    epoch: int = 1
    """The epoch the next batch belongs to (1-based)."""
    batch: int = 0
    """The next batch's index in that epoch."""
    step: int = 0
    """Optimizer steps taken."""
    ema_updates: int = 0
    """Updates of the weight average (--ema): one per optimizer step."""
    best_map: float = -1.0
    """Best val mAP@0.5 so far (-1: none yet)."""
    since_best: int = 0
    """Validations since the best one (for --patience)."""
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(len(LOSS_PARTS)))
    """Loss parts (LOSS_PARTS) summed over this epoch's images so far, on the device."""
    images_seen: int = 0
    """This epoch's training images so far (this rank)."""
    wandb_id: str | None = None
    """The W&B run to continue."""
    elapsed_s: float = 0.0
    """Training time before this process started (earlier parts of a resumed run)."""
    hard: list[int] = field(default_factory=list)
    """--hard-frames: the frames this epoch's hard share is drawn from (the last epoch's
    hardest), the same on every rank."""
    frame_loss: torch.Tensor | None = None
    """--hard-frames: (2, frames) this epoch's training loss and count per frame so far, this
    rank's (in last.pth: summed over the ranks, and restored on the first rank only)."""

    def next_epoch(self) -> None:
        """Move to the first batch of the next epoch."""
        self.epoch, self.batch = self.epoch + 1, 0
        self.sums, self.images_seen = torch.zeros_like(self.sums), 0
        if self.frame_loss is not None:
            self.frame_loss = torch.zeros_like(self.frame_loss)


def save_state(
    state: TrainState,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    scaler: Any,
    model: YOGO,
    ema: WeightAverage | None,
) -> dict[str, Any]:
    """last.pth's `resume` entry: `state`, optimizer/scheduler/scaler state, every random
    generator and, with an EMA (whose average is the checkpoint's weights), the raw weights."""
    if ema is not None:
        state.ema_updates = ema.updates
    saved = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    saved["sums"] = state.sums.detach().cpu()
    if state.frame_loss is not None:
        saved["frame_loss"] = state.frame_loss.detach().cpu()
    saved.update(
        optimizer=optimizer.state_dict(),
        scheduler=schedule.state_dict(),
        scaler=scaler.state_dict(),
        rng=rng_state(),
    )
    if ema is not None:
        saved["train_weights"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return saved


def restore_state(
    saved: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    scaler: Any,
    model: YOGO,
    ema: WeightAverage | None,
) -> TrainState:
    """The inverse of `save_state`: loads everything back and returns the position."""
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    device = next(model.parameters()).device
    state = TrainState(
        **{f.name: saved[f.name] for f in dataclasses.fields(TrainState) if f.name in saved}
    )
    state.sums = state.sums.to(device)
    if ema is not None:  # the checkpoint's weights are the average; the raw ones are here
        model.load_state_dict(saved["train_weights"])
        ema.updates = state.ema_updates
    return state


log = logging.getLogger(__name__)


def find_resume(cfg: TrainConfig) -> Checkpoint | None:
    """The checkpoint `--resume` names: a last.pth or its run folder, or with "auto" the
    unfinished run OUTPUT_DIR/NAME (without --name: the newest unfinished run of the DDF
    under OUTPUT_DIR). None: start a new run. A finished run is refused, except in a requeued
    SLURM job, which then writes the end-of-run results its first run may not have."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        found = _auto_resume_path(cfg)
        if found is None:
            return None
        path = found
    else:
        path = Path(cfg.resume)
        if path.is_dir() and (path / "last.pth").is_file():
            path = path / "last.pth"
    checkpoint = load_checkpoint(path)
    if path.name != "last.pth" and cfg.resume != "auto":
        # best.pth (or a copy) holds an earlier epoch: continuing it would train over the
        # epochs after it and replace the run's last.pth.
        raise UserError(
            "is not a last.pth: --resume continues a run from where it stopped, which only its "
            "last.pth records",
            path=path,
            fix="give the run's last.pth or its folder; to start a new run from these weights, "
            f"--from-pretrained {display_path(path)}",
        )
    if "resume" not in checkpoint.payload:
        raise UserError(
            "has no resume state (not a last.pth, or written by another tool or version)",
            path=path,
            fix="give the run's last.pth; to start from these weights use --from-pretrained",
        )
    if checkpoint.payload.get("finished") and cfg.resume == "auto" and slurm_restart():
        # Requeued after its last epoch (killed while writing the end-of-run pictures, or
        # preempted then): the job ends with what an uninterrupted one wrote.
        log.info(
            f"{display_path(path.parent)} finished training before this job was requeued: "
            "writing its end-of-run results"
        )
        return checkpoint
    if checkpoint.payload.get("finished"):
        ddf = checkpoint.payload.get("config", {}).get("ddf") or "DDF"
        best = path.with_name("best.pth") if path.with_name("best.pth").is_file() else path
        run = (
            f"the run '{cfg.name}' is finished"
            if cfg.resume == "auto"
            else "is from a finished run"
        )
        raise UserError(
            f"{run}: its learning-rate schedule has ended, so it is not continued or extended",
            path=path,
            fix=f"train further in a new run from its weights: yogo train {display_path(ddf)} "
            f"--from-pretrained {display_path(best)} --epochs N"
            + (" (or choose another --name for a new run)" if cfg.resume == "auto" else ""),
        )
    return checkpoint


def _auto_resume_path(cfg: TrainConfig) -> Path | None:
    output = Path(cfg.output_dir)
    if cfg.name is not None:
        last = output / cfg.name / "last.pth"
        return last if last.is_file() else None
    if not cfg.ddf:
        raise UserError(
            "--resume auto needs --name, or a dataset definition to find its newest unfinished run",
            fix="yogo train DDF --resume auto [--name NAME]",
        )
    for last in _runs_of(Path(cfg.ddf), output):
        if not load_checkpoint(last).payload.get("finished"):
            log.info(
                f"--resume auto: continuing {display_path(last.parent)}, the newest unfinished "
                f"run of {display_path(cfg.ddf)} (--name chooses another)"
            )
            return last
    log.info(
        f"--resume auto without --name: no unfinished run of {display_path(cfg.ddf)} in "
        f"{display_path(output)}; starting a new run"
    )
    return None


def _runs_of(ddf: Path, output: Path) -> list[Path]:
    """last.pth of the runs under `output` trained on `ddf`, newest first."""
    found = []
    for last in output.glob("*/last.pth"):
        try:
            run_ddf = load_config(last.parent / "config.yaml").ddf
        except UserError:
            continue  # not a yogo run folder
        if same_file(Path(run_ddf), ddf):
            found.append(last)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


# Settings of the machine, not of the run: given with --resume, they are used (docs/training.md
# and docs/outputs.md list them; a test checks both).
RESUME_KEEPS_GIVEN = ("device", "num_workers", "cache", "cache_dir", "dist_timeout")


def resumed_config(cfg: TrainConfig, checkpoint: Checkpoint) -> TrainConfig:
    """The resumed run's own settings, with this machine's device, workers, cache and
    timeout when given; other settings given with --resume are reported as ignored."""
    saved = TrainConfig.from_dict(checkpoint.payload["config"])
    runtime = RESUME_KEEPS_GIVEN
    ignored, overrides = [], {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name in ("ddf", "resume", "name", "output_dir") or value == _default(f):
            continue
        if f.name in runtime:
            overrides[f.name] = value
        elif value != getattr(saved, f.name):
            ignored.append(f"--{f.name.replace('_', '-')} {value}")
    longer = any(flag.startswith("--epochs ") for flag in ignored)
    if ignored:
        log.warning(
            f"ignored with --resume (a run continues with its own settings): {', '.join(ignored)}"
            + ("; to train longer, start a new run with --from-pretrained" if longer else "")
        )
    return dataclasses.replace(saved, resume=None, **overrides)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


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


def start_or_resume(cfg: TrainConfig) -> tuple[TrainConfig, Checkpoint | None]:
    """The settings and checkpoint to continue (--resume), or `cfg` for a new run whose
    output folder and name are usable: refused now, before the slow set-up."""
    resume = find_resume(cfg)
    if resume is not None:
        require_output_folder(resume.path.parent, option="--resume", create=False)
        resumed = resumed_config(cfg, resume)
        inputs = Inputs.of(resumed.ddf) | ddf_inputs(resumed.ddf)
        label_cache(resumed, resume.path.parent.parent, inputs)
        return resumed, resume
    if not cfg.ddf:
        raise UserError("nothing to resume here; give a dataset definition file to start a run")
    require_output_folder(Path(cfg.output_dir), option="--output-dir")
    inputs = Inputs.of(cfg.ddf, cfg.from_pretrained) | ddf_inputs(cfg.ddf)
    inputs.refuse(Path(cfg.output_dir), "--output-dir")
    label_cache(cfg, Path(cfg.output_dir), inputs)
    require_new_run_name(cfg)
    if cfg.from_pretrained:
        require_checkpoint_file(Path(cfg.from_pretrained))
    else:  # what needs no data is refused before the label index is read or written
        require_known_model(cfg.model)
        if cfg.image_hw is not None:
            require_usable_image_hw((cfg.image_hw[0], cfg.image_hw[1]))
    return cfg, None
