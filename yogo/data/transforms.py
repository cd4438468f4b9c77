"""Augmentations that move boxes with pixels, and resizing. Per sample, uint8 in, uint8 out.

    image, boxes = random_flips(image, boxes)       # image (C, H, W) uint8, boxes (N, 5)
    image = resize(image, (772, 1032))

Boxes are (N, 5) class, xc, yc, w, h, normalised, so resizing leaves them unchanged.
Randomness comes from the generator passed in (the dataset seeds one per sample and epoch, so
a resumed run draws exactly what an uninterrupted one would).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(image: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 (C, H, W) image to `image_hw`."""
    if tuple(image.shape[1:]) == tuple(image_hw):
        return image
    scaled = F.interpolate(
        image[None].float(), size=image_hw, mode="bilinear", antialias=True, align_corners=False
    )
    return scaled[0].round_().clamp_(0, 255).to(torch.uint8)


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
