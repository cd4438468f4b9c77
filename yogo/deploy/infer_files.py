"""The files `yogo infer` writes, one function per format: the predictions.json record of a
frame, YOLO label files with a confidence column, YOGO 1.0.1's .npy array, drawings and frames.

    write_yolo(Path("labels/a.txt"), rows)      # rows: (N, 7 + C) of yogo.model.boxes.postprocess
    draw(pixels, Path("boxes/a.png"), rows, class_names)

Rows are x0, y0, x1, y1 (normalised), objectness, class probability, class index, then the
class probabilities: what `yogo.model.boxes.postprocess(..., class_probs=True)` returns.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.outputs import write_atomic


@dataclass
class Found:
    """A frame's detections: (N, 7 + C) rows of yogo.model.boxes.postprocess with class
    probabilities, and its original size."""

    index: int
    rows: np.ndarray
    height_width: tuple[int, int]
    per_class: np.ndarray  # (C,) detections of each class (outside the heatmap mask, if any)
    masked: np.ndarray | None = None  # (N,) bool: in the heatmap mask (counted apart)

    def masked_per_class(self) -> np.ndarray:
        """(C,) the detections of each class inside the heatmap mask."""
        flags = np.zeros(len(self.rows), bool) if self.masked is None else self.masked
        return np.bincount(self.rows[flags, 6].astype(np.int64), minlength=len(self.per_class))


def write_npy(path: Path, found: list[Found], num_classes: int) -> None:
    """YOGO 1.0.1's `--save-npy` array: float32 (8 + C, N), one column per detection of the
    run: frame index, x0, y0, x1, y1 in pixels of the frame, objectness, class, its
    probability, then every class probability. Unlike YOGO's, thresholds and NMS apply."""
    columns = [np.zeros((8 + num_classes, 0), np.float32)]
    for f in found:
        height, width = f.height_width
        r = f.rows
        columns.append(
            np.stack(
                [
                    np.full(len(r), f.index),
                    r[:, 0] * width,
                    r[:, 1] * height,
                    r[:, 2] * width,
                    r[:, 3] * height,
                    r[:, 4],
                    r[:, 6],
                    r[:, 5],
                    *r[:, 7:].T,
                ]
            ).astype(np.float32)
        )
    encoded = io.BytesIO()
    np.save(encoded, np.concatenate(columns, axis=1))
    write_atomic(path, encoded.getvalue())


def record(
    name: str,
    original_hw: tuple[int, int],
    rows: np.ndarray,
    names: Sequence[str],
    calibrated: np.ndarray,
    in_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    x0, y0, x1, y1, objectness, class_prob, classes = rows[:, :7].T
    columns = (
        np.stack(
            [
                objectness * class_prob,
                calibrated,
                objectness,
                class_prob,
                x0,
                y0,
                x1,
                y1,
                (x0 + x1) / 2,
                (y0 + y1) / 2,
                x1 - x0,
                y1 - y0,
            ]
        )
        .T.round(6)
        .tolist()
    )  # one conversion for the whole image: frames hold thousands
    detections = [
        {
            "class": cls,
            "class_name": names[cls],
            "confidence": v[0],
            "calibrated_confidence": v[1],
            "objectness": v[2],
            "class_probability": v[3],
            "xyxy": v[4:8],
            "cxcywh": v[8:12],
        }
        for cls, v in zip(classes.astype(np.int64).tolist(), columns, strict=True)
    ]
    if in_mask is not None:  # --heatmap-mask: where stuck objects sit, counted apart
        for detection, flag in zip(detections, in_mask.tolist(), strict=True):
            detection["masked"] = flag
    height, width = original_hw
    return {
        "image": name,
        "height": int(height),
        "width": int(width),
        "detections": detections,
    }


def _cxcywh(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0


def write_yolo(path: Path, rows: np.ndarray) -> None:
    """YOLO label format plus a confidence column: class xc yc w h confidence, the confidence
    being the objectness, the quantity --obj-thresh kept the row by (so --min-label-confidence
    is a stricter --obj-thresh)."""
    lines = [
        f"{int(cls)} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f} {obj:.6f}"
        for x0, y0, x1, y1, obj, _, cls in rows[:, :7]
        for xc, yc, w, h in [_cxcywh(x0, y0, x1, y1)]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(line + "\n" for line in lines))


def draw(
    pixels: np.ndarray,
    target: Path,
    rows: np.ndarray,
    names: Sequence[str],
    line_width: int | None = None,
    hide_labels: bool = False,
    hide_conf: bool = False,
) -> None:
    """The frame (`pixels` uint8 (C, H, W)) with a labelled box per detection
    (yogo.evaluation.draw), as
    PNG or TIFF (by `target`'s suffix)."""
    from yogo.evaluation.draw import draw_boxes

    scores = rows[:, 4]  # objectness: what --obj-thresh compared
    image = draw_boxes(
        pixels, rows[:, :4], rows[:, 6], names, scores, line_width, hide_labels, hide_conf
    )
    save_image(image, target)


def write_png(target: Path, pixels: np.ndarray) -> None:
    """A frame, uint8 (C, H, W), as a lossless PNG (gray or RGB)."""
    from PIL import Image

    planes = pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)
    save_image(Image.fromarray(np.ascontiguousarray(planes)), target)


def save_image(image: Any, target: Path) -> None:
    encoded = io.BytesIO()
    image.save(encoded, format="PNG" if target.suffix == ".png" else "TIFF")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, encoded.getvalue())
