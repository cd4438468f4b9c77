"""Evaluating a model on a loader: the pass that validation in training and `yogo test` share.

    metrics, mean_loss = evaluate_model(model, loader, device, class_names, loss_fn=loss_fn)
    metrics, mean_loss = evaluate_sharded(ctx, model, loader, shard, class_names)  # all ranks
    report = metrics.compute()     # COCO-rule AP per class, P/R/F1, confusion matrix

Each rank of a distributed run evaluates its shard; `evaluate_sharded` gathers the per-image
results in dataset order, so the metrics equal a single-process evaluation of the split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from yogo.data.loader import ShardSampler
from yogo.dist import DistContext
from yogo.evaluation.metrics import DetectionMetrics
from yogo.log import progress
from yogo.model.boxes import cxcywh_to_xyxy, postprocess
from yogo.model.loss import YOGOLoss, forward_loss
from yogo.model.network import YOGO

# Detections below this objectness are not ranked for AP: they cannot change it measurably and
# an untrained model would otherwise rank every cell.
AP_OBJECTNESS_FLOOR = 0.01


def evaluate_model(
    model: YOGO,
    loader: torch.utils.data.DataLoader[Any],
    device: torch.device,
    class_names: Sequence[str],
    obj_thresh: float = 0.5,
    iou_thresh: float = 0.5,
    loss_fn: YOGOLoss | None = None,
) -> tuple[DetectionMetrics, float | None]:
    """Run `model` over `loader`; the metrics, and the mean loss per image when `loss_fn`."""
    model.eval()
    metrics = DetectionMetrics(class_names, obj_thresh)
    total_loss, images_seen = 0.0, 0
    with torch.no_grad():
        for batch in progress(loader, "evaluating", unit="batch"):
            images = batch.images.to(device, non_blocking=True)
            labels = batch.labels.to(device, non_blocking=True)
            if len(images) == 0:
                continue
            if loss_fn is None:
                raw = model(images)
            else:
                raw, parts = forward_loss(model, model, loss_fn, images, batch.labels)
                total_loss += float(parts["loss"]) * len(images)
            decoded = model.decode(raw)
            detections = postprocess(decoded, AP_OBJECTNESS_FLOOR, iou_thresh)
            metrics.update(detections, _truths(labels, len(images)))
            images_seen += len(images)
    mean_loss = total_loss / images_seen if loss_fn is not None and images_seen else None
    return metrics, mean_loss


def evaluate_detector(
    detect: Callable[[np.ndarray], list[torch.Tensor]],
    loader: torch.utils.data.DataLoader[Any],
    class_names: Sequence[str],
) -> DetectionMetrics:
    """The metrics of `detect` (uint8 (B, C, H, W) frames -> per frame (N, 7) detections, as
    `yogo.model.boxes.postprocess` gives them, down to AP_OBJECTNESS_FLOOR) over `loader`:
    how `yogo test` evaluates a predictor, an ensemble or test-time flips."""
    metrics = DetectionMetrics(class_names, 0.5)
    for batch in progress(loader, "evaluating", unit="batch"):
        if len(batch.images):
            found = detect(batch.images.numpy())
            metrics.update(found, _truths(batch.labels, len(batch.images)))
    return metrics


def _truths(labels: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Packed (N, 6) labels -> per image (M, 5) class, x0, y0, x1, y1."""
    per_image = []
    for i in range(batch_size):
        mine = labels[labels[:, 0] == i]
        per_image.append(torch.cat([mine[:, 1:2], cxcywh_to_xyxy(mine[:, 2:6])], dim=1))
    return per_image


def evaluate_sharded(
    ctx: DistContext,
    model: YOGO,
    loader: torch.utils.data.DataLoader[Any],
    shard: ShardSampler,
    class_names: Sequence[str],
    obj_thresh: float = 0.5,
    iou_thresh: float = 0.5,
    loss_fn: YOGOLoss | None = None,
) -> tuple[DetectionMetrics, float | None]:
    """`evaluate_model` on this rank's shard (`loader` draws from `shard`), gathered from
    every rank and put back in dataset order; the same result on every rank."""
    local, mean_loss = evaluate_model(
        model, loader, ctx.device, class_names, obj_thresh, iou_thresh, loss_fn
    )
    loss_sum = (mean_loss or 0.0) * len(local.images)
    parts = ctx.gather((shard.indices, local.images, loss_sum))
    merged = DetectionMetrics(class_names, obj_thresh)
    ordered = sorted(
        (
            (i, image)
            for indices, images, _ in parts
            for i, image in zip(indices, images, strict=True)
        ),
        key=lambda pair: pair[0],
    )
    merged.images = [image for _, image in ordered]
    total = sum(loss for _, _, loss in parts)
    mean = total / len(merged.images) if merged.images and loss_fn is not None else None
    return merged, mean
