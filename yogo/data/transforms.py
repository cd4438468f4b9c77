"""Augmentations and resizing. Per sample, uint8 in, uint8 out (uint16 in, uint16 out for
16-bit models: strengths are fractions of the full range, so they mean the same at 16 bits).

    image, boxes = random_flips(image, boxes)       # image (C, H, W) uint8, boxes (N, 5)
    image, boxes = augment(image, boxes, AugmentSettings(scale=0.1), generator)
    image = resize(image, (772, 1032))

Boxes are (N, 5) class, xc, yc, w, h, normalised, so resizing leaves them unchanged.
Randomness comes from the generator passed in (the dataset seeds one per sample and epoch, so
a resumed run draws exactly what an uninterrupted one would). Every strength 0 is off.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from yogo.config import AugmentSettings

# A box cut by the frame edge is kept when at least this share of its area stays inside.
MIN_VISIBLE = 0.4


def augment(
    image: torch.Tensor,
    boxes: torch.Tensor,
    settings: AugmentSettings,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zoom and shift (boxes move with the pixels), then brightness, contrast, gamma, blur and
    noise, on a uint8 (C, H, W) image; the same number of random draws whatever is on, so
    switching one augmentation leaves the others' draws unchanged."""
    if not (settings.geometric or settings.photometric):
        return image, boxes
    draws = torch.rand(8, generator=generator).tolist()
    if settings.geometric:
        image, boxes = _zoom_and_shift(image, boxes, settings, draws[:3])
    if settings.brightness > 0 or settings.contrast > 0 or settings.gamma > 0:
        image = _intensity_map(image, settings, draws[3:6])[image.long()]
    if settings.blur <= 0 and settings.noise <= 0:
        return image, boxes
    pixels = image.float()
    if settings.blur > 0:
        pixels = _gaussian_blur(pixels, draws[6] * settings.blur)
    if settings.noise > 0:
        std = draws[7] * settings.noise * top_value(image) / 255
        pixels += torch.randn(pixels.shape, generator=generator) * std
    return pixels.round_().clamp_(0, top_value(image)).to(image.dtype), boxes


def top_value(image: torch.Tensor) -> int:
    """The brightest value of a uint8 (255) or uint16 (65535) frame."""
    return 65535 if image.dtype == torch.uint16 else 255


def _intensity_map(
    image: torch.Tensor, settings: AugmentSettings, draws: list[float]
) -> torch.Tensor:
    """Brightness, contrast (around the frame's mean) and gamma as one table from each of the
    grey levels (256, or 65536 at 16 bits) to its new value: one lookup per pixel instead of
    three passes."""
    top = top_value(image)
    levels = torch.arange(top + 1, dtype=torch.float32)
    shift = (2 * draws[0] - 1) * settings.brightness * top
    levels += shift
    if settings.contrast > 0:  # around the mean after the shift (nothing is clipped before)
        mean = float(image.float().mean()) + shift
        levels = (levels - mean) * (1 + (2 * draws[1] - 1) * settings.contrast) + mean
    if settings.gamma > 0:
        gamma = math.exp((2 * draws[2] - 1) * settings.gamma)
        levels = (levels.clamp(0, top) / top) ** gamma * top
    return levels.round_().clamp_(0, top).to(image.dtype)


