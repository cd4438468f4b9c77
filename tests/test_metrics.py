"""Detection metrics: hand-made cases with known answers, and agreement with pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import pycocotools_ap

from yogo.evaluation.metrics import DetectionMetrics, box_iou

NAMES = ("a", "b", "c")


def det(*rows: tuple[float, ...]) -> torch.Tensor:
    """Detections from (x0, y0, x1, y1, objectness, class prob, class) rows."""
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 7)


def truth(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)


def test_box_iou() -> None:
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], dtype=float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], dtype=float)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1, 0], [0, 0.25, 0]])


def test_perfect_detections() -> None:
    m = DetectionMetrics(NAMES)
    m.update(
        [det((0.1, 0.1, 0.2, 0.2, 0.9, 0.9, 0), (0.5, 0.5, 0.6, 0.6, 0.8, 0.7, 1))],
        [truth((0, 0.1, 0.1, 0.2, 0.2), (1, 0.5, 0.5, 0.6, 0.6))],
    )
    r = m.compute()
    assert r["mAP50"] == 1.0 and r["mAP50_95"] == 1.0
    assert r["per_class"]["a"]["precision"] == 1.0 and r["per_class"]["b"]["recall"] == 1.0
    assert r["per_class"]["c"]["AP50"] is None  # no labels of class c: excluded from the mean
    assert r["confusion_matrix"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_wrong_class_missed_and_false_positive_in_confusion_matrix() -> None:
    m = DetectionMetrics(NAMES, obj_thresh=0.5)
    m.update(
        [
            det(
                (0.1, 0.1, 0.2, 0.2, 0.9, 0.9, 1),  # right place, wrong class (a seen as b)
                (0.7, 0.7, 0.8, 0.8, 0.9, 0.9, 2),  # nothing there: background seen as c
                (0.4, 0.4, 0.5, 0.5, 0.3, 0.9, 1),
            )
        ],  # below obj_thresh: ignored at threshold
        [truth((0, 0.1, 0.1, 0.2, 0.2), (1, 0.4, 0.4, 0.5, 0.5))],
    )
    r = m.compute()
    assert r["confusion_matrix"] == [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert r["per_class"]["b"]["num_pred"] == 1 and r["per_class"]["b"]["precision"] == 0.0
    assert r["per_class"]["b"]["count_error"] == 0.0  # one predicted, one true (by count)
    assert r["per_class"]["b"]["AP50"] == pytest.approx(0.5, abs=0.01)  # found at rank 2
    assert r["mean_abs_count_error_per_image"] == {"a": 1.0, "b": 0.0, "c": 1.0}


def random_case(rng: np.random.Generator, images: int = 12) -> tuple[list, list]:
    detections, truths = [], []
    for _ in range(images):
        n = int(rng.integers(0, 15))
        xy = rng.uniform(0, 0.8, (n, 2))
        wh = rng.uniform(0.03, 0.2, (n, 2))
        gt = np.column_stack([rng.integers(0, 3, n), xy, xy + wh])
        rows = []
        for g in gt:  # a noisy detection for most labels, sometimes with the wrong class
            if rng.random() < 0.85:
                jitter = rng.normal(0, 0.02, 4)
                cls = g[0] if rng.random() < 0.8 else rng.integers(0, 3)
                rows.append([*(g[1:] + jitter), rng.uniform(0.3, 1), rng.uniform(0.3, 1), cls])
        for _ in range(int(rng.integers(0, 5))):  # false positives
            p = rng.uniform(0, 0.8, 2)
            rows.append(
                [
                    *p,
                    *(p + rng.uniform(0.03, 0.2, 2)),
                    rng.uniform(0, 1),
                    rng.uniform(0.3, 1),
                    rng.integers(0, 3),
                ]
            )
        d = np.array(rows, dtype=float).reshape(-1, 7)
        d[:, 2:4] = np.maximum(d[:, 2:4], d[:, 0:2] + 1e-3)
        detections.append(torch.from_numpy(d))
        truths.append(torch.from_numpy(gt.astype(float)))
    return detections, truths


@pytest.mark.parametrize("seed", range(6))
def test_matches_pycocotools(seed: int) -> None:
    detections, truths = random_case(np.random.default_rng(seed))
    m = DetectionMetrics(NAMES)
    m.update(detections, truths)
    ours = m._average_precision()
    np.testing.assert_allclose(ours, pycocotools_ap(detections, truths), atol=1e-9)
    report = m.compute()
    assert report["mAP50"] == pytest.approx(np.nanmean(ours[0]))
