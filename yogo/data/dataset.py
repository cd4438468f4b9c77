"""A split as a torch Dataset: decoded uint8 image and its boxes, per sample.

    dataset = DetectionDataset(scan.splits["train"], image_hw=(192, 256), channels=1,
                               augment=True)
    image, boxes = dataset[0]      # (C, H, W) uint8, (N, 5) float32 class, xc, yc, w, h

Labels were parsed once by `scan_dataset`; only pixels are read here. An image that turns out
to be corrupt when fully decoded yields its path instead, so the loader can skip and report it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from yogo.data.images import ImageError, decode_image
from yogo.data.scan import LabelledSample
from yogo.data.transforms import random_flips, resize

Item = tuple[torch.Tensor, torch.Tensor] | Path


class DetectionDataset(torch.utils.data.Dataset[Item]):
    def __init__(
        self,
        samples: Sequence[LabelledSample],
        image_hw: tuple[int, int],
        channels: int,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.samples = tuple(samples)
        self.image_hw = image_hw
        self.channels = channels
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, token: int) -> Item:
        """`token` is `epoch * len(self) + index` (see loader.EpochSampler), or a plain index."""
        epoch, index = divmod(token, len(self.samples))
        sample = self.samples[index]
        try:
            pixels = decode_image(sample.image, self.channels)
        except ImageError:
            return sample.image
        image = resize(torch.from_numpy(pixels), self.image_hw)
        boxes = torch.from_numpy(sample.boxes)
        if self.augment:
            # One generator per (seed, epoch, sample): independent of workers and of where a
            # resumed run restarts.
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + epoch) * len(self.samples) + index
            )
            image, boxes = random_flips(image, boxes, generator)
        return image, boxes
