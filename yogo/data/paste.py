"""Pasting objects into training frames (`--copy-paste P`): the DDF's thumbnails when it has
`thumbnail_augmentation`, else labelled objects of the rare classes cut from other training
frames. Placed only where they cover no labelled object, so no label becomes wrong.

    pool = PastePool.from_frames(train_samples, num_classes)      # or .from_thumbnails(...)
    image, boxes = paste_objects(image, boxes, pool, load_frame, generator)

YOGO 1.0.1 pasted thumbnails onto blank frames; here they go into real frames, so the model
sees rare objects among the common ones as it will at inference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from yogo.data.images import ImageError, decode_image, survey_thumbnails
from yogo.data.scan import LabelledSample
from yogo.data.transforms import resize
from yogo.errors import UserError, display_path

log = logging.getLogger(__name__)

# Objects pasted into one frame (1 to this many), and placements tried for each.
MAX_PASTED = 3
PLACEMENT_TRIES = 10


@dataclass(frozen=True)
class PastePool:
    """What can be pasted. From frames: `frame` (M,) the training sample each object is cut
    from and `boxes` (M, 5) its label. From thumbnails: `paths` (M,) files read with
    `channels`, and `boxes[:, 0]` their classes (the rest unused)."""

    boxes: np.ndarray
    frame: np.ndarray | None = None
    paths: tuple[Path, ...] = ()
    channels: int = 1

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_frames(cls, train: Sequence[LabelledSample], num_classes: int) -> PastePool:
        """Every labelled object of a rare class (fewer objects than the per-class mean)."""
        boxes = [s.boxes for s in train]
        frame = [np.full(len(s.boxes), i) for i, s in enumerate(train)]
        all_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 5), np.float32)
        all_frames = np.concatenate(frame) if frame else np.zeros(0, np.int64)
        counts = np.bincount(all_boxes[:, 0].astype(np.int64), minlength=num_classes)
        present = counts > 0
        rare = present & (counts < counts[present].mean()) if present.any() else present
        keep = rare[all_boxes[:, 0].astype(np.int64)]
        return cls(all_boxes[keep], all_frames[keep].astype(np.int64))

    @classmethod
    def from_thumbnails(
        cls,
        folders: dict[str, tuple[Path, ...]],
        class_names: Sequence[str],
        channels: int,
        frame_hw: tuple[int, int],
    ) -> PastePool:
        """Every usable thumbnail of the folders (survey_thumbnails), with its folder's class;
        the others are reported once, and none usable is a UserError."""
        usable, unusable = survey_thumbnails(folders, frame_hw)
        for path, reason in unusable[:5]:
            log.warning(f"{display_path(path)}: thumbnail not used: {reason}")
        if len(unusable) > 5:
            log.warning(
                f"... and {len(unusable) - 5} more unusable thumbnails (yogo check lists all)"
            )
        if not usable:
            shown = ", ".join(display_path(f) for group in folders.values() for f in group)
            raise UserError(
                f"--copy-paste: none of the thumbnails can be pasted ({len(unusable)} unusable "
                f"in {shown})",
                fix="put cut-out objects smaller than the frames in the thumbnail folders "
                "(yogo check lists each problem), or train without --copy-paste",
            )
        boxes = np.zeros((len(usable), 5), np.float32)
        boxes[:, 0] = [class_names.index(name) for _, name in usable]
        return cls(boxes, None, tuple(path for path, _ in usable), channels)


def paste_objects(
    image: torch.Tensor,
    boxes: torch.Tensor,
    pool: PastePool,
    load_frame: Callable[[int], torch.Tensor],
    scale: tuple[float, float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste 1 to MAX_PASTED objects drawn uniformly from `pool` into `image` (uint8 or
    uint16 C x H x W,
    written in place: pass a copy), each where it covers no box of `boxes` nor another pasted
    one; returns the image and the boxes with the pasted objects appended. `load_frame(i)`
    gives training frame i at the model's input size; `scale` (y, x) resizes a thumbnail."""
    _, height, width = image.shape
    taken = _pixel_boxes(boxes.numpy(), height, width)
    added = []
    count = int(torch.randint(1, MAX_PASTED + 1, (1,), generator=generator))
    for pick in torch.randint(len(pool), (count,), generator=generator).tolist():
        depth = 16 if image.dtype == torch.uint16 else 8
        crop = _crop(pool, pick, load_frame, depth, scale, height, width)
        if crop is None:
            continue
        h, w = crop.shape[1:]
        if h >= height or w >= width:
            continue
        corners = torch.rand(PLACEMENT_TRIES, 2, generator=generator)
        for y_share, x_share in corners.tolist():
            top, left = int(y_share * (height - h)), int(x_share * (width - w))
            box = np.array([left, top, left + w, top + h], dtype=np.float32)
            if _overlaps(box, taken):
                continue
            image[:, top : top + h, left : left + w] = crop
            taken = np.vstack([taken, box[None]])
            added.append(
                [
                    pool.boxes[pick, 0],
                    (left + w / 2) / width,
                    (top + h / 2) / height,
                    w / width,
                    h / height,
                ]
            )
            break
    if not added:
        return image, boxes
    return image, torch.cat([boxes, torch.tensor(added, dtype=boxes.dtype)])


def _crop(
    pool: PastePool,
    pick: int,
    load_frame: Callable[[int], torch.Tensor],
    bit_depth: int,
    scale: tuple[float, float],
    height: int,
    width: int,
) -> torch.Tensor | None:
    """The pixels of pool object `pick` at the model's input scale; None if unreadable."""
    try:
        if pool.frame is None:  # a thumbnail file, cut at the frames' original resolution
            pixels = torch.from_numpy(decode_image(pool.paths[pick], pool.channels, bit_depth))
            h = max(1, round(pixels.shape[1] * scale[0]))
            w = max(1, round(pixels.shape[2] * scale[1]))
            return resize(pixels, (h, w))
        source = load_frame(int(pool.frame[pick]))
    except ImageError:  # the frame's own loading reports it
        return None
    x0, y0, x1, y1 = _pixel_boxes(pool.boxes[pick : pick + 1], height, width)[0]
    x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    x1, y1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    if x1 <= x0 or y1 <= y0:
        return None
    return source[:, y0:y1, x0:x1]


def _pixel_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, 5) class, xc, yc, w, h normalised -> (N, 4) x0, y0, x1, y1 in pixels."""
    b = boxes.astype(np.float32).reshape(-1, 5)
    xc, yc, w, h = b[:, 1] * width, b[:, 2] * height, b[:, 3] * width, b[:, 4] * height
    return np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)


def _overlaps(box: np.ndarray, others: np.ndarray) -> bool:
    """Whether `box` (4,) touches any of `others` (N, 4), with a one-pixel gap required."""
    return bool(
        (
            (box[0] < others[:, 2] + 1)
            & (others[:, 0] < box[2] + 1)
            & (box[1] < others[:, 3] + 1)
            & (others[:, 1] < box[3] + 1)
        ).any()
    )
