"""Fusing the detections of several views of a frame (several models, flipped frames) into one
set: weighted box fusion (Solovyev et al., 2019), or plain NMS over all of them.

    found = detect_views([run_a, run_b], frames, thresholds, flips=FLIPS)  # per frame (N, 7)
    fused = fuse_detections([rows_a, rows_b, rows_c], iou_thresh=0.5)   # (N, 7 + C)

Each view's rows are `postprocess(..., class_probs=True)`'s: x0, y0, x1, y1, objectness, class
probability, class index, then the C class probabilities. Why fusion and not NMS, with the
figures: docs/design.md "Ensembles and test-time flips".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from yogo.errors import UserError
from yogo.model.boxes import nms, postprocess

Fusion = Literal["wbf", "nms"]
Run = Callable[[np.ndarray], torch.Tensor]  # uint8 (B, C, H, W) -> decoded (B, 5 + C, Sy, Sx)

# Test-time flips: (left-right, top-bottom). Microscope frames have no up or left.
FLIPS = ((False, False), (True, False), (False, True), (True, True))
# Each view keeps its boxes down to this objectness: another view's evidence may lift them.
VIEW_FLOOR = 0.01


def detect_views(
    runs: Sequence[Run],
    images: np.ndarray,
    obj_thresh: float | Sequence[float],
    iou_thresh: float = 0.5,
    min_class_confidence: float = 0.0,
    class_probs: bool = False,
    flips: Sequence[tuple[bool, bool]] = FLIPS[:1],
    method: Fusion = "wbf",
) -> list[torch.Tensor]:
    """`postprocess`'s detections per frame (N, 7; with `class_probs` (N, 7 + C)) for several
    models (`runs`), each on every flip of the frames: each view post-processed on its own
    down to VIEW_FLOOR, its boxes flipped back, the views fused (`fuse_detections`), then the
    thresholds (one, or one per class) applied to the fused objectness. One run and no flip:
    plain `postprocess`."""
    if len(runs) == 1 and len(flips) == 1 and flips[0] == (False, False):
        return postprocess(
            runs[0](images), obj_thresh, iou_thresh, min_class_confidence, class_probs
        )
    thresholds = torch.as_tensor(obj_thresh, dtype=torch.float32).reshape(-1)
    floor = min(VIEW_FLOOR, float(thresholds.min()))
    views = []
    for run in runs:
        for horizontal, vertical in flips:
            decoded = run(_flipped(images, horizontal, vertical))
            found = postprocess(decoded, floor, iou_thresh, 0.0, class_probs=True)
            views.append([_flip_back(rows, horizontal, vertical) for rows in found])
    out = []
    for per_frame in zip(*views, strict=True):
        fused = fuse_detections(per_frame, iou_thresh, method)
        own = thresholds[fused[:, 6].long()] if len(thresholds) > 1 else thresholds
        keep = (fused[:, 4] >= own) & (fused[:, 5] >= min_class_confidence)
        out.append(fused[keep] if class_probs else fused[keep, :7])
    return out


def _flipped(images: np.ndarray, horizontal: bool, vertical: bool) -> np.ndarray:
    """(B, C, H, W) frames mirrored left-right and/or top-bottom."""
    if horizontal:
        images = images[..., ::-1]
    if vertical:
        images = images[..., ::-1, :]
    return np.ascontiguousarray(images)


def _flip_back(rows: torch.Tensor, horizontal: bool, vertical: bool) -> torch.Tensor:
    """Detections (N, 7 + C) found on a flipped frame, in the frame's own coordinates."""
    rows = rows.clone()
    if horizontal:
        rows[:, [0, 2]] = 1 - rows[:, [2, 0]]
    if vertical:
        rows[:, [1, 3]] = 1 - rows[:, [3, 1]]
    return rows


def require_matching(paths: Sequence[Path], described: Sequence[tuple[Any, ...]]) -> None:
    """Models run together (one `described` per path: class names, image size (H, W),
    channels, bit depth) must agree on each; a UserError names the first that does not."""
    what = ("class names", "image size (H, W)", "channels", "bit depth")
    for path, theirs in zip(paths[1:], described[1:], strict=True):
        for name, first, their in zip(what, described[0], theirs, strict=True):
            if first != their:
                raise UserError(
                    f"models run together must share their {name}: this one has {their}, "
                    f"{paths[0].name} has {first}",
                    path=path,
                    fix="combine models trained on the same classes and frame size",
                )


