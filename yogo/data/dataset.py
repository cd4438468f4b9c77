"""A split as a torch Dataset: decoded uint8 image and its boxes, per sample.

    dataset = DetectionDataset(scan.splits["train"], image_hw=(192, 256), channels=1,
                               augment=True, settings=AugmentSettings(scale=0.1))
    image, boxes = dataset[0]      # (C, H, W) uint8, (N, 5) float32 class, xc, yc, w, h

Labels were parsed once by `scan_dataset`; only pixels are read here, and with a frame cache
(yogo.data.cache) only once: the decoded, resized frame is kept before augmentation. An image
that turns out to be corrupt when fully decoded yields its path instead, so the loader can skip
and report it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from yogo.data.cache import FrameCache
from yogo.data.images import ImageError, decode_image
from yogo.data.scan import LabelledSample
from yogo.data.transforms import AugmentSettings, augment, random_flips, resize

Item = tuple[torch.Tensor, torch.Tensor] | Path


class DetectionDataset(torch.utils.data.Dataset[Item]):
    def __init__(
        self,
        samples: Sequence[LabelledSample],
        image_hw: tuple[int, int],
        channels: int,
        augment: bool = False,
        seed: int = 0,
        settings: AugmentSettings | None = None,
    ) -> None:
        self.samples = tuple(samples)
        self.image_hw = image_hw
        self.channels = channels
        self.augment = augment
        self.settings = settings or AugmentSettings()
        self.seed = seed
        self.cache: FrameCache | None = None
        self.cache_start = 0  # this split's first slot in the cache

    def use_cache(self, cache: FrameCache, start: int) -> None:
        self.cache, self.cache_start = cache, start

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, token: int) -> Item:
        """`token` is `epoch * len(self) + index` (see loader.EpochSampler), or a plain index."""
        epoch, index = divmod(token, len(self.samples))
        sample = self.samples[index]
        cached = self.cache.get(self.cache_start + index) if self.cache else None
        if cached is not None:
            image = torch.from_numpy(cached)  # a view: augmentation and collate copy it
        else:
            try:
                pixels = decode_image(sample.image, self.channels)
            except ImageError:
                return sample.image
            image = resize(torch.from_numpy(pixels), self.image_hw)
            if self.cache is not None:
                self.cache.put(self.cache_start + index, image.numpy())
        boxes = torch.from_numpy(sample.boxes)
        if self.augment:
            # One generator per (seed, epoch, sample): independent of workers and of where a
            # resumed run restarts.
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + epoch) * len(self.samples) + index
            )
            image, boxes = random_flips(image, boxes, generator)
            image, boxes = augment(image, boxes, self.settings, generator)
        return image, boxes
