"""Resuming a run: which checkpoint `--resume` means, and the state besides the weights that an
exact continuation needs (optimizer, scheduler, scaler, every random generator).

    checkpoint = find_resume(cfg)             # None: start a new run
    state = training_state(optimizer, schedule, scaler, best_map, since_best)
    set_rng_state(state["rng"])               # when resuming

Everything is plain data (tensors, numbers, lists), so last.pth stays weights_only-loadable.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yogo.checkpoint import Checkpoint, load_checkpoint
from yogo.config import TrainConfig
from yogo.errors import UserError

log = logging.getLogger(__name__)


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