def fuse_detections(
    views: Sequence[torch.Tensor], iou_thresh: float = 0.5, method: Fusion = "wbf"
) -> torch.Tensor:
    """One frame's detections from `views` (M tensors (N_i, 7 + C)) -> (K, 7 + C), highest
    objectness first.

    "wbf": the boxes class-agnostic NMS keeps (over all views, by objectness) seed the
    clusters, and every box joins the seed it overlaps most. A cluster's box and class
    probabilities are its boxes' objectness-weighted means, its objectness their mean times
    min(T, M) / M for T boxes, so an object only some views found scores lower (the rules of
    weighted box fusion, which matches boxes one at a time against running means instead of
    seeds: the same clusters but at the margins, and a Python loop per box). "nms": the
    seeds alone (the most confident box wins, the other views' evidence is dropped)."""
    if not views:
        raise ValueError("fuse_detections needs at least one view")
    rows = torch.cat(list(views)).double()
    weights = rows[:, 4].clamp(min=1e-9)  # an objectness of 0 still has a box
    seeds = nms(rows[:, :4], weights, iou_thresh)
    if method == "nms" or len(rows) == 0:
        return rows[seeds].float()
    cluster = _nearest(rows[:, :4].float(), rows[seeds, :4].float())
    cluster[seeds] = torch.arange(len(seeds))

    def per_cluster(values: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(len(seeds), *values.shape[1:], dtype=values.dtype)
        return total.index_add_(0, cluster, values)

    size = per_cluster(torch.ones_like(weights))
    objectness = per_cluster(rows[:, 4]) / size * size.clamp(max=len(views)) / len(views)
    weighted = torch.cat([rows[:, :4], rows[:, 7:]], dim=1) * weights[:, None]
    means = per_cluster(weighted) / per_cluster(weights)[:, None]
    probabilities = means[:, 4:]
    class_prob, class_index = probabilities.max(dim=1)
    fused = torch.cat(
        [
            means[:, :4],
            objectness[:, None],
            class_prob[:, None],
            class_index[:, None],
            probabilities,
        ],
        dim=1,
    )
    return fused[objectness.argsort(descending=True, stable=True)].float()


def _nearest(boxes: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """For each of `boxes` (N, 4 xyxy), the index of the seed box (K, 4) it overlaps most.
    Only seeds whose left edge lies within one seed width left of the box's and before its
    right edge can overlap it: with seeds sorted by left edge, those are a run found by
    binary search, so N x (seeds per run) IoUs are computed instead of N x K."""
    order = seeds[:, 0].argsort()
    seeds = seeds[order]
    widest = float((seeds[:, 2] - seeds[:, 0]).max())
    start = torch.searchsorted(seeds[:, 0].contiguous(), (boxes[:, 0] - widest).contiguous())
    stop = torch.searchsorted(seeds[:, 0].contiguous(), boxes[:, 2].contiguous(), right=True)
    span = int((stop - start).max().clamp(min=1))
    index = start[:, None] + torch.arange(span)
    inside = index < stop[:, None]
    near = seeds[index.clamp(max=len(seeds) - 1)]  # (N, span, 4)
    box = boxes[:, None]
    width = torch.minimum(box[..., 2], near[..., 2]) - torch.maximum(box[..., 0], near[..., 0])
    height = torch.minimum(box[..., 3], near[..., 3]) - torch.maximum(box[..., 1], near[..., 1])
    inter = width.clamp(min=0) * height.clamp(min=0)
    area = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
    near_area = (near[..., 2] - near[..., 0]) * (near[..., 3] - near[..., 1])
    iou = inter / (area + near_area - inter).clamp(min=1e-12)
    best = iou.masked_fill(~inside, -1.0).argmax(dim=1)
    return order[index.gather(1, best[:, None]).squeeze(1)]
