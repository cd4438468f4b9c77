"""The detector family: a single-scale grid network with stride 8, its registry, and the one
description of a model (`ModelConfig`) that checkpoints, export and infer share.

    config = ModelConfig("base_model", ("healthy", "ring"), channels=1, normalize_images=True,
                         image_hw=(772, 1032), anchor_w=0.045, anchor_h=0.06)
    model = build_model(config)
    raw = model(images)            # (B, 5 + C, Sy, Sx): tx, ty, tw, th, to, class logits
    decoded = model.predict(images)  # (B, 5 + C, Sy, Sx): xc, yc, w, h, objectness, class probs

Pure: tensors in, tensors out; no I/O, no loss, no rank checks. Parameter names follow YOGO
1.0.1 (`model.K.M.*`), so its `base_model` weights load unchanged. Any input size works; the
grid is `yogo.model.grid.grid_shape(image_hw)`, ceil(H/8) x ceil(W/8).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from yogo.errors import UserError
from yogo.model.boxes import decode
from yogo.model.grid import grid_shape


@dataclass(frozen=True)
class ModelConfig:
    """Everything it takes to rebuild a model and feed it; saved in every checkpoint (`model:`)
    and in exported ONNX metadata."""

    model_name: str
    """Network from the registry (MODELS)."""
    class_names: tuple[str, ...]
    channels: int
    """Input channels: 1 (grayscale), 3 (RGB) or any N (e.g. phase + fluorescence)."""
    normalize_images: bool
    """The network divides its uint8-range input by 255 itself (when `input_mean` is None)."""
    image_hw: tuple[int, int]
    """Input height and width the model was trained at; frames are resized to it."""
    anchor_w: float
    """Anchor width and height, normalised to the image."""
    anchor_h: float
    neighbour_cells: bool = False
    """Trained with --neighbour-cells: large objects' neighbour cells predict them too, so
    centres decode up to half a cell beyond their cell (yogo.model.boxes.decode); off: inside
    it, as YOGO 1.0.1. Files store it as `centre_range`, the reach in cells: 2 or 1."""
    bit_depth: int = 8
    """Bits per input pixel: 8 (uint8 frames in) or 16 (uint16 frames in)."""
    input_mean: tuple[float, ...] | None = None
    """Per channel, in pixel units, subtracted inside the network (fitted on training frames
    for 16-bit or N-channel models); None: `normalize_images` as before."""
    input_std: tuple[float, ...] | None = None
    """Per channel, in pixel units, divided by after `input_mean`."""
    tile_overlap: int | None = None
    """Trained with --tile: `image_hw` is the tile, and larger frames are read as tiles that
    overlap by this many pixels (yogo.model.tiles); None: frames are resized to `image_hw`.
    Absent from files of untiled models, so theirs stay as they were."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def centre_range(self) -> float:
        """How `neighbour_cells` is stored in checkpoints and ONNX metadata."""
        return 2.0 if self.neighbour_cells else 1.0

    @property
    def grid(self) -> tuple[int, int]:
        """Output grid (rows, columns) at `image_hw`."""
        return grid_shape(self.image_hw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "class_names": list(self.class_names),
            "channels": self.channels,
            "normalize_images": self.normalize_images,
            "image_hw": list(self.image_hw),
            "anchor_w": self.anchor_w,
            "anchor_h": self.anchor_h,
            "centre_range": self.centre_range,
            "bit_depth": self.bit_depth,
            "input_mean": None if self.input_mean is None else list(self.input_mean),
            "input_std": None if self.input_std is None else list(self.input_std),
        } | ({"tile_overlap": self.tile_overlap} if self.tile_overlap is not None else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(
            str(d["model_name"]),
            tuple(str(c) for c in d["class_names"]),
            int(d["channels"]),
            bool(d["normalize_images"]),
            (int(d["image_hw"][0]), int(d["image_hw"][1])),
            float(d["anchor_w"]),
            float(d["anchor_h"]),
            float(d.get("centre_range", 1.0)) > 1,  # absent before neighbour cells: 1
            int(d.get("bit_depth", 8)),  # absent before 16-bit models: 8
            _floats(d.get("input_mean")),
            _floats(d.get("input_std")),
            int(d["tile_overlap"]) if d.get("tile_overlap") is not None else None,
        )


def _floats(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


@dataclass(frozen=True)
class Architecture:
    """A registered network: `width` scales every filter count; `extra_blocks` adds (or with a
    negative number removes) 128-filter 3x3 blocks before the output layer."""

    width: float = 1.0
    extra_blocks: int = 0


# TrainConfig.model's docstring (its --help) describes each; a test checks it names them all.
MODELS: dict[str, Architecture] = {
    "base_model": Architecture(1.0, 0),
    "half_filters": Architecture(0.5, 0),
    "quarter_filters": Architecture(0.25, 0),
    "double_filters": Architecture(2.0, 0),
    "shallow_model": Architecture(1.0, -1),
    "deep_model": Architecture(1.0, 2),
}


def _conv(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


def _block(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class YOGO(nn.Module):
    """The network plus what it needs to interpret its output (the anchor, a buffer, so it
    travels with the state dict) and its input (channels, normalisation)."""

    anchors: torch.Tensor  # (2,) normalised anchor w, h (a buffer)
    input_mean: torch.Tensor | None  # (1, C, 1, 1) pixel units (not saved: the config holds it)
    input_std: torch.Tensor | None

    def __init__(self, architecture: Architecture, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes = config.num_classes
        self.channels = channels = config.channels
        self.normalize_images = config.normalize_images
        anchors = torch.tensor([config.anchor_w, config.anchor_h], dtype=torch.float32)
        self.register_buffer("anchors", anchors)
        for name in ("input_mean", "input_std"):
            values = getattr(config, name)
            stats = None if values is None else torch.tensor(values).float().view(1, -1, 1, 1)
            self.register_buffer(name, stats, persistent=False)
        f16, f32, f64, f128 = (max(1, round(n * architecture.width)) for n in (16, 32, 64, 128))
        act = nn.LeakyReLU(0.01)
        blocks = [
            _block(_conv(channels, f16, 2, bias=False), nn.BatchNorm2d(f16), act),
            _block(_conv(f16, f32), act, nn.Dropout2d(0.05)),
            _block(_conv(f32, f64, 2), act, nn.Dropout2d(0.1)),
            _block(_conv(f64, f128), act, nn.Dropout2d(0.15)),
            _block(_conv(f128, f128, 2, bias=False), nn.BatchNorm2d(f128), act),
            _block(_conv(f128, f128), nn.BatchNorm2d(f128), act),
            _block(_conv(f128, f128), act),
        ]
        if architecture.extra_blocks < 0:
            blocks = blocks[: len(blocks) + architecture.extra_blocks]
        for _ in range(max(0, architecture.extra_blocks)):
            blocks.append(_block(_conv(f128, f128), nn.BatchNorm2d(f128), act))
        self.model = nn.Sequential(*blocks, nn.Conv2d(f128, 5 + num_classes, 1))
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for LeakyReLU, zero biases, and a near-zero output layer.
        PyTorch's default conv init has a third of He's variance, which shrinks activations
        layer by layer in a network with few batch-norms and slows early training."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.01, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.output_layer.weight, std=0.01)

    @property
    def output_layer(self) -> nn.Conv2d:
        layer = self.model[-1]
        assert isinstance(layer, nn.Conv2d)
        return layer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """`images` (B, C, H, W), uint8 or uint16 (`bit_depth`), or float in that range -> raw
        output (B, 5 + C, Sy, Sx). The normalisation is part of the network, so exported
        models take frames as cameras give them."""
        x = images.float()
        if self.input_mean is not None and self.input_std is not None:
            x = (x - self.input_mean) / self.input_std
        elif self.normalize_images:
            x = x / 255.0
        out: torch.Tensor = self.model(x)
        return out

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded output (B, 5 + C, Sy, Sx): xc, yc, w, h (normalised), objectness, classes."""
        return self.decode(self(images))

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """This model's raw output decoded (its anchor and neighbour cells;
        yogo.model.boxes.decode)."""
        return decode(raw, self.anchors[0], self.anchors[1], self.config.neighbour_cells)

    def init_output_priors(self, object_fraction: float, class_frequencies: torch.Tensor) -> None:
        """Start the output layer at the data's priors: objectness at the fraction of cells
        holding an object, class logits at log class frequency. Without it the first hundreds
        of steps only unlearn a 50% objectness guess and rare classes start far behind."""
        bias = self.output_layer.bias
        assert bias is not None
        p = min(max(object_fraction, 1e-4), 1 - 1e-4)
        with torch.no_grad():
            bias[4] = float(torch.logit(torch.tensor(p)))
            bias[5:] = torch.log(class_frequencies.clamp_min(1e-4) / class_frequencies.sum())


def fused_for_inference(model: YOGO) -> YOGO:
    """A copy of `model` for inference only, computing the same outputs in fewer passes over
    the activations: each BatchNorm folded into the conv before it (eval statistics), the
    /255 input scaling folded into the first conv's weights, dropout gone, LeakyReLU in
    place. Its parameters no longer match a checkpoint's names: never train or save it."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    blocks: list[nn.Module] = []
    for block in fused.model:
        layers: list[nn.Module] = []
        for layer in block if isinstance(block, nn.Sequential) else [block]:
            if isinstance(layer, nn.BatchNorm2d):
                conv = layers.pop()
                assert isinstance(conv, nn.Conv2d)
                layers.append(fuse_conv_bn_eval(conv, layer))
            elif isinstance(layer, nn.LeakyReLU):
                layers.append(nn.LeakyReLU(layer.negative_slope, inplace=True))
            elif not isinstance(layer, nn.Dropout2d):
                layers.append(layer)
        blocks.append(nn.Sequential(*layers) if isinstance(block, nn.Sequential) else layers[0])
    fused.model = nn.Sequential(*blocks)
    if fused.normalize_images and fused.input_mean is None:  # conv(x / 255) == conv(x) with
        # weights / 255, bias unchanged. A per-channel mean is not folded: the first conv's
        # zero padding would then stand for the mean, not for zero.
        first = blocks[0][0] if isinstance(blocks[0], nn.Sequential) else blocks[0]
        assert isinstance(first, nn.Conv2d)
        with torch.no_grad():
            first.weight /= 255.0
        fused.normalize_images = False
    return fused


def build_model(config: ModelConfig) -> YOGO:
    """A new network as `config` describes (weights initialised, not loaded)."""
    require_known_model(config.model_name)
    return YOGO(MODELS[config.model_name], config)


def require_known_model(name: str) -> None:
    if name not in MODELS:
        raise UserError(
            f"--model '{name}' is not a known model", fix=f"choose one of: {', '.join(MODELS)}"
        )