def _zoom_and_shift(
    image: torch.Tensor, boxes: torch.Tensor, settings: AugmentSettings, draws: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale by a factor in [1 - scale, 1 + scale], then shift by up to `translate` of each
    side; uncovered pixels take the frame's mean grey. Boxes cut by the edge are clipped, and
    dropped when less than MIN_VISIBLE of them stays in the frame."""
    _, height, width = image.shape
    factor = 1 + (2 * draws[0] - 1) * settings.scale
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    scaled = resize(image, (new_h, new_w))
    # Top-left corner of the scaled image in the output: centred, then shifted.
    top = (height - new_h) // 2 + round((2 * draws[1] - 1) * settings.translate * height)
    left = (width - new_w) // 2 + round((2 * draws[2] - 1) * settings.translate * width)
    fill = int(image.float().mean().round())
    out = torch.full_like(image, fill)
    src_top, src_left = max(0, -top), max(0, -left)
    dst_top, dst_left = max(0, top), max(0, left)
    rows = min(new_h - src_top, height - dst_top)
    cols = min(new_w - src_left, width - dst_left)
    if rows > 0 and cols > 0:
        out[:, dst_top : dst_top + rows, dst_left : dst_left + cols] = scaled[
            :, src_top : src_top + rows, src_left : src_left + cols
        ]
    return out, place_boxes(boxes, (new_h, new_w), (top, left), (height, width))


def place_boxes(
    boxes: torch.Tensor,
    source_hw: tuple[int, int],
    offset: tuple[int, int],
    out_hw: tuple[int, int],
) -> torch.Tensor:
    """Boxes (N, 5) normalised to a source of `source_hw` pixels whose top-left corner lands
    at `offset` (top, left) in an output of `out_hw`: normalised to the output, clipped to it,
    and dropped when less than MIN_VISIBLE of their area stays inside."""
    if not len(boxes):
        return boxes
    (src_h, src_w), (top, left), (height, width) = source_hw, offset, out_hw
    xc = boxes[:, 1] * src_w + left
    yc = boxes[:, 2] * src_h + top
    half_w, half_h = boxes[:, 3] * src_w / 2, boxes[:, 4] * src_h / 2
    x0, x1 = (xc - half_w).clamp(0, width), (xc + half_w).clamp(0, width)
    y0, y1 = (yc - half_h).clamp(0, height), (yc + half_h).clamp(0, height)
    visible = (x1 - x0) * (y1 - y0) >= MIN_VISIBLE * (4 * half_w * half_h)
    moved = torch.stack(
        [
            boxes[:, 0],
            (x0 + x1) / 2 / width,
            (y0 + y1) / 2 / height,
            (x1 - x0) / width,
            (y1 - y0) / height,
        ],
        dim=1,
    )
    return moved[visible & (x1 > x0) & (y1 > y0)]


def crop_window(
    image: torch.Tensor, boxes: torch.Tensor, top: int, left: int, tile_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `tile_hw` window of a uint8 (C, H, W) frame at (top, left), at the frame's own
    resolution, with its boxes (N, 5) moved to it under the edge rule of `augment`; a frame
    smaller than the tile is padded with its mean grey."""
    _, height, width = image.shape
    tile_h, tile_w = tile_hw
    window = image[:, top : top + tile_h, left : left + tile_w]
    if window.shape[1:] != (tile_h, tile_w):
        fill = int(image.float().mean().round())
        padded = torch.full((image.shape[0], tile_h, tile_w), fill, dtype=image.dtype)
        padded[:, : window.shape[1], : window.shape[2]] = window
        window = padded
    return window, place_boxes(boxes, (height, width), (-top, -left), tile_hw)


def random_window(
    image: torch.Tensor,
    boxes: torch.Tensor,
    tile_hw: tuple[int, int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A `crop_window` at a uniformly drawn position (every pixel of a larger frame can be
    drawn; two draws whatever the frame's size)."""
    _, height, width = image.shape
    draws = torch.rand(2, generator=generator).tolist()
    top = int(draws[0] * (max(0, height - tile_hw[0]) + 1))
    left = int(draws[1] * (max(0, width - tile_hw[1]) + 1))
    return crop_window(image, boxes, top, left, tile_hw)


def _gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a float (C, H, W) image, reflecting at the edges; each pass
    a weighted sum of shifted views (a 1-D conv2d over a whole frame is ~7x slower on CPU)."""
    if sigma < 0.3:  # a kernel narrower than a pixel changes nothing visible
        return pixels
    _, height, width = pixels.shape
    radius = min(max(1, math.ceil(2.5 * sigma)), min(height, width) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    bell = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel: list[float] = (bell / bell.sum()).tolist()
    padded = F.pad(pixels[None], (radius, radius, radius, radius), mode="reflect")[0]
    rows: torch.Tensor = padded[:, :, :width] * kernel[0]
    for k in range(1, len(kernel)):
        rows += padded[:, :, k : k + width] * kernel[k]
    out: torch.Tensor = rows[:, :height] * kernel[0]
    for k in range(1, len(kernel)):
        out += rows[:, k : k + height] * kernel[k]
    return out


def resize(image: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 or uint16 (C, H, W) image to `image_hw`."""
    if tuple(image.shape[1:]) == tuple(image_hw):
        return image
    scaled = F.interpolate(
        image[None].float(), size=image_hw, mode="bilinear", antialias=True, align_corners=False
    )
    return scaled[0].round_().clamp_(0, top_value(image)).to(image.dtype)


def random_flips(
    image: torch.Tensor, boxes: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical flips, each with probability 1/2, and on square images a
    90-degree rotation with probability 1/2 (a smear has no up, down, left or right)."""
    boxes = boxes.clone()
    coin = torch.rand(3, generator=generator)
    if coin[0] < 0.5:
        image = image.flip(-1)
        boxes[:, 1] = 1 - boxes[:, 1]
    if coin[1] < 0.5:
        image = image.flip(-2)
        boxes[:, 2] = 1 - boxes[:, 2]
    if image.shape[1] == image.shape[2] and coin[2] < 0.5:
        # rot90 counter-clockwise: a point (x, y) goes to (y, 1 - x); w and h swap.
        image = torch.rot90(image, 1, dims=(1, 2))
        boxes[:, [1, 2, 3, 4]] = torch.stack(
            [boxes[:, 2], 1 - boxes[:, 1], boxes[:, 4], boxes[:, 3]], dim=1
        )
    return image, boxes
