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
from yogo.data.images import ImageError, decode_image
from yogo.data.loader import balanced_class_weights, class_counts
from yogo.data.scan import LabelledSample
from yogo.errors import UserError, display_path
from yogo.model.checkpoint import Checkpoint
from yogo.model.network import YOGO, ModelConfig, build_model

log = logging.getLogger(__name__)

STATS_FRAMES = 64  # training frames the input normalisation is fitted on


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
    channels = cfg.channels or (3 if cfg.rgb_images else 1)
    bit_depth = survey_frames(train, channels)
    mean, std = None, None
    if bit_depth == 16 or channels not in (1, 3):
        mean, std = input_statistics(train, channels, bit_depth)
        log.info(
            f"input: {channels} channel(s) of {bit_depth} bits, normalised inside the model "
            f"by per-channel mean {_listed(mean)} and std {_listed(std)} (pixel units, fitted "
            f"on {min(len(train), STATS_FRAMES)} training frames)"
        )
    config = ModelConfig(
        model_name=cfg.model,
        class_names=class_names,
        channels=channels,
        normalize_images=cfg.normalize_images,
        image_hw=(int(image_hw[0]), int(image_hw[1])),
        anchor_w=cfg.anchor_w if cfg.anchor_w is not None else float(boxes[:, 3].mean()),
        anchor_h=cfg.anchor_h if cfg.anchor_h is not None else float(boxes[:, 4].mean()),
        neighbour_cells=cfg.neighbour_cells,
        bit_depth=bit_depth,
        input_mean=mean,
        input_std=std,
        tile_overlap=tile_overlap(cfg, train),
    )
    model = build_model(config)
    _init_priors(model, train, weights)
    return model


def survey_frames(train: tuple[LabelledSample, ...], channels: int) -> int:
    """The model's bit depth: 16 when any training frame is a 16-bit file, else 8 (so no
    16-bit frame is squashed to 8 bits). For channel counts other than 1 and 3, every frame
    must have that many planes; the first that does not stops the run. From the headers the
    scan read (the label index keeps them): no file is opened here."""
    if channels not in (1, 3):
        for sample in train:
            if sample.planes != channels:
                raise UserError(
                    f"has {sample.planes} channel(s) (pages of a TIFF stack, or samples per "
                    f"pixel), but --channels is {channels}",
                    path=sample.image,
                    fix=f"give frames of {channels} pages (a TIFF stack) or {channels} samples "
                    f"per pixel, or train with --channels {sample.planes}",
                )
    return max((sample.bit_depth for sample in train), default=8)


def input_statistics(
    train: tuple[LabelledSample, ...], channels: int, bit_depth: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (pixel units) of up to STATS_FRAMES evenly spaced training
    frames. A std below one grey level (a flat channel) is raised to one, so a constant
    channel divides by 1 instead of blowing up."""
    picks = np.linspace(0, len(train) - 1, min(len(train), STATS_FRAMES)).round().astype(int)
    total = np.zeros(channels)
    squares = np.zeros(channels)
    pixels = 0
    for i in sorted(set(picks.tolist())):
        try:
            frame = decode_image(train[i].image, channels, bit_depth).astype(np.float64)
        except ImageError as e:
            raise UserError(str(e), path=train[i].image) from None
        total += frame.sum(axis=(1, 2))
        squares += (frame**2).sum(axis=(1, 2))
        pixels += frame.shape[1] * frame.shape[2]
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(max(s, 1.0)) for s in std)


def _listed(values: tuple[float, ...] | None) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values or ()) + "]"


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
        "channels": (cfg.channels, old.channels),
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
