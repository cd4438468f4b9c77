"""What `yogo export` measures before it keeps a file: the exported model and PyTorch on the
same labelled frames (the test split, or `--verify-split`), at the model's thresholds:
mAP@0.5, AP@0.5 per class and the count per class. A file whose mAP@0.5 drops by more than
`--max-map-drop`, or whose count of any class moves by more than 2% (and more than one
object), is refused unless `--force-accuracy`.

    frames, truths = labelled_frames(Path("data.yml"), "test", model_config)
    accuracy = compare_accuracy(pytorch, exported, frames, truths, iou_thresh=0.5)
    accuracy.problems(max_map_drop=0.01)     # [] when the file may be kept
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yogo.data.dataset import DetectionDataset
from yogo.data.scan import scan_dataset
from yogo.ddf import DatasetDefinition
from yogo.deploy.predictor import Predictor
from yogo.evaluation.evaluate import AP_OBJECTNESS_FLOOR
from yogo.evaluation.metrics import DetectionMetrics
from yogo.model.boxes import cxcywh_to_xyxy, postprocess
from yogo.model.network import ModelConfig

MAX_COUNT_SHIFT = 0.02


def labelled_frames(
    ddf: Path, split: str, config: ModelConfig, limit: int | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """A split's frames at the model's size, uint8 (N, C, H, W), and their labels per frame
    (M, 5) class, x0, y0, x1, y1; the first `limit` of them (evenly spread) with `limit`."""
    definition = DatasetDefinition.from_yaml(ddf)
    samples = scan_dataset(definition, "drop").splits[split]
    if limit is not None and len(samples) > limit:
        picks = np.linspace(0, len(samples) - 1, limit).round().astype(int)
        samples = tuple(samples[i] for i in picks)
    dataset = DetectionDataset(
        samples, config.image_hw, config.channels, bit_depth=config.bit_depth
    )
    frames = (
        np.stack([dataset.frame(i).numpy() for i in range(len(dataset))])
        if samples
        else (
            np.zeros(
                (0, config.channels, *config.image_hw),
                np.uint16 if config.bit_depth == 16 else np.uint8,
            )
        )
    )
    truths = []
    for sample in samples:
        boxes = torch.from_numpy(sample.boxes.astype(np.float32))
        truths.append(torch.cat([boxes[:, :1], cxcywh_to_xyxy(boxes[:, 1:5])], 1).numpy())
    return frames, truths


def measure(
    predictor: Predictor,
    frames: np.ndarray,
    truths: list[np.ndarray],
    iou_thresh: float,
    batch_size: int = 8,
) -> DetectionMetrics:
    """The predictor's detections on `frames`, ranked for AP, against `truths`, at its
    model's thresholds."""
    metrics = DetectionMetrics(predictor.class_names, predictor.counting.thresholds)
    for start in range(0, len(frames), batch_size):
        decoded = predictor.run(frames[start : start + batch_size])
        found = postprocess(decoded, AP_OBJECTNESS_FLOOR, iou_thresh)
        labels = [torch.from_numpy(t) for t in truths[start : start + batch_size]]
        metrics.update(found, labels)
    return metrics


@dataclass(frozen=True)
class Accuracy:
    """PyTorch's and the exported file's figures on the same frames."""

    frames: int
    pytorch: dict[str, Any]
    exported: dict[str, Any]

    @property
    def map_drop(self) -> float:
        return float((self.pytorch["mAP50"] or 0.0) - (self.exported["mAP50"] or 0.0))

    def count_shifts(self) -> dict[str, tuple[int, int]]:
        """Per class: PyTorch's count and the exported file's."""
        return {
            name: (c["num_pred"], self.exported["per_class"][name]["num_pred"])
            for name, c in self.pytorch["per_class"].items()
        }

    def problems(self, max_map_drop: float) -> list[str]:
        out = []
        if self.map_drop > max_map_drop:
            out.append(
                f"mAP@0.5 drops by {self.map_drop:.4f} ({self.pytorch['mAP50']:.4f} -> "
                f"{self.exported['mAP50']:.4f}), more than --max-map-drop {max_map_drop:g}"
            )
        for name, (before, after) in self.count_shifts().items():
            if abs(after - before) > max(1, MAX_COUNT_SHIFT * before):
                out.append(
                    f"the count of {name} moves from {before} to {after} "
                    f"({(after - before) / max(before, 1):+.1%}), more than 2%"
                )
        return out

    def table(self) -> str:
        """PyTorch's and the exported file's AP@0.5 and counts, class by class."""
        names = list(self.pytorch["per_class"])
        width = max(len("mAP@0.5"), *(len(n) for n in names))
        lines = [
            f"{'':<{width}}  {'AP@0.5 pytorch':>14} {'exported':>9}  {'count pytorch':>13} "
            f"{'exported':>9}"
        ]
        lines.append(
            f"{'mAP@0.5':<{width}}  {_f(self.pytorch['mAP50']):>14} {_f(self.exported['mAP50']):>9}"
        )
        for name in names:
            a, b = self.pytorch["per_class"][name], self.exported["per_class"][name]
            lines.append(
                f"{name:<{width}}  {_f(a['AP50']):>14} {_f(b['AP50']):>9}  "
                f"{a['num_pred']:>13} {b['num_pred']:>9}"
            )
        return "\n".join(lines)

    def to_plain(self) -> dict[str, Any]:
        def part(report: dict[str, Any]) -> dict[str, Any]:
            return {
                "mAP50": report["mAP50"],
                "per_class": {
                    n: {"AP50": c["AP50"], "count": c["num_pred"], "count_error": c["count_error"]}
                    for n, c in report["per_class"].items()
                },
            }

        return {
            "frames": self.frames,
            "pytorch": part(self.pytorch),
            "exported": part(self.exported),
            "map_drop": self.map_drop,
        }


def compare_accuracy(
    pytorch: Predictor,
    exported: Predictor,
    frames: np.ndarray,
    truths: list[np.ndarray],
    iou_thresh: float = 0.5,
) -> Accuracy:
    return Accuracy(
        len(frames),
        measure(pytorch, frames, truths, iou_thresh).compute(),
        measure(exported, frames, truths, iou_thresh).compute(),
    )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
