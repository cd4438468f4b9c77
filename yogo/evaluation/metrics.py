"""Detection metrics with COCO's rules: AP per class (101-point), mAP@0.5 and @0.5:0.95,
precision/recall/F1 at an objectness threshold, a confusion matrix with background, counts.

    metrics = DetectionMetrics(class_names, obj_thresh=0.5)  # or one threshold per class
    metrics.update(detections, truths)   # per image: (N, 7) detections, (M, 5) class + xyxy
    report = metrics.compute()           # plain dict (the `yogo test --json` content)

Detections come from `boxes.postprocess` with a low objectness threshold (AP needs the whole
ranking); the score that ranks them is objectness x class probability. Unlike pycocotools'
defaults there is no cap on detections per image (smears hold hundreds of objects) and no area
ranges. State is a list of per-image arrays, so ranks can gather and merge it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)
RECALL_POINTS = np.linspace(0, 1, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N, M) between xyxy boxes a (N, 4) and b (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class DetectionMetrics:
    def __init__(
        self, class_names: Sequence[str], obj_thresh: float | Sequence[float] = 0.5
    ) -> None:
        self.class_names = tuple(class_names)
        self.thresholds = per_class_thresholds(obj_thresh, len(self.class_names))
        self.images: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def obj_thresh(self) -> float | None:
        """The objectness threshold when every class has the same one, else None."""
        same = len(set(self.thresholds.tolist())) <= 1
        return float(self.thresholds[0]) if same and len(self.thresholds) else None

    def describe_thresholds(self) -> str:
        return threshold_words(self.class_names, self.thresholds.tolist())

    def kept(self, det: np.ndarray) -> np.ndarray:
        """The detections at or above their class's objectness threshold."""
        return det[det[:, 4] >= self.thresholds[det[:, 6].astype(np.int64)]]

    def update(self, detections: Sequence[torch.Tensor], truths: Sequence[torch.Tensor]) -> None:
        """Add images: detections (N, 7) x0, y0, x1, y1, objectness, class prob, class;
        truths (M, 5) class, x0, y0, x1, y1 (normalised)."""
        for det, truth in zip(detections, truths, strict=True):
            self.images.append(
                (det.detach().cpu().double().numpy(), truth.detach().cpu().double().numpy())
            )

    def compute(self) -> dict[str, Any]:
        num_classes = len(self.class_names)
        ap = self._average_precision()  # (T, C), nan where a class has no labels
        ap50, ap50_95 = ap[0], ap.mean(axis=0)
        confusion = self.frame_confusions().sum(axis=0)
        tp = np.diag(confusion)[:num_classes]
        num_pred = confusion[:, :num_classes].sum(axis=0)
        num_true = np.zeros(num_classes, dtype=np.int64)
        for _, truth in self.images:
            num_true += np.bincount(truth[:, 0].astype(np.int64), minlength=num_classes)
        precision = np.divide(tp, num_pred, out=np.zeros(num_classes), where=num_pred > 0)
        recall = np.divide(tp, num_true, out=np.zeros(num_classes), where=num_true > 0)
        denominator = precision + recall
        f1 = np.divide(
            2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0
        )
        per_class = {}
        for i, name in enumerate(self.class_names):
            per_class[name] = {
                "AP50": _number(ap50[i]),
                "AP50_95": _number(ap50_95[i]),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "threshold": float(self.thresholds[i]),
                "num_true": int(num_true[i]),
                "num_pred": int(num_pred[i]),
                "count_error": _number((num_pred[i] - num_true[i]) / num_true[i])
                if num_true[i]
                else None,
            }
        return {
            "num_images": len(self.images),
            "num_objects": int(num_true.sum()),
            "mAP50": _mean(ap50),
            "mAP50_95": _mean(ap50_95),
            "obj_thresh": self.obj_thresh,
            "thresholds": self.describe_thresholds(),
            "per_class": per_class,
            "class_names": list(self.class_names),
            "confusion_matrix": confusion.tolist(),
            "mean_abs_count_error_per_image": self._count_errors(),
        }

    def _ranked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every detection's score, class and hits (T, N) at each IoU threshold, and the
        number of labels per class."""
        num_classes = len(self.class_names)
        scores, class_indices, hits = [], [], []
        num_true = np.zeros(num_classes, dtype=np.int64)
        for det, truth in self.images:
            order = np.argsort(-(det[:, 4] * det[:, 5]), kind="stable")
            det = det[order]
            scores.append(det[:, 4] * det[:, 5])
            class_indices.append(det[:, 6].astype(np.int64))
            hits.append(_greedy_hits(det, truth, IOU_THRESHOLDS))
            num_true += np.bincount(truth[:, 0].astype(np.int64), minlength=num_classes)
        score = np.concatenate(scores) if scores else np.zeros(0)
        cls = np.concatenate(class_indices) if class_indices else np.zeros(0, dtype=np.int64)
        hit = np.concatenate(hits, axis=1) if hits else np.zeros((len(IOU_THRESHOLDS), 0), bool)
        return score, cls, hit, num_true

    def _curves(self) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
        """Per class with labels, per IoU threshold: recall and precision envelope."""
        score, cls, hit, num_true = self._ranked()
        curves = {}
        for c in np.flatnonzero(num_true):
            mine = np.flatnonzero(cls == c)
            mine = mine[np.argsort(-score[mine], kind="mergesort")]
            per_threshold = []
            for t in range(len(IOU_THRESHOLDS)):
                tp = np.cumsum(hit[t, mine])
                fp = np.cumsum(~hit[t, mine])
                recall = tp / num_true[c]
                precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
                # Envelope: the best precision at this recall or any higher one.
                envelope = np.maximum.accumulate(precision[::-1])[::-1]
                per_threshold.append((recall, envelope))
            curves[int(c)] = per_threshold
        return curves

    def _average_precision(self) -> np.ndarray:
        """AP (T, C) with COCO's greedy matching and 101-point interpolated precision; nan
        for classes without labels."""
        ap = np.full((len(IOU_THRESHOLDS), len(self.class_names)), np.nan)
        for c, per_threshold in self._curves().items():
            for t, (recall, envelope) in enumerate(per_threshold):
                index = np.searchsorted(recall, RECALL_POINTS, side="left")
                reached = index < len(envelope)
                sampled = np.zeros(len(RECALL_POINTS))
                sampled[reached] = envelope[index[reached]]
                ap[t, c] = sampled.mean()
        return ap

    def threshold_curves(
        self, thresholds: np.ndarray
    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per class with labels: precision, recall and F1 at IoU 0.5 of the detections whose
        score (objectness x class probability) is at least each of `thresholds`; precision is
        nan at a threshold that keeps no detection of the class."""
        score, cls, hit, num_true = self._ranked()
        out = {}
        for c in np.flatnonzero(num_true):
            mine = np.flatnonzero(cls == c)
            mine = mine[np.argsort(-score[mine], kind="mergesort")]
            tp = np.concatenate([[0], np.cumsum(hit[0, mine])])
            kept = np.searchsorted(-score[mine], -thresholds, side="right")  # score >= t
            # Nothing kept: precision is undefined (nan, drawn as no line), not 1.
            precision = np.divide(tp[kept], kept, out=np.full(len(kept), np.nan), where=kept > 0)
            recall = tp[kept] / num_true[c]
            defined = np.nan_to_num(precision)
            total = defined + recall
            f1 = np.divide(2 * defined * recall, total, out=np.zeros(len(kept)), where=total > 0)
            out[self.class_names[c]] = (precision, recall, f1)
        return out

    def frame_errors(self) -> list[dict[str, Any]]:
        """Per image, at the thresholds and IoU 0.5: labels no detection of their class
        matched (`misses`), detections that matched no label of their class (`extras`: a wrong
        class counts once in each), the summed score of the extras, and the true and predicted
        counts per class."""
        num_classes = len(self.class_names)
        out = []
        for i, (_, truth) in enumerate(self.images):
            kept, hits = self.matches(i)
            out.append(
                {
                    "misses": int(len(truth) - hits.sum()),
                    "extras": int((~hits).sum()),
                    "extra_score": float((kept[~hits, 4] * kept[~hits, 5]).sum()),
                    "true": np.bincount(truth[:, 0].astype(np.int64), minlength=num_classes),
                    "pred": np.bincount(kept[:, 6].astype(np.int64), minlength=num_classes),
                }
            )
        return out

    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Recall and precision (envelope) at IoU 0.5, per class that has labels."""
        return {self.class_names[c]: curves[0] for c, curves in self._curves().items()}

    def frame_confusions(self) -> np.ndarray:
        """Per image, the confusion matrix (F, C+1, C+1): rows true class, columns predicted
        class, the last row/column background (false detections, missed labels), at the
        thresholds and IoU 0.5 (class-agnostic greedy matching by objectness)."""
        n = len(self.class_names)
        out = np.zeros((len(self.images), n + 1, n + 1), dtype=np.int64)
        for f, (det, truth) in enumerate(self.images):
            confusion = out[f]
            det = self.kept(det)
            det = det[np.argsort(-det[:, 4], kind="stable")]
            pred_class = det[:, 6].astype(np.int64)
            true_class = truth[:, 0].astype(np.int64)
            iou = box_iou(det[:, :4], truth[:, 1:])
            matched = np.zeros(len(truth), dtype=bool)
            for d in range(len(det)):
                candidates = np.where(matched | (iou[d] < 0.5), -1.0, iou[d])
                if len(candidates) and candidates.max() >= 0:
                    g = int(candidates.argmax())
                    matched[g] = True
                    confusion[true_class[g], pred_class[d]] += 1
                else:
                    confusion[n, pred_class[d]] += 1
            confusion[:n, n] += np.bincount(true_class[~matched], minlength=n)
        return out

    def matches(self, image: int, kept: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """An image's detections (at the thresholds with `kept`), highest score first, and
        whether each matches a label of its class at IoU 0.5."""
        det, truth = self.images[image]
        det = self.kept(det) if kept else det
        det = det[np.argsort(-(det[:, 4] * det[:, 5]), kind="stable")]
        return det, _greedy_hits(det, truth, IOU_THRESHOLDS[:1])[0]

    def detections_by_class(self, kept: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per class: objectness, score (objectness x class probability) and whether each
        detection matches a label of its class at IoU 0.5, over every image; all detections
        ranked for AP, or with `kept` those at the thresholds."""
        n = len(self.class_names)
        parts: list[list[np.ndarray]] = [[] for _ in range(3)]
        classes = []
        for i in range(len(self.images)):
            det, hits = self.matches(i, kept)
            parts[0].append(det[:, 4])
            parts[1].append(det[:, 4] * det[:, 5])
            parts[2].append(hits)
            classes.append(det[:, 6].astype(np.int64))
        if not self.images:
            return [(np.zeros(0), np.zeros(0), np.zeros(0, bool)) for _ in range(n)]
        obj, score, hit = (np.concatenate(p) for p in parts)
        cls = np.concatenate(classes)
        return [(obj[cls == c], score[cls == c], hit[cls == c]) for c in range(n)]

    def _count_errors(self) -> dict[str, float | None]:
        """Mean over images of |predicted count - true count| per class (at the thresholds)."""
        n = len(self.class_names)
        if not self.images:
            return {name: None for name in self.class_names}
        errors = np.zeros(n)
        for det, truth in self.images:
            predicted = np.bincount(self.kept(det)[:, 6].astype(np.int64), minlength=n)
            true = np.bincount(truth[:, 0].astype(np.int64), minlength=n)
            errors += np.abs(predicted - true)
        return {
            name: float(e / len(self.images))
            for name, e in zip(self.class_names, errors, strict=True)
        }


