"""A split as a torch Dataset: decoded uint8 (or uint16) image and its boxes, per sample.

    dataset = DetectionDataset(scan.splits["train"], image_hw=(192, 256), channels=1,
                               augment=True, settings=AugmentSettings(scale=0.1))
    image, boxes = dataset[0]      # (C, H, W) uint8, (N, 5) float32 class, xc, yc, w, h
    # bit_depth=16: (C, H, W) uint16 frames (yogo.data.channels)

Labels were parsed once by `scan_dataset`; only pixels are read here, and with a frame cache
(yogo.data.cache) only once: the decoded, resized frame is kept before augmentation (a tiled
dataset cuts a window of the frame at its own resolution instead, and is not cached). An image
that turns out to be corrupt when fully decoded yields its path instead, so the loader can skip
and report it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from yogo.config import AugmentSettings
from yogo.data.cache import FrameCache
from yogo.data.images import ImageError, decode_image
from yogo.data.paste import PastePool, paste_objects
from yogo.data.scan import LabelledSample
from yogo.data.transforms import augment, random_flips, random_window, resize

Item = tuple[torch.Tensor, torch.Tensor] | Path
# Offset of the paste generator's seed from the sample's (any constant apart from 0 will do).
PASTE_SEED = 0x9E3779B9
TILE_SEED = 0x7F4A7C15


class DetectionDataset(torch.utils.data.Dataset[Item]):
    def __init__(
        self,
        samples: Sequence[LabelledSample],
        image_hw: tuple[int, int],
        channels: int,
        augment: bool = False,
        seed: int = 0,
        settings: AugmentSettings | None = None,
        paste: tuple[PastePool, float] | None = None,
        bit_depth: int = 8,
        tile: bool = False,
    ) -> None:
        self.samples = tuple(samples)
        self.image_hw = image_hw
        self.channels = channels
        self.bit_depth = bit_depth  # frames are uint8 (8) or uint16 (16)
        self.augment = augment
        self.settings = settings or AugmentSettings()
        self.paste_pool, self.paste_prob = paste or (PastePool(np.zeros((0, 5))), 0.0)
        self.seed = seed
        # Tiled (--tile): frames keep their resolution and each item is an image_hw window
        # (train: drawn per sample and epoch; val: one fixed per sample); never cached.
        self.tile = tile
        self.cache: FrameCache | None = None
        self.cache_start = 0  # this split's first slot in the cache

    def use_cache(self, cache: FrameCache, start: int) -> None:
        self.cache, self.cache_start = cache, start

    def __len__(self) -> int:
        return len(self.samples)

    def frame(self, index: int) -> torch.Tensor:
        """Sample `index`'s decoded frame at the model's input size (a read-only view when
        cached: copy before writing). Raises ImageError for a file that fails to decode."""
        cached = self.cache.get(self.cache_start + index) if self.cache else None
        if cached is not None:
            return torch.from_numpy(cached)
        pixels = decode_image(self.samples[index].image, self.channels, self.bit_depth)
        if self.tile:
            return torch.from_numpy(pixels)
        image = resize(torch.from_numpy(pixels), self.image_hw)
        if self.cache is not None:
            self.cache.put(self.cache_start + index, image.numpy())
        return image

    def __getitem__(self, token: int) -> Item:
        """`token` is `epoch * len(self) + index` (see loader.EpochSampler), or a plain index."""
        epoch, index = divmod(token, len(self.samples))
        sample = self.samples[index]
        try:
            image = self.frame(index)  # augmentation and collate copy it
        except ImageError:
            return sample.image
        boxes = torch.from_numpy(sample.boxes)
        if self.tile:
            # Its own generator, so the window is the same with augmentation on or off.
            seed = (self.seed * 1_000_003 + (epoch if self.augment else 0)) * len(self) + index
            window = torch.Generator().manual_seed(seed + TILE_SEED)
            image, boxes = random_window(image, boxes, self.image_hw, window)
        if self.augment:
            # One generator per (seed, epoch, sample): independent of workers and of where a
            # resumed run restarts.
            seed = (self.seed * 1_000_003 + epoch) * len(self.samples) + index
            if self.paste_prob > 0 and len(self.paste_pool):
                image, boxes = self._paste(image, boxes, sample, seed)
            generator = torch.Generator().manual_seed(seed)
            image, boxes = random_flips(image, boxes, generator)
            image, boxes = augment(image, boxes, self.settings, generator)
        return image, boxes

    def _paste(
        self, image: torch.Tensor, boxes: torch.Tensor, sample: LabelledSample, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """With probability `paste_prob`, objects from the pool pasted into a copy of `image`
        (their own generator: pasting on or off leaves the other augmentations' draws)."""
        generator = torch.Generator().manual_seed(seed + PASTE_SEED)
        if float(torch.rand(1, generator=generator)) >= self.paste_prob:
            return image, boxes
        scale = (self.image_hw[0] / sample.height, self.image_hw[1] / sample.width)
        return paste_objects(image.clone(), boxes, self.paste_pool, self.frame, scale, generator)
