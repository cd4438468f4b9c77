"""Box arithmetic shared by train, test, export and infer: decoding, formats, grid targets,
NMS. Pure tensor functions (torch, and torchvision's compiled NMS kernel, loaded when first used
without importing the torchvision package: `nms`).

    decoded = decode(raw, anchor_w, anchor_h)          # (B, 5 + C, Sy, Sx)
    targets = build_targets(labels, batch_size, (Sy, Sx))  # (B, Sy, Sx, 6)
    detections = postprocess(decoded, obj_thresh=0.5, iou_thresh=0.5)  # list of (N, 7)

Coordinates are normalised to the image (0..1). `cxcywh` is centre x, centre y, width, height;
`xyxy` is left, top, right, bottom.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from yogo.model.grid import assign_cells, claim_neighbour_cells

# exp() input limit when decoding widths and heights (YOGO 1.0.1 used the same).
EXP_CLAMP = 80.0


def decode(
    raw: torch.Tensor,
    anchor_w: torch.Tensor | float,
    anchor_h: torch.Tensor | float,
    neighbour_cells: bool = False,
) -> torch.Tensor:
    """Raw network output (B, 5 + C, Sy, Sx) -> decoded (B, 5 + C, Sy, Sx).

    Channels out: xc = (i + r * sigmoid(tx) - (r - 1) / 2) / Sx, yc likewise with j and Sy,
    where r is the centre's reach in cells: 1 (the centre lies in its cell, YOGO 1.0.1's
    decoding) or, for a model trained with `neighbour_cells`, 2 (up to half a cell beyond it,
    so neighbour cells can predict an object too),
    w = anchor_w * exp(tw), h = anchor_h * exp(th) (exp input clamped at 80),
    objectness = sigmoid(to), class probabilities = softmax over the C class channels.
    """
    _, _, rows, cols = raw.shape
    raw = raw.float()
    col = torch.arange(cols, device=raw.device, dtype=raw.dtype).view(1, 1, cols)
    row = torch.arange(rows, device=raw.device, dtype=raw.dtype).view(1, rows, 1)
    xc, yc, w, h = decode_boxes(
        raw[:, :4].movedim(1, -1), col, row, (rows, cols), anchor_w, anchor_h, neighbour_cells
    ).unbind(-1)
    objectness = torch.sigmoid(raw[:, 4])
    classes = torch.softmax(raw[:, 5:], dim=1)
    return torch.cat([torch.stack([xc, yc, w, h, objectness], dim=1), classes], dim=1)


def decode_boxes(
    raw_box: torch.Tensor,
    col: torch.Tensor,
    row: torch.Tensor,
    grid: tuple[int, int],
    anchor_w: torch.Tensor | float,
    anchor_h: torch.Tensor | float,
    neighbour_cells: bool = False,
) -> torch.Tensor:
    """Raw (..., 4) tx, ty, tw, th at cells (row, col) of a (rows, cols) grid -> (..., 4)
    xc, yc, w, h (see `decode`). `col` and `row` broadcast against raw_box[..., 0]."""
    rows, cols = grid
    reach = 2.0 if neighbour_cells else 1.0
    start = (reach - 1) / 2
    xc = (col + reach * torch.sigmoid(raw_box[..., 0]) - start) / cols
    yc = (row + reach * torch.sigmoid(raw_box[..., 1]) - start) / rows
    w = anchor_w * torch.exp(raw_box[..., 2].clamp(max=EXP_CLAMP))
    h = anchor_h * torch.exp(raw_box[..., 3].clamp(max=EXP_CLAMP))
    return torch.stack([xc, yc, w, h], dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size -> (..., 4) corners."""
    xc, yc, w, h = boxes.unbind(-1)
    return torch.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], dim=-1)


def paired_iou(
    pred_cxcywh: torch.Tensor, target_cxcywh: torch.Tensor, eps: float = 1e-7
) -> torch.Tensor:
    """IoU (N,) between matching rows of two (N, 4) centre/size box sets."""
    px, py, pw, ph = pred_cxcywh.unbind(-1)
    tx, ty, tw, th = target_cxcywh.unbind(-1)
    left, right = torch.max(px - pw / 2, tx - tw / 2), torch.min(px + pw / 2, tx + tw / 2)
    top, bottom = torch.max(py - ph / 2, ty - th / 2), torch.min(py + ph / 2, ty + th / 2)
    inter = (right - left).clamp(min=0) * (bottom - top).clamp(min=0)
    return inter / (pw * ph + tw * th - inter + eps)