def threshold_words(class_names: Sequence[str], thresholds: Sequence[float]) -> str:
    """'objectness >= 0.5', or 'per-class objectness thresholds (a 0.3, b 0.62)'."""
    if len(set(thresholds)) == 1:
        return f"objectness >= {thresholds[0]:g}"
    pairs = zip(class_names, thresholds, strict=True)
    return f"per-class objectness thresholds ({', '.join(f'{n} {t:.3g}' for n, t in pairs)})"


def per_class_thresholds(obj_thresh: float | Sequence[float], num_classes: int) -> np.ndarray:
    """One objectness threshold per class, from one for all or a sequence of them."""
    if isinstance(obj_thresh, int | float):
        return np.full(num_classes, float(obj_thresh))
    thresholds = np.asarray(obj_thresh, dtype=np.float64)
    if thresholds.shape != (num_classes,):
        raise ValueError(f"{len(thresholds)} thresholds for {num_classes} classes")
    return thresholds


def _greedy_hits(det: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(T, N) whether each detection (sorted by score) matches a same-class label at each IoU
    threshold: COCO's rule, each detection takes the unmatched label with the highest IoU."""
    hits = np.zeros((len(thresholds), len(det)), dtype=bool)
    if len(det) == 0 or len(truth) == 0:
        return hits
    iou = box_iou(det[:, :4], truth[:, 1:])
    same = det[:, 6:7].astype(np.int64) == truth[None, :, 0].astype(np.int64)
    iou = np.where(same, iou, -1.0)
    for t, threshold in enumerate(thresholds):
        matched = np.zeros(len(truth), dtype=bool)
        # Only detections with some label at this IoU can match; the rest are misses.
        for d in np.flatnonzero(iou.max(axis=1) >= threshold):
            candidates = np.where(matched, -1.0, iou[d])
            g = int(candidates.argmax())
            if candidates[g] >= threshold:
                matched[g] = True
                hits[t, d] = True
    return hits


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _mean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else None
