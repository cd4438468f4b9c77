"""Heatmap masking in `yogo infer`: objects that sit in the same place for a whole run (a cell
stuck to the flow cell, debris, a dead pixel cluster) are not part of the specimen's count.

    heatmap = Heatmap.of(found, num_classes, grid)          # where each class was detected
    mask = heatmap.mask(0.8)                                # (C, Sy, Sx) bool
    mask = load_mask(Path("mask.npy"), num_classes, grid, image_hw)   # or a given one
    flags = masked(rows, mask)                              # per detection

A detection is in a mask when its class's grid cell holding its centre is masked. With
`--heatmap-mask auto` a class's cell is masked when that class is detected there in more than
`--heatmap-min-fraction` of the frames: a moving object visits a cell in far fewer frames
than that (docs/export-and-infer.md gives the measured fractions); a stuck one sits there in
all of them. Masked detections are reported apart, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.errors import UserError


@dataclass(frozen=True)
class Heatmap:
    """In how many frames each class was detected centred in each grid cell, and any class."""

    frames: int
    hits: np.ndarray  # (C, Sy, Sx) int
    occupied: np.ndarray  # (Sy, Sx) int: frames with a detection of any class there

    @staticmethod
    def of(
        rows_per_frame: Sequence[np.ndarray], num_classes: int, grid: tuple[int, int]
    ) -> Heatmap:
        hits = np.zeros((num_classes, *grid), dtype=np.int64)
        occupied = np.zeros(grid, dtype=np.int64)
        for rows in rows_per_frame:
            cls, y, x = cells(rows, grid)
            seen = np.zeros_like(hits, dtype=bool)
            seen[cls, y, x] = True  # a cell counts once per frame
            hits += seen
            occupied += seen.any(axis=0)  # and once for any class, however many were there
        return Heatmap(len(rows_per_frame), hits, occupied)

    def fraction(self) -> np.ndarray:
        return self.hits / max(self.frames, 1)

    def mask(self, min_fraction: float) -> np.ndarray:
        """The cells where a class sits in more than `min_fraction` of the frames; and for
        every class, the cells where some object does (a stuck object whose class the model
        calls differently from frame to frame, as a weak model does with rare classes)."""
        anything = self.occupied / max(self.frames, 1) > min_fraction
        mask: np.ndarray = (self.fraction() > min_fraction) | anything[None]
        return mask


def cells(rows: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each detection's class and the grid cell (row, column) of its box centre."""
    sy, sx = grid
    xc = (rows[:, 0] + rows[:, 2]) / 2
    yc = (rows[:, 1] + rows[:, 3]) / 2
    y = np.clip((yc * sy).astype(np.int64), 0, sy - 1)
    x = np.clip((xc * sx).astype(np.int64), 0, sx - 1)
    return rows[:, 6].astype(np.int64), y, x


def masked(rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Whether each detection lies in the mask (its class's cell of its centre)."""
    cls, y, x = cells(rows, (mask.shape[1], mask.shape[2]))
    flags: np.ndarray = mask[cls, y, x]
    return flags


def load_mask(
    path: Path, num_classes: int, grid: tuple[int, int], image_hw: tuple[int, int]
) -> np.ndarray:
    """A given mask as (C, Sy, Sx) bool. The file: a .npy of booleans (or 0/1), the size of
    the grid (Sy, Sx) or of the model's input frames (H, W: a cell is masked when most of its
    pixels are), for every class, or with a class axis first, (C, Sy, Sx) or (C, H, W)."""
    sy, sx = grid
    h, w = image_hw
    accepted = (
        f"(Sy, Sx) = ({sy}, {sx}) for the grid, (H, W) = ({h}, {w}) for frames, or either with "
        f"the {num_classes} classes first"
    )
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"is not a .npy array ({e})", path=path, fix=f"save {accepted}") from None
    if array.dtype != bool and not (
        np.issubdtype(array.dtype, np.number) and np.isin(array, (0, 1)).all()
    ):
        raise UserError(
            f"holds {array.dtype} values other than 0 and 1; a mask is boolean",
            path=path,
            fix="np.save(path, mask.astype(bool))",
        )
    array = array.astype(bool)
    if array.ndim == 2:
        array = np.broadcast_to(array, (num_classes, *array.shape))
    if (
        array.ndim != 3
        or array.shape[0] != num_classes
        or array.shape[1:] not in ((sy, sx), (h, w))
    ):
        raise UserError(f"has shape {array.shape}; a mask is {accepted}", path=path)
    if array.shape[1:] == (sy, sx):
        return np.ascontiguousarray(array)
    # frame-sized: the share of each cell's pixels that are masked
    rows = np.minimum(np.arange(h) * sy // h, sy - 1)
    cols = np.minimum(np.arange(w) * sx // w, sx - 1)
    cell = (rows[:, None] * sx + cols[None, :]).ravel()
    pixels = np.bincount(cell, minlength=sy * sx)
    share = np.stack([np.bincount(cell, weights=a.ravel(), minlength=sy * sx) for a in array])
    mask: np.ndarray = (share / pixels > 0.5).reshape(num_classes, sy, sx)
    return mask


def heatmap_figure(
    heatmap: Heatmap | None, mask: np.ndarray, class_names: Sequence[str], min_fraction: float
) -> Any:
    """Per class (and for any class), the share of frames with a detection centred in each
    grid cell, or the given mask alone; the masked cells outlined."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if heatmap is not None:
        shown = [heatmap.occupied / max(heatmap.frames, 1), *heatmap.fraction()]
    else:
        shown = [mask.any(axis=0).astype(np.float64), *mask.astype(np.float64)]
    titles = ["any class", *class_names]
    outlined = [mask.all(axis=0), *mask]
    n = len(shown)
    columns = min(n, 4)
    rows = -(-n // columns)
    sy, sx = mask.shape[1:]
    width = 3.6 * columns
    fig, axes = plt.subplots(
        rows, columns, figsize=(width, rows * width / columns * sy / sx + 1.2), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        image = ax.imshow(shown[i], cmap="viridis", vmin=0, vmax=1)
        ys, xs = np.nonzero(outlined[i])
        for y, x in zip(ys, xs, strict=True):
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, color="red", lw=1.5))
        ax.set_title(f"{titles[i]}: {len(ys)} masked cell(s)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.8, label="share of frames")
    what = (
        f"{heatmap.frames} frames; red: masked, where a class or any object sits in more than "
        f"{min_fraction:g} of them"
        if heatmap is not None
        else "the given mask, red where masked"
    )
    fig.suptitle(f"detections per grid cell ({what})", fontsize=11)
    return fig