def complete_iou_loss(
    pred_cxcywh: torch.Tensor, target_cxcywh: torch.Tensor, eps: float = 1e-7
) -> torch.Tensor:
    """Complete-IoU loss (N,) between matching rows of two (N, 4) box sets (Zheng et al.,
    2020): 1 - IoU, plus the squared centre distance over the squared diagonal of the
    enclosing box, plus alpha * v, where v measures the difference in aspect ratio and
    alpha = v / (1 - IoU + v) is held constant in the gradient (as torchvision does)."""
    px, py, pw, ph = pred_cxcywh.unbind(-1)
    tx, ty, tw, th = target_cxcywh.unbind(-1)
    iou = paired_iou(pred_cxcywh, target_cxcywh, eps)
    enclosing_w = torch.max(px + pw / 2, tx + tw / 2) - torch.min(px - pw / 2, tx - tw / 2)
    enclosing_h = torch.max(py + ph / 2, ty + th / 2) - torch.min(py - ph / 2, ty - th / 2)
    distance = ((px - tx) ** 2 + (py - ty) ** 2) / (enclosing_w**2 + enclosing_h**2 + eps)
    v = (4 / math.pi**2) * (torch.atan(tw / th) - torch.atan(pw / ph)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return 1 - iou + distance + alpha * v


def build_targets(
    labels: torch.Tensor,
    batch_size: int,
    grid: tuple[int, int],
    device: torch.device | str | None = None,
    neighbour_cells: bool = False,
) -> torch.Tensor:
    """Grid targets for a batch, vectorised, on `device` (default: the labels' device).

    `labels` (N, 6): image index in the batch, class, xc, yc, w, h; pass them on the CPU (as
    the loader gives them): the cell assignment runs there. Returns (B, Sy, Sx, 6): has-object
    mask, xc, yc, w, h, class; one object per cell (`yogo.model.grid.assign_cells`, the rule `yogo
    check` reports collisions with). With `neighbour_cells` (the model's: `decode` then lets
    centres reach beyond their cell) objects two or more cells wide also claim the free
    neighbour cells their box covers (`grid.claim_neighbour_cells`).
    """
    rows, cols = grid
    device = labels.device if device is None else device
    target = torch.zeros(batch_size * rows * cols, 6, device=device)
    if len(labels):
        image, xc, yc, w, h = labels[:, [0, 2, 3, 4, 5]].cpu().numpy().T
        cell, keep = assign_cells(image, xc, yc, grid)
        owner = np.flatnonzero(keep)
        cell = cell[keep]
        if neighbour_cells:
            extra_cell, extra_owner = claim_neighbour_cells(image, xc, yc, w, h, grid, cell)
            cell = np.concatenate([cell, extra_cell])
            owner = np.concatenate([owner, extra_owner])
        kept = labels[torch.from_numpy(owner).to(labels.device)].to(device)
        cells = torch.from_numpy(cell).to(device)
        target[cells, 0] = 1.0
        target[cells, 1:5] = kept[:, 2:6]
        target[cells, 5] = kept[:, 1]
    return target.view(batch_size, rows, cols, 6)


def postprocess(
    decoded: torch.Tensor,
    obj_thresh: float | Sequence[float] = 0.5,
    iou_thresh: float = 0.5,
    min_class_confidence: float = 0.0,
    class_probs: bool = False,
) -> list[torch.Tensor]:
    """Decoded output (B, 5 + C, Sy, Sx) -> per image (N, 7) detections after class-agnostic
    NMS, highest objectness first: x0, y0, x1, y1 (normalised), objectness, class
    probability, class index (and with `class_probs`, the C class probabilities: (N, 7 + C)).
    `obj_thresh` is one objectness threshold or one per class: NMS runs on the candidates at
    or above the lowest, then each detection must reach its class's (what `yogo test`'s
    metrics do, so test and infer count the same)."""
    batch = decoded.shape[0]
    flat = decoded.flatten(2).transpose(1, 2)  # (B, Sy*Sx, 5 + C)
    class_prob, class_index = flat[..., 5:].max(dim=-1)
    thresholds = torch.as_tensor(obj_thresh, dtype=flat.dtype, device=flat.device).reshape(-1)
    keep = (flat[..., 4] >= thresholds.min()) & (class_prob >= min_class_confidence)
    image, cell = keep.nonzero(as_tuple=True)  # image-major: each image's candidates together
    boxes = cxcywh_to_xyxy(flat[image, cell, :4])
    objectness = flat[image, cell, 4]
    # NMS per image (boxes of different images never suppress each other), each over its own
    # candidates only: one call over all of them would compare every pair across images too.
    per_image = torch.bincount(image, minlength=batch).tolist()
    starts = [0, *itertools.accumulate(per_image)][:-1]
    kept = torch.cat(
        [
            start + nms(b, o, iou_thresh)
            for start, b, o in zip(
                starts,
                torch.split(boxes, per_image),
                torch.split(objectness, per_image),
                strict=True,
            )
        ]
    )
    if len(thresholds) > 1:
        own = thresholds[class_index[image[kept], cell[kept]]]
        kept = kept[objectness[kept] >= own]
    rows = torch.cat(
        [
            boxes[kept],
            objectness[kept, None],
            class_prob[image[kept], cell[kept], None],
            class_index[image[kept], cell[kept], None].float(),
            *([flat[image[kept], cell[kept], 5:]] if class_probs else []),
        ],
        dim=1,
    )
    return list(torch.split(rows, torch.bincount(image[kept], minlength=batch).tolist()))


def nms(boxes_xyxy: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """torchvision.ops.nms: indices of the boxes (N, 4) kept, highest score first. Its compiled
    kernel is loaded alone the first time: importing the torchvision package (its models,
    datasets and transforms) costs seconds of every `yogo infer` run's start-up, the kernel
    milliseconds."""
    if not hasattr(torch.ops.torchvision, "nms"):
        _load_torchvision_ops()
    kept: torch.Tensor = torch.ops.torchvision.nms(boxes_xyxy, scores, iou_thresh)
    return kept


def _load_torchvision_ops() -> None:
    """Register torchvision's operators (torch.ops.torchvision.*) from its compiled library,
    as `torchvision.extension` does on import."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("yogo needs torchvision for NMS: pip install torchvision")
    folder = Path(next(iter(spec.submodule_search_locations)))
    libraries = sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd"))
    if libraries:
        torch.ops.load_library(str(libraries[0]))  # type: ignore[no-untyped-call]
    else:  # a build that names its library otherwise: torchvision finds it itself
        import torchvision.extension  # noqa: F401
