"""The training loss: objectness + box + class terms, returned by name (docs/training.md).

    loss_fn = YOGOLoss(LossSettings(no_obj_weight=0.5, iou_weight=5.0, classify_weight=1.0))
    parts = loss_fn(raw, targets, anchors)   # {"loss", "objectness", "box", "class"}
    raw, parts = forward_loss(net, model, loss_fn, images, labels)   # the step, from a batch

Objectness: squared error of sigmoid(to) against the cell mask (YOGO 1.0.1's, the default), or
binary cross-entropy on the logit (`obj_loss="bce"`). Empty cells weigh `no_obj_weight`;
object cells weigh the square root of their class weight when it is above 1 (else 1): the full
weight over-called the rare class and cost the smear set's rare classes. Without it, a rare class
whose objects span several grid cells (a white cell at twice a red cell's diameter) was never
found: its centre cells sat among their own neighbour cells, all negatives with the same look,
objectness was pushed to ~0 early, and the squared error's gradient, 2(s-1)s(1-s) with
s = sigmoid(to), vanishes there, while the class head was sure of the class (docs/design.md).
Box: `iou_weight` x complete-IoU loss on object cells, weighted like their objectness (a rare
large class's boxes were loose: test AP@0.5:0.95 0.60 unweighted, 0.85 weighted).
Class: `classify_weight` x cross-entropy with label smoothing (and class weights) on object
cells. Each term is summed and divided by the batch size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from yogo.model.boxes import build_targets, complete_iou_loss, decode_boxes, paired_iou
from yogo.model.network import YOGO


@dataclass(frozen=True)
class LossSettings:
    no_obj_weight: float = 0.5
    iou_weight: float = 5.0
    classify_weight: float = 1.0
    label_smoothing: float = 0.01
    class_weights: torch.Tensor | None = None  # (C,), or None for equal weights
    obj_loss: str = "mse"  # mse (YOGO 1.0.1's), or bce
    obj_target: str = "one"  # an object cell's objectness target: 1 (YOGO's), or its box's IoU


class YOGOLoss(torch.nn.Module):
    def __init__(self, settings: LossSettings) -> None:
        super().__init__()
        self.settings = settings

    def forward(
        self,
        raw: torch.Tensor,
        targets: torch.Tensor,
        anchors: torch.Tensor,
        neighbour_cells: bool = False,
    ) -> dict[str, torch.Tensor]:
        """`raw` (B, 5 + C, Sy, Sx) network output; `targets` (B, Sy, Sx, 6) from
        `boxes.build_targets`; `anchors` (2,) normalised w, h; `neighbour_cells` the
        model's (`boxes.decode`)."""
        s = self.settings
        batch, _, rows, cols = raw.shape
        pred = raw.float().permute(0, 2, 3, 1)  # (B, Sy, Sx, 5 + C)
        mask = targets[..., 0]
        positive = mask  # object cells weigh sqrt(their class weight), at least 1
        if s.class_weights is not None:
            boost = s.class_weights.to(raw.device).clamp(min=1.0).sqrt()
            positive = mask * boost[targets[..., 5].long()]
        weight = positive + s.no_obj_weight * (1 - mask)
        image, row, col = mask.nonzero(as_tuple=True)
        cells = pred[image, row, col]  # (M, 5 + C)
        truth = targets[image, row, col]  # (M, 6)
        boxes = decode_boxes(
            cells[:, :4], col, row, (rows, cols), anchors[0], anchors[1], neighbour_cells
        )
        target = mask
        if s.obj_target == "iou":  # an object cell's target: how well its box fits
            target = mask.clone()
            target[image, row, col] = paired_iou(boxes.detach(), truth[:, 1:5]).clamp(0, 1)
        if s.obj_loss == "mse":
            per_cell = weight * (torch.sigmoid(pred[..., 4]) - target) ** 2
        else:
            per_cell = F.binary_cross_entropy_with_logits(
                pred[..., 4], target, weight=weight, reduction="none"
            )
        per_image = per_cell.detach().sum(dim=(1, 2))
        objectness = per_cell.sum() / batch
        if len(cells):
            box_loss = complete_iou_loss(boxes, truth[:, 1:5]) * positive[image, row, col]
            weights = s.class_weights.to(raw.device) if s.class_weights is not None else None
            class_loss = F.cross_entropy(
                cells[:, 5:],
                truth[:, 5].long(),
                weight=weights,
                label_smoothing=s.label_smoothing,
                reduction="none",
            )
            box = s.iou_weight * box_loss.sum() / batch
            class_term = s.classify_weight * class_loss.sum() / batch
            terms = s.iou_weight * box_loss + s.classify_weight * class_loss
            per_image = per_image.index_add(0, image, terms.detach())
        else:
            box = class_term = pred.sum() * 0.0  # keeps the graph (and DDP) whole
        return {
            "loss": objectness + box + class_term,
            "objectness": objectness,
            "box": box,
            "class": class_term,
            "per_image": per_image,  # (B,) each image's loss, detached (--hard-frames)
        }


def forward_loss(
    net: torch.nn.Module,
    model: YOGO,
    loss_fn: YOGOLoss,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The one forward step: `net` (the model, or its DDP or compiled wrapper) on `images`
    (B, C, H, W) under `autocast`, and `loss_fn`'s parts against `labels` (N, 6) image index,
    class, xc, yc, w, h (on the CPU, as the loader packs them). Training steps on it, lr-find
    measures it and validation reports it. Returns the raw output too (validation decodes it)."""
    config = model.config
    targets = build_targets(labels, len(images), config.grid, images.device, config.neighbour_cells)
    with autocast():
        raw = net(images)
    return raw, loss_fn(raw, targets, model.anchors, config.neighbour_cells)
