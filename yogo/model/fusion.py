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
from yogo.model.boxes import postprocess

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
    channels) must agree on each; a UserError names the first that does not."""
    what = ("class names", "image size (H, W)", "channels")
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

    "wbf": boxes are clustered class-agnostically, highest objectness first, each joining the
    cluster whose fused box it overlaps most if that IoU exceeds `iou_thresh`. A cluster's box
    and class probabilities are their objectness-weighted means; its objectness is the mean
    objectness times min(T, M) / M for T boxes, so an object only some views found scores
    lower. "nms": class-agnostic NMS over every view's boxes (the most confident box wins,
    the others' evidence is dropped)."""
    if not views:
        raise ValueError("fuse_detections needs at least one view")
    rows = torch.cat(list(views)).double()
    if method == "nms":
        from torchvision.ops import nms

        return rows[nms(rows[:, :4], rows[:, 4], iou_thresh)].float()
    if len(rows) == 0:
        return rows.float()
    found = rows.numpy()
    found = found[np.argsort(-found[:, 4], kind="stable")]
    boxes, objectness, probabilities = found[:, :4], found[:, 4], found[:, 7:]
    weights = np.maximum(objectness, 1e-9)  # an objectness of 0 still has a box
    cluster = _clusters(boxes, weights, iou_thresh)
    k = int(cluster.max()) + 1
    weight = np.bincount(cluster, weights, minlength=k)
    size = np.bincount(cluster, minlength=k)
    box_sum = np.zeros((k, 4))
    np.add.at(box_sum, cluster, boxes * weights[:, None])
    prob_sum = np.zeros((k, probabilities.shape[1]))
    np.add.at(prob_sum, cluster, probabilities * weights[:, None])
    views_count = len(views)
    mean_objectness = np.bincount(cluster, objectness, minlength=k) / size
    fused_objectness = mean_objectness * np.minimum(size, views_count) / views_count
    fused_probabilities = prob_sum / weight[:, None]
    fused = np.concatenate(
        [
            box_sum / weight[:, None],
            fused_objectness[:, None],
            fused_probabilities.max(axis=1, keepdims=True),
            fused_probabilities.argmax(axis=1)[:, None].astype(np.float64),
            fused_probabilities,
        ],
        axis=1,
    )
    return torch.from_numpy(fused[np.argsort(-fused_objectness, kind="stable")]).float()


def _clusters(boxes: np.ndarray, weights: np.ndarray, iou_thresh: float) -> np.ndarray:
    """The cluster of each box (sorted by weight, highest first): WBF's matching against the
    running weighted mean box of each cluster."""
    n = len(boxes)
    cluster = np.empty(n, dtype=np.int64)
    fused = np.empty((n, 4))
    box_sum = np.zeros((n, 4))
    weight = np.zeros(n)
    k = 0
    for i in range(n):
        box = boxes[i]
        j = k
        if k:
            candidates = fused[:k]
            left = np.maximum(candidates[:, 0], box[0])
            top = np.maximum(candidates[:, 1], box[1])
            right = np.minimum(candidates[:, 2], box[2])
            bottom = np.minimum(candidates[:, 3], box[3])
            inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
            areas = (candidates[:, 2] - candidates[:, 0]) * (candidates[:, 3] - candidates[:, 1])
            own = (box[2] - box[0]) * (box[3] - box[1])
            iou = inter / np.maximum(areas + own - inter, 1e-12)
            best = int(iou.argmax())
            if iou[best] > iou_thresh:
                j = best
        if j == k:
            k += 1
        cluster[i] = j
        box_sum[j] += box * weights[i]
        weight[j] += weights[i]
        fused[j] = box_sum[j] / weight[j]
    return cluster
