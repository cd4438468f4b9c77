"""Frames larger than the model's input, read as overlapping tiles and merged into one frame's
detections (models trained with `yogo train --tile`).

    windows = plan_windows((2048, 2048), (256, 256), overlap=32)   # [(top, left), ...]
    tiles = cut_tiles(frame, windows, (256, 256))                 # (T, C, 256, 256) uint8
    found = [...]  # per tile, postprocess's (N, 7 + ...) rows, normalised to the tile
    rows = merge_tiles(found, windows, (256, 256), (2048, 2048), iou_thresh=0.5)

An object is counted once: each tile keeps only the detections whose centre lies in its core
(the part of the frame nearer to it than to any other tile: seams run down the middle of each
overlap, so the cores partition the frame), then twins (one object seen by two tiles whose
centres fall on either side of a seam) are suppressed by their geometry relative to their own
size, then the usual class-agnostic NMS runs over the frame. With an overlap of at least twice
the largest object, an object whose centre is in a tile's core lies whole in that tile.
Pure tensors, no I/O.
"""

from __future__ import annotations

import math

import torch

from yogo.model.boxes import nms

# Two detections from different tiles are one object when they overlap this much (IoU), or
# when their centres are closer than this share of the smaller box's shorter side: relative
# to the boxes' size, so it holds for small and large objects alike.
TWIN_IOU = 0.3
TWIN_CENTRE_SHARE = 0.5


def uses_tiles(
    frame_hw: tuple[int, ...], image_hw: tuple[int, int], tiled_model: bool, tiles: bool | None
) -> bool:
    """Whether a frame is read as tiles: `tiles` True or False forces it; None (auto): when
    the model was trained with --tile and the frame is larger than its input, so frames of
    the model's own size take the resizing path unchanged."""
    if tiles is not None:
        return tiles
    larger = frame_hw[0] > image_hw[0] or frame_hw[1] > image_hw[1]
    return tiled_model and larger


