"""How a run's model starts: new, with the anchor and the output biases fitted to the training
labels, or from a checkpoint (`--from-pretrained`); and the class weights of the loss.

    weights = class_weights("auto", train_samples, num_classes)
    model = make_model(cfg, class_names, train_samples, pretrained, weights)
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import torch

from yogo.config import TrainConfig
from yogo.data.loader import balanced_class_weights, class_counts
from yogo.data.scan import LabelledSample
from yogo.errors import UserError, display_path
from yogo.model.checkpoint import Checkpoint
from yogo.model.network import YOGO, ModelConfig, build_model

log = logging.getLogger(__name__)


def make_model(
    cfg: TrainConfig,
    class_names: tuple[str, ...],
    train: tuple[LabelledSample, ...],
    pretrained: Checkpoint | None,
    weights: torch.Tensor | None,
) -> YOGO:
    """A new model fitted to the data, or one starting from `pretrained` (whose model
    settings travel with it); a different class count re-initialises the output layer.
    `model.config` says what was built."""
    if pretrained is not None:
        return _from_pretrained(cfg, class_names, train, pretrained, weights)
    boxes = np.concatenate([s.boxes for s in train]) if train else np.zeros((0, 5))
    if not len(boxes) and (cfg.anchor_w is None or cfg.anchor_h is None):
        raise UserError(
            "the train split has no objects to fit the anchor to",
            fix="label some objects, or give --anchor-w and --anchor-h",
        )
    first = train[0]
    image_hw = tuple(cfg.tile or cfg.image_hw or (first.height, first.width))
    config = ModelConfig(
        model_name=cfg.model,
        class_names=class_names,
        channels=3 if cfg.rgb_images else 1,
        normalize_images=cfg.normalize_images,
        image_hw=(int(image_hw[0]), int(image_hw[1])),
        anchor_w=cfg.anchor_w if cfg.anchor_w is not None else float(boxes[:, 3].mean()),
        anchor_h=cfg.anchor_h if cfg.anchor_h is not None else float(boxes[:, 4].mean()),
        neighbour_cells=cfg.neighbour_cells,
        tile_overlap=tile_overlap(cfg, train),
    )
    model = build_model(config)
    _init_priors(model, train, weights)
    return model


def tile_overlap(cfg: TrainConfig, train: tuple[LabelledSample, ...]) -> int | None:
    """With --tile, how far infer's tiles overlap: --tile-overlap, else twice the largest
    training box side in pixels (an object on a seam then lies whole in one tile), at least
    16 and at most under half the tile. None without --tile."""
    if cfg.tile is None:
        return None
    if cfg.tile_overlap is not None:
        return cfg.tile_overlap
    largest = max(
        (float(max((s.boxes[:, 3] * s.width).max(), (s.boxes[:, 4] * s.height).max()))
         for s in train if len(s.boxes)),
        default=0.0,
    )  # fmt: skip
    return min(max(16, math.ceil(2 * largest)), (min(cfg.tile) - 1) // 2)


def _from_pretrained(
    cfg: TrainConfig,
    class_names: tuple[str, ...],
    train: tuple[LabelledSample, ...],
    pretrained: Checkpoint,
    weights: torch.Tensor | None,
) -> YOGO:
    old = pretrained.model_config
    image_hw = tuple(cfg.tile or cfg.image_hw or old.image_hw)
    if tuple(image_hw) != old.image_hw:
        log.warning(
            f"--from-pretrained: --image-hw {image_hw[0]} {image_hw[1]} differs from the "
            f"checkpoint's {old.image_hw[0]} {old.image_hw[1]}: its weights learned objects "
            "at another scale and start far from right (leave --image-hw out to keep its size)"
        )
    _warn_ignored(cfg, old)
    config = dataclasses.replace(
        old, class_names=class_names, image_hw=(int(image_hw[0]), int(image_hw[1]))
    )
    if cfg.tile is not None:
        config = dataclasses.replace(config, tile_overlap=tile_overlap(cfg, train))
    model = build_model(config)
    state = dict(pretrained.state_dict)
    if old.num_classes != config.num_classes:
        head = f"model.{len(model.model) - 1}."
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        log.info(
            f"--from-pretrained: {old.num_classes} classes in the checkpoint, "
            f"{config.num_classes} here: the output layer starts fresh"
        )
        model.load_state_dict(state, strict=False)
        _init_priors(model, train, weights)
    else:
        if old.class_names != class_names:
            log.warning(
                f"--from-pretrained: class names differ ([{', '.join(old.class_names)}]"
                f" -> [{', '.join(class_names)}]); outputs are reused by index"
            )
        model.load_state_dict(state)
    log.info(
        f"--from-pretrained {display_path(pretrained.path)}: {config.model_name}, "
        f"{config.channels} channel(s), normalize_images={config.normalize_images}, "
        f"image {config.image_hw[0]}x{config.image_hw[1]}, anchor "
        f"{config.anchor_w:.4f} x {config.anchor_h:.4f}, "
        + ("neighbour cells" if config.neighbour_cells else "centre cell only")
    )
    return model


def _warn_ignored(cfg: TrainConfig, old: ModelConfig) -> None:
    """Model settings travel with a checkpoint; say which flags given here it overrides."""
    kept = {
        "model": (cfg.model, old.model_name),
        "rgb_images": (cfg.rgb_images, old.channels == 3),
        "normalize_images": (cfg.normalize_images, old.normalize_images),
        "anchor_w": (cfg.anchor_w, old.anchor_w),
        "anchor_h": (cfg.anchor_h, old.anchor_h),
        "neighbour_cells": (cfg.neighbour_cells, old.neighbour_cells),
    }
    defaults = TrainConfig(ddf="")
    ignored = [
        f"--{name.replace('_', '-')} {given}"
        for name, (given, checkpoint) in kept.items()
        if given != getattr(defaults, name) and given != checkpoint
    ]
    if ignored:
        log.warning(
            "--from-pretrained keeps the checkpoint's model settings; ignored: "
            + ", ".join(ignored)
        )


def _init_priors(
    model: YOGO, train: tuple[LabelledSample, ...], weights: torch.Tensor | None
) -> None:
    """Output biases at the priors the loss converges to: the object fraction of cells, and
    the class frequencies times their class weights."""
    rows, cols = model.config.grid
    counts = class_counts(train, model.num_classes)
    fraction = counts.sum() / max(1, len(train) * rows * cols)
    prior = torch.from_numpy(counts + 1.0).float()
    if weights is not None:
        prior = prior * weights.clamp_min(1e-6)
    model.init_output_priors(float(fraction), prior)


def class_weights(
    spec: str, train: tuple[LabelledSample, ...], num_classes: int
) -> torch.Tensor | None:
    if spec == "none":
        return None
    if spec == "auto":
        return balanced_class_weights(train, num_classes)
    values = [float(w) for w in spec.split(",")]
    if len(values) != num_classes:
        raise UserError(f"--class-weights has {len(values)} values for {num_classes} classes")
    return torch.tensor(values, dtype=torch.float32)
