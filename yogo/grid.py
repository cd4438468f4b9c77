"""The output grid of the model family and which cell holds which object: one rule for the
training targets (yogo.boxes.build_targets) and `yogo check`'s collision count, in numpy, so
`yogo check` starts without importing torch.

    rows, cols = grid_shape((772, 1032))                  # (97, 129)
    require_usable_image_hw((772, 1032))                  # UserError below 16 px a side
    cell, keep = assign_cells(image, xc, yc, (rows, cols))

Every network in the registry has three stride-2 convolutions (padding 1), total stride 8;
tests/test_model.py runs every registered model and compares its output with this.
"""

from __future__ import annotations

import numpy as np

from yogo.errors import UserError

STRIDE = 8
# The smallest input side the grid can use: two whole cells. Below it the grid is 1 cell wide
# (or its second cell sees a sliver of pixels), so nearly every object competes for one cell.
MIN_CELLS = 2
MIN_IMAGE_SIDE = MIN_CELLS * STRIDE


def grid_shape(image_hw: tuple[int, int]) -> tuple[int, int]:
    """Output grid (rows, columns) for an input size: each stride-2 conv rounds up."""
    height, width = image_hw
    for _ in range(3):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


def require_usable_image_hw(image_hw: tuple[int, int]) -> None:
    """Raise a UserError when the model input size `image_hw` (H, W) is too small for the
    grid: each side needs at least MIN_IMAGE_SIDE px (MIN_CELLS cells of STRIDE px)."""
    height, width = image_hw
    if min(height, width) >= MIN_IMAGE_SIDE:
        return
    rows, cols = grid_shape(image_hw)
    raise UserError(
        f"a model input of {height}x{width} px (H x W) is too small: at stride {STRIDE} it "
        f"gives a {rows}x{cols} grid, and each grid cell holds one object; each side needs "
        f"at least {MIN_IMAGE_SIDE} px ({MIN_CELLS} cells of {STRIDE} px)",
        fix=f"give --image-hw H W with both at least {MIN_IMAGE_SIDE} (every image is resized "
        "to it), or use larger images",
    )


def assign_cells(
    image: np.ndarray, xc: np.ndarray, yc: np.ndarray, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The grid cell of each object and which objects the grid keeps.

    `image` (N,) image index, `xc`, `yc` (N,) normalised centres. Returns `cell` (N,) int64,
    the flat index (image * rows + row) * cols + col, and `keep` (N,) bool: a cell holds one
    object, the first listed of those whose centres fall into it.
    """
    rows, cols = grid
    row = np.clip((yc * rows).astype(np.int64), 0, rows - 1)
    col = np.clip((xc * cols).astype(np.int64), 0, cols - 1)
    cell = (image.astype(np.int64) * rows + row) * cols + col
    order = np.argsort(cell, kind="stable")  # stable: within a cell, in listed order
    first = np.ones(len(cell), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    keep = np.empty_like(first)
    keep[order] = first
    return cell, keep