def plan_axis(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of the tiles along one axis of `length` pixels: the fewest tiles of `tile`
    pixels that overlap by at least `overlap`, spread evenly, the last ending at the edge
    (one tile at 0 when the axis fits in one)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def plan_windows(
    frame_hw: tuple[int, int], tile_hw: tuple[int, int], overlap: int
) -> list[tuple[int, int]]:
    """(top, left) of every tile over a frame, row by row."""
    if not 0 <= 2 * overlap < min(tile_hw):
        raise ValueError(f"overlap {overlap} must be in [0, half the tile {tile_hw})")
    rows = plan_axis(frame_hw[0], tile_hw[0], overlap)
    cols = plan_axis(frame_hw[1], tile_hw[1], overlap)
    return [(top, left) for top in rows for left in cols]


def _cores(starts: list[int], tile: int, length: int) -> list[tuple[float, float]]:
    """Per tile along one axis, the [begin, end) pixels of the frame nearer to it than to its
    neighbours: the seams are the middles of the overlaps."""
    seams = [(starts[i + 1] + starts[i] + tile) / 2 for i in range(len(starts) - 1)]
    edges = [0.0, *seams, float(max(length, tile))]
    return [(edges[i], edges[i + 1]) for i in range(len(starts))]


def cut_tiles(
    frame: torch.Tensor, windows: list[tuple[int, int]], tile_hw: tuple[int, int]
) -> torch.Tensor:
    """uint8 frame (C, H, W) -> its windows (T, C, tile_h, tile_w); parts of a window beyond a
    frame smaller than the tile take the frame's mean grey (as training's windows do)."""
    channels, height, width = frame.shape
    tile_h, tile_w = tile_hw
    padded = frame
    if height < tile_h or width < tile_w:
        fill = int(frame.float().mean().round())
        padded = torch.full(
            (channels, max(height, tile_h), max(width, tile_w)), fill, dtype=frame.dtype
        )
        padded[:, :height, :width] = frame
    return torch.stack([padded[:, t : t + tile_h, s : s + tile_w] for t, s in windows])


def merge_tiles(
    found: list[torch.Tensor],
    windows: list[tuple[int, int]],
    tile_hw: tuple[int, int],
    frame_hw: tuple[int, int],
    iou_thresh: float = 0.5,
) -> torch.Tensor:
    """Per tile the (N, 7 + K) rows of `yogo.model.boxes.postprocess` (x0, y0, x1, y1
    normalised to the tile, objectness, class probability, class, ...) -> the frame's rows,
    normalised to the frame, highest objectness first: core rule, twins, then NMS."""
    tile_h, tile_w = tile_hw
    height, width = frame_hw
    rows_starts = sorted({t for t, _ in windows})
    col_starts = sorted({s for _, s in windows})
    row_cores = dict(zip(rows_starts, _cores(rows_starts, tile_h, height), strict=True))
    col_cores = dict(zip(col_starts, _cores(col_starts, tile_w, width), strict=True))
    kept, tile_ids, cores = [], [], []
    for index, (rows, (top, left)) in enumerate(zip(found, windows, strict=True)):
        pixels = rows.clone()
        pixels[:, [0, 2]] = rows[:, [0, 2]] * tile_w + left
        pixels[:, [1, 3]] = rows[:, [1, 3]] * tile_h + top
        (y_begin, y_end), (x_begin, x_end) = row_cores[top], col_cores[left]
        core = in_core(pixels, (x_begin, y_begin, x_end, y_end))
        count = int(core.sum())
        kept.append(pixels[core])
        tile_ids.append(torch.full((count,), index, dtype=torch.long))
        cores.append(torch.tensor([[x_begin, y_begin, x_end, y_end]]).expand(count, 4))
    merged = torch.cat(kept)
    twins = suppress_twins(merged, torch.cat(tile_ids), torch.cat(cores), windows, tile_hw)
    merged = merged[twins]
    merged = merged[nms(merged[:, :4], merged[:, 4], iou_thresh)]
    merged[:, [0, 2]] /= width
    merged[:, [1, 3]] /= height
    return merged


def in_core(pixels: torch.Tensor, core: tuple[float, float, float, float]) -> torch.Tensor:
    """(N,) whether each row's box centre (rows (N, 4+) x0, y0, x1, y1 in frame pixels) lies
    in `core` (x0, y0, x1, y1; half-open, so a centre on a seam belongs to one tile)."""
    xc, yc = (pixels[:, 0] + pixels[:, 2]) / 2, (pixels[:, 1] + pixels[:, 3]) / 2
    return (xc >= core[0]) & (xc < core[2]) & (yc >= core[1]) & (yc < core[3])


def suppress_twins(
    rows: torch.Tensor,
    tiles: torch.Tensor,
    cores: torch.Tensor,
    windows: list[tuple[int, int]],
    tile_hw: tuple[int, int],
) -> torch.Tensor:
    """Indices of the rows to keep, in order (rows: (N, 5+) x0, y0, x1, y1 in frame pixels,
    objectness; tiles: (N,) the window of each; cores: (N, 4) x0, y0, x1, y1 of its window's
    core). Highest objectness first, a row is dropped when a kept row from another tile is its
    twin (IoU >= TWIN_IOU, or centres closer than TWIN_CENTRE_SHARE of the smaller box's
    shorter side). Only rows that reach within half their size of their core's edge can have
    a twin, and only in a window overlapping theirs: those pairs alone are compared, so the
    cost grows with the seams, not with the square of a frame's thousands of objects."""
    boxes = rows[:, :4]
    sides = boxes[:, 2:] - boxes[:, :2]
    reach = sides.max(dim=1).values[:, None] / 2
    near = ((boxes[:, :2] - reach < cores[:, :2]) | (boxes[:, 2:] + reach > cores[:, 2:])).any(1)
    by_tile = [((tiles == t) & near).nonzero()[:, 0] for t in range(len(windows))]
    twins: dict[int, list[int]] = {}
    for a, b in _overlapping_pairs(windows, tile_hw):
        for i, j in _twin_pairs(boxes, sides, by_tile[a], by_tile[b]):
            twins.setdefault(i, []).append(j)
            twins.setdefault(j, []).append(i)
    dropped = torch.zeros(len(rows), dtype=torch.bool)
    for i in torch.argsort(rows[:, 4], descending=True, stable=True).tolist():
        if not dropped[i]:
            dropped[twins.get(i, [])] = True
    return (~dropped).nonzero()[:, 0]


def _overlapping_pairs(
    windows: list[tuple[int, int]], tile_hw: tuple[int, int]
) -> list[tuple[int, int]]:
    """Index pairs (a < b) of windows that share pixels."""
    starts = torch.tensor(windows).reshape(-1, 2)
    close = ((starts[:, None, :] - starts[None, :, :]).abs() < torch.tensor(tile_hw)).all(dim=2)
    first, second = torch.triu(close, diagonal=1).nonzero(as_tuple=True)
    return list(zip(first.tolist(), second.tolist(), strict=True))


def _twin_pairs(
    boxes: torch.Tensor, sides: torch.Tensor, first: torch.Tensor, second: torch.Tensor
) -> list[tuple[int, int]]:
    """Pairs (i, j), i from `first`, j from `second` (row indices), that are one object."""
    if not len(first) or not len(second):
        return []
    a, b = boxes[first, None, :], boxes[None, second, :]
    corner_min, corner_max = (
        torch.maximum(a[..., :2], b[..., :2]),
        torch.minimum(a[..., 2:], b[..., 2:]),
    )
    inter = (corner_max - corner_min).clamp(min=0).prod(dim=2)
    areas = sides.prod(dim=1)
    iou = inter / (areas[first, None] + areas[None, second] - inter).clamp(min=1e-12)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = (centres[first, None, :] - centres[None, second, :]).norm(dim=2)
    short = sides.min(dim=1).values
    smaller = torch.minimum(short[first, None], short[None, second])
    i, j = ((iou >= TWIN_IOU) | (distance < TWIN_CENTRE_SHARE * smaller)).nonzero(as_tuple=True)
    return list(zip(first[i].tolist(), second[j].tolist(), strict=True))
