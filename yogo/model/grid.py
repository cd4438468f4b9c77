"""The output grid of the model family and which cell holds which object: one rule for the
training targets (yogo.model.boxes.build_targets) and the collisions `yogo check` and training
report, in numpy, so `yogo check` starts without importing torch.

    rows, cols = grid_shape((772, 1032))                  # (97, 129)
    require_usable_image_hw((772, 1032))                  # UserError below 16 px a side
    cell, keep = assign_cells(image, xc, yc, (rows, cols))
    collisions, lost, total = grid_collisions(boxes_per_image, (rows, cols), num_classes)

Every network in the registry has three stride-2 convolutions (padding 1), total stride 8;
tests/test_model.py runs every registered model and compares its output with this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    cell = _cell_of(image, xc, yc, grid)
    order = np.argsort(cell, kind="stable")  # stable: within a cell, in listed order
    first = np.ones(len(cell), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    keep = np.empty_like(first)
    keep[order] = first
    return cell, keep


def _cell_of(
    image: np.ndarray, xc: np.ndarray, yc: np.ndarray, grid: tuple[int, int]
) -> np.ndarray:
    """The flat cell index (image * rows + row) * cols + col of each object."""
    rows, cols = grid
    row = np.clip((yc * rows).astype(np.int64), 0, rows - 1)
    col = np.clip((xc * cols).astype(np.int64), 0, cols - 1)
    return (image.astype(np.int64) * rows + row) * cols + col


def claim_neighbour_cells(
    image: np.ndarray,
    xc: np.ndarray,
    yc: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    grid: tuple[int, int],
    taken: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The extra cells objects claim besides their centre cell (`--neighbour-cells`): of the
    horizontal and the vertical neighbour nearest to the centre (YOLOv5's candidates), those
    inside the grid, lying wholly inside the object's box (`w`, `h`: so only objects two or
    more cells wide get any) and not in `taken` (the centre cells). A cell claimed by several
    objects goes to the one whose centre is nearest to the cell's. Returns flat cell indices
    and the objects' row indices.

    A large object's cells all look alike; more of them as positives give one consistent
    target instead of one positive among negatives. The model must decode centres up to half
    a cell beyond its cell (`yogo.model.boxes.decode` with `neighbour_cells`).
    """
    rows, cols = grid
    gx, gy = xc * cols, yc * rows
    col = np.clip(gx.astype(np.int64), 0, cols - 1)
    row = np.clip(gy.astype(np.int64), 0, rows - 1)
    step_x = np.where(gx - col < 0.5, -1, 1)
    step_y = np.where(gy - row < 0.5, -1, 1)
    objects = np.arange(len(xc))
    cand_row = np.concatenate([row, row + step_y])
    cand_col = np.concatenate([col + step_x, col])
    owner = np.concatenate([objects, objects])
    inside = (cand_row >= 0) & (cand_row < rows) & (cand_col >= 0) & (cand_col < cols)
    # ... and the whole cell lies inside the object's box
    inside &= np.abs(cand_col + 0.5 - gx[owner]) + 0.5 <= w[owner] * cols / 2
    inside &= np.abs(cand_row + 0.5 - gy[owner]) + 0.5 <= h[owner] * rows / 2
    cand_row, cand_col, owner = cand_row[inside], cand_col[inside], owner[inside]
    cell = (image[owner].astype(np.int64) * rows + cand_row) * cols + cand_col
    free = ~np.isin(cell, taken)
    cell, owner = cell[free], owner[free]
    cand_row, cand_col = cand_row[free], cand_col[free]
    distance = (gx[owner] - cand_col - 0.5) ** 2 + (gy[owner] - cand_row - 0.5) ** 2
    order = np.lexsort((distance, cell))  # by cell, nearest centre first
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    chosen = order[first]
    return cell[chosen], owner[chosen]


# A class losing more than this share of its objects to shared grid cells gets a warning.
COLLISION_LOSS_SHARE = 0.05


