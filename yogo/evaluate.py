"""`yogo test`: evaluate a checkpoint on a split; and the validation pass training uses.

    report = test(Path("run/best.pth"), Path("data.yml"), split="test", json_path=None)
    metrics, val_loss = evaluate_model(model, loader, device, class_names)

The report holds COCO-rule AP per class, mAP@0.5 and @0.5:0.95, precision/recall/F1 and counts
at `obj_thresh`, and a confusion matrix with background (yogo.metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from yogo.boxes import build_targets, cxcywh_to_xyxy, decode, postprocess
from yogo.checkpoint import load_checkpoint
from yogo.data.dataset import DetectionDataset
from yogo.data.loader import close_loaders, default_num_workers, make_loader
from yogo.data.verify import DatasetScan, require_trainable, scan_dataset
from yogo.ddf import DatasetDefinition
from yogo.dist import resolve_device
from yogo.errors import UserError, display_path
from yogo.loss import YOGOLoss
from yogo.metrics import DetectionMetrics
from yogo.model import YOGO

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
    anchors: torch.Tensor = model.anchors  # type: ignore[assignment]
    total_loss, images_seen = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            images = batch.images.to(device, non_blocking=True)
            labels = batch.labels.to(device, non_blocking=True)
            if len(images) == 0:
                continue
            raw = model(images)
            if loss_fn is not None:
                targets = build_targets(labels, len(images), tuple(raw.shape[2:]))
                total_loss += float(loss_fn(raw, targets, anchors)["loss"]) * len(images)
            decoded = decode(raw, anchors[0], anchors[1])
            detections = postprocess(decoded, AP_OBJECTNESS_FLOOR, iou_thresh)
            metrics.update(detections, _truths(labels, len(images)))
            images_seen += len(images)
    mean_loss = total_loss / images_seen if loss_fn is not None and images_seen else None
    return metrics, mean_loss


def _truths(labels: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Packed (N, 6) labels -> per image (M, 5) class, x0, y0, x1, y1."""
    per_image = []
    for i in range(batch_size):
        mine = labels[labels[:, 0] == i]
        per_image.append(torch.cat([mine[:, 1:2], cxcywh_to_xyxy(mine[:, 2:6])], dim=1))
    return per_image


def test(
    checkpoint_path: Path,
    ddf_path: Path,
    split: str = "test",
    obj_thresh: float = 0.5,
    iou_thresh: float = 0.5,
    batch_size: int = 16,
    device_name: str | None = None,
    bad_labels: str = "error",
    split_override: Sequence[float] | None = None,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a DDF: the report `yogo test` prints and writes."""
    if split not in ("train", "val", "test"):
        raise UserError(f"--split must be test, val or train, got '{split}'")
    checkpoint = load_checkpoint(checkpoint_path)
    info = checkpoint.info
    ddf = DatasetDefinition.from_yaml(ddf_path, split_override)
    if ddf.classes != info.class_names:
        raise UserError(
            f"the checkpoint's classes [{', '.join(info.class_names)}] differ from the DDF's "
            f"[{', '.join(ddf.classes)}]",
            path=ddf.path,
            fix="test with a DDF that lists the model's class_names in the same order",
        )
    if not ddf.splits[split]:
        raise UserError(
            f"the DDF has no {split} split (no test_paths and no {split} fraction)"
            if split == "test"
            else f"the {split} split of the DDF is empty",
            path=ddf.path,
            fix="add test_paths or a test fraction to dataset_split_fractions, or use "
            "--split val, or --dataset-split-override",
        )
    scan = scan_dataset(ddf, bad_labels)  # type: ignore[arg-type]
    _require_usable(scan, split)
    device = resolve_device(device_name)
    model = checkpoint.build_model().to(device)
    dataset = DetectionDataset(scan.splits[split], info.image_hw, info.channels)
    workers = default_num_workers() if num_workers is None else num_workers
    loader = make_loader(dataset, batch_size, False, workers, 0, device.type == "cuda")
    try:
        metrics, _ = evaluate_model(model, loader, device, info.class_names, obj_thresh, iou_thresh)
    finally:
        close_loaders()
    report = {
        "split": split,
        "checkpoint": str(checkpoint_path),
        "ddf": str(ddf.path),
        "iou_thresh": iou_thresh,
        **metrics.compute(),
    }
    return report


def _require_usable(scan: DatasetScan, split: str) -> None:
    """Under `--bad-labels error`, every problem stops the evaluation (as in training); the
    split under test must keep some samples (the train split may be empty)."""
    if scan.policy == "error" and scan.errors:
        require_trainable(scan)
    if not scan.splits[split]:
        raise UserError(f"no usable samples in the {split} split")


def format_test_report(report: dict[str, Any]) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"{report['split']}: {report['num_images']} images, {report['num_objects']} objects; "
        f"mAP@0.5 {fmt(report['mAP50'])}, mAP@0.5:0.95 {fmt(report['mAP50_95'])} "
        f"({display_path(report['checkpoint'])})",
    ]
    width = max(len("class"), *(len(n) for n in report["class_names"]))
    lines.append(
        f"{'class':<{width}}  {'AP50':>6} {'AP50:95':>7} {'prec':>6} {'recall':>6} {'f1':>6} "
        f"{'true':>6} {'pred':>6}"
    )
    for name, c in report["per_class"].items():
        lines.append(
            f"{name:<{width}}  {fmt(c['AP50']):>6} {fmt(c['AP50_95']):>7} "
            f"{fmt(c['precision']):>6} {fmt(c['recall']):>6} {fmt(c['f1']):>6} "
            f"{c['num_true']:>6} {c['num_pred']:>6}"
        )
    names = [*report["class_names"], "background"]
    cell = max(6, *(len(n) for n in names))
    lines.append(
        f"confusion matrix at objectness >= {report['obj_thresh']}, IoU 0.5 "
        "(rows true, columns predicted):"
    )
    lines.append(" " * (cell + 2) + " ".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"{name:>{cell}}  " + " ".join(f"{n:>{cell}}" for n in row))
    return "\n".join(lines)
