"""Several models and test-time flips against each model alone, in one run: what `yogo test
--model ... --tta` and `yogo infer --model ... --tta` buy and cost.

    python benchmarks/ensemble_quality.py DDF RUN1/best.pth RUN2/best.pth RUN3/best.pth

For each model alone, each with flips (--tta), the ensemble fused by weighted box fusion and by
plain NMS, and the ensemble with flips: mAP@0.5, AP@0.5 and count error per class (at the first
model's thresholds, as `yogo infer` counts) on DDF's --split, and the time per frame of the
detections (the model passes, post-processing and fusion; --timing-frames frames at batch 8,
the configurations taking turns round after round, each keeping its best round: the VM's speed
drifts). Prints Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from yogo.data.dataset import DetectionDataset
from yogo.data.scan import scan_dataset
from yogo.ddf import DatasetDefinition
from yogo.deploy.ensemble import load_ensemble
from yogo.deploy.predictor import Predictor
from yogo.evaluation.evaluate import AP_OBJECTNESS_FLOOR
from yogo.evaluation.metrics import DetectionMetrics
from yogo.model.boxes import cxcywh_to_xyxy
from yogo.model.fusion import Fusion


def frames_and_truths(ddf: Path, split: str, model: Predictor) -> tuple[np.ndarray, list]:
    samples = scan_dataset(DatasetDefinition.from_yaml(ddf)).splits[split]
    dataset = DetectionDataset(samples, model.image_hw, model.channels)
    images, truths = [], []
    for i in range(len(dataset)):
        image, boxes = dataset[i]
        images.append(image.numpy())
        truths.append(torch.cat([boxes[:, :1], cxcywh_to_xyxy(boxes[:, 1:5])], dim=1))
    return np.stack(images), truths


def detect_all(model: Predictor, images: np.ndarray, thresholds: object) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for start in range(0, len(images), 8):
        found += model.detect(images[start : start + 8], thresholds)  # type: ignore[arg-type]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ddf", type=Path)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--split", default="test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timing-frames", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    paths = args.checkpoints
    configs: list[tuple[str, list[Path], bool, Fusion]] = []
    for path in paths:
        name = f"{path.parent.name}/{path.stem}"
        configs += [(name, [path], False, "wbf"), (f"{name} + flips", [path], True, "wbf")]
    configs += [
        (f"ensemble of {len(paths)}, WBF", paths, False, "wbf"),
        (f"ensemble of {len(paths)}, NMS", paths, False, "nms"),
        (f"{paths[0].parent.name}/{paths[0].stem} + flips, NMS", paths[:1], True, "nms"),
        (f"ensemble of {len(paths)} + flips, WBF", paths, True, "wbf"),
    ]
    models = {label: load_ensemble(p, "cpu", tta=t, fusion=f) for label, p, t, f in configs}
    first = next(iter(models.values()))
    names = first.class_names
    images, truths = frames_and_truths(args.ddf, args.split, first)
    counted = np.bincount(torch.cat(truths)[:, 0].long().numpy(), minlength=len(names))
    print(f"{len(images)} frames of {args.ddf} ({args.split}); objects per class: "
          + ", ".join(f"{n} {c}" for n, c in zip(names, counted, strict=True)))  # fmt: skip
    results = {}
    for label, model in models.items():
        metrics = DetectionMetrics(names, 0.5)
        metrics.update(detect_all(model, images, AP_OBJECTNESS_FLOOR), truths)
        metrics.thresholds = np.asarray(model.counting.thresholds)
        results[label] = metrics.compute()
    timed = images[: args.timing_frames]
    best = dict.fromkeys(models, float("inf"))
    for _ in range(args.rounds):
        for label, model in models.items():
            start = time.perf_counter()
            detect_all(model, timed, model.counting.thresholds)
            best[label] = min(best[label], (time.perf_counter() - start) / len(timed))
    header = " | ".join(f"AP {n}" for n in names) + " | " + " | ".join(f"count {n}" for n in names)
    print(f"\n| | mAP@0.5 | {header} | ms/frame |")
    print("|---" * (3 + 2 * len(names)) + "|")
    for label, report in results.items():
        per = report["per_class"]
        ap = " | ".join(f"{per[n]['AP50']:.3f}" for n in names)
        error = " | ".join(f"{per[n]['count_error']:+.1%}" for n in names)
        print(f"| {label} | {report['mAP50']:.3f} | {ap} | {error} | {best[label] * 1e3:.1f} |")


if __name__ == "__main__":
    main()
