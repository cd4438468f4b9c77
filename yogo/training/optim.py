"""Optimisation settings: AdamW parameter groups, the learning-rate schedule, mixed precision.

optimizer = make_optimizer(model, cfg)
factor = lr_factor(step, total_steps, warmup_steps, cfg.lr_decay_factor)
autocast, scaler = precision_context("bf16", device)
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from yogo.config import ResolvedPrecision, ResolvedTrainConfig
from yogo.model.network import YOGO


def make_optimizer(model: YOGO, cfg: ResolvedTrainConfig) -> torch.optim.AdamW:
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


def precision_context(precision: ResolvedPrecision, device: torch.device) -> tuple[Any, Any]:
    """An autocast context factory and a gradient scaler (a no-op unless fp16)."""
    if precision == "32":
        return contextlib.nullcontext, torch.amp.GradScaler(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=dtype)

    return autocast, torch.amp.GradScaler(device.type, enabled=precision == "fp16")