def collision_losses(
    lost: np.ndarray, total: np.ndarray, class_names: Sequence[str], image_hw: Sequence[int]
) -> list[str]:
    """A sentence for each class that loses more than COLLISION_LOSS_SHARE of its objects to
    shared grid cells (`lost`, `total`: per class, from `grid_collisions`)."""
    cells = grid_shape((int(image_hw[0]), int(image_hw[1])))
    return [
        f"the {cells[0]}x{cells[1]} grid at --image-hw {image_hw[0]} {image_hw[1]} keeps one "
        f"object per cell: class '{name}' loses {n} of its {of} objects ({n / of:.0%}) to "
        f"shared cells; a larger --image-hw gives more, smaller cells ({STRIDE} px each)"
        for name, n, of in zip(class_names, lost, total, strict=True)
        if n > COLLISION_LOSS_SHARE * of
    ]


@dataclass(frozen=True)
class Collision:
    """Objects of one image whose centres share a grid cell: `objects` index that image's
    boxes, `kept` is the one training keeps (`assign_cells`), `cell` is (row, column)."""

    image: int
    objects: tuple[int, ...]
    kept: int
    cell: tuple[int, int]


def grid_collisions(
    boxes: Sequence[np.ndarray], cells: tuple[int, int], num_classes: int
) -> tuple[list[Collision], np.ndarray, np.ndarray]:
    """The shared cells of every image (`boxes`: per image (N, 5) class, xc, yc, w, h), and per
    class how many objects the grid loses and how many there are: training's own rule
    (`assign_cells`) decides which one stays."""
    counts = [len(b) for b in boxes]
    if not sum(counts):
        return [], np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    every = np.concatenate(boxes)
    owner = np.repeat(np.arange(len(boxes)), counts)
    cell, keep = assign_cells(owner, every[:, 1], every[:, 2], cells)
    first = np.cumsum([0, *counts])  # index of each image's first box in `every`
    order = np.argsort(cell, kind="stable")
    _, starts, multiplicity = np.unique(cell[order], return_index=True, return_counts=True)
    rows, cols = cells
    collisions = []
    for start, n in zip(starts[multiplicity > 1], multiplicity[multiplicity > 1], strict=True):
        members = order[start : start + n]
        kept = members[keep[members]][0]
        image = int(owner[kept])
        row, col = divmod(int(cell[kept]) % (rows * cols), cols)
        objects = tuple(int(m - first[image]) for m in members)
        collisions.append(Collision(image, objects, int(kept - first[image]), (row, col)))
    return collisions, *_losses(every, keep, num_classes)


def grid_losses(
    boxes: Sequence[np.ndarray], cells: tuple[int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """`grid_collisions`' per-class counts alone (objects lost, objects): what a run's start
    warns about. Without listing each shared cell, and without a sort: each cell's first
    object found by a minimum over the cells of a block of frames (1 s less on 100k frames
    of 130 objects)."""
    lost, total = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    per_image = cells[0] * cells[1]
    block = max(1, LOSS_BLOCK_CELLS // per_image)
    for start in range(0, len(boxes), block):
        part = boxes[start : start + block]
        counts = [len(b) for b in part]
        if not sum(counts):
            continue
        every = np.concatenate(part)
        owner = np.repeat(np.arange(len(part)), counts)
        cell = _cell_of(owner, every[:, 1], every[:, 2], cells)
        order = np.arange(len(cell))
        first = np.full(len(part) * per_image, len(cell))
        np.minimum.at(first, cell, order)
        block_lost, block_total = _losses(every, first[cell] == order, num_classes)
        lost += block_lost
        total += block_total
    return lost, total


LOSS_BLOCK_CELLS = 1 << 22  # grid_losses' working memory: 32 MB of cell indices


def _losses(every: np.ndarray, keep: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    classes = every[:, 0].astype(np.int64)
    return np.bincount(classes[~keep], minlength=num_classes), np.bincount(
        classes, minlength=num_classes
    )
