"""Weighted box fusion and test-time flips (yogo.model.fusion), on hand-made detections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yogo.model.fusion import FLIPS, _flip_back, _flipped, fuse_detections


def rows(*detections: tuple[float, float, float, float, float, list[float]]) -> torch.Tensor:
    """(N, 7 + C) detections from (x0, y0, x1, y1, objectness, class probabilities)."""
    out = []
    for *box, objectness, probs in detections:
        p = np.asarray(probs)
        out.append([*box, objectness, p.max(), p.argmax(), *p])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 7 + 2)


def test_one_object_seen_by_every_view_is_one_box_at_the_weighted_mean() -> None:
    views = [
        rows((0.10, 0.10, 0.30, 0.30, 0.9, [0.8, 0.2])),
        rows((0.12, 0.10, 0.32, 0.30, 0.6, [0.6, 0.4])),
        rows((0.11, 0.11, 0.31, 0.31, 0.3, [0.2, 0.8])),
    ]
    fused = fuse_detections(views, iou_thresh=0.5)
    assert fused.shape == (1, 9)
    weights = np.array([0.9, 0.6, 0.3])
    x0 = (np.array([0.10, 0.12, 0.11]) * weights).sum() / weights.sum()
    assert fused[0, 0].item() == pytest.approx(x0, abs=1e-6)
    assert fused[0, 4].item() == pytest.approx(0.6, abs=1e-6)  # mean: every view found it
    healthy = (np.array([0.8, 0.6, 0.2]) * weights).sum() / weights.sum()
    assert fused[0, 7].item() == pytest.approx(healthy, abs=1e-6)
    assert fused[0, 6].item() == 0 and fused[0, 5].item() == pytest.approx(healthy, abs=1e-6)


def test_an_object_only_some_views_found_scores_lower_and_apart_objects_stay_apart() -> None:
    lonely = (0.6, 0.6, 0.7, 0.7, 0.9, [0.1, 0.9])
    views = [
        rows((0.1, 0.1, 0.2, 0.2, 0.8, [1.0, 0.0]), lonely),
        rows((0.1, 0.1, 0.2, 0.2, 0.8, [1.0, 0.0])),
        rows((0.1, 0.1, 0.2, 0.2, 0.8, [1.0, 0.0])),
    ]
    fused = fuse_detections(views, iou_thresh=0.5)
    assert len(fused) == 2
    assert fused[0, 4].item() == pytest.approx(0.8)  # highest first: found by all three
    assert fused[1, 4].item() == pytest.approx(0.3)  # 0.9 x 1/3
    assert fused[1, 6].item() == 1
    # Plain NMS keeps the single view's 0.9 above the object every model agrees on.
    nms = fuse_detections(views, iou_thresh=0.5, method="nms")
    assert nms[:, 4].tolist() == pytest.approx([0.9, 0.8])


def test_no_detections_fuse_to_none() -> None:
    assert fuse_detections([rows(), rows()]).shape == (0, 9)
    with pytest.raises(ValueError):
        fuse_detections([])


@pytest.mark.parametrize("flip", FLIPS)
def test_a_box_found_on_a_flipped_frame_maps_back_onto_the_object(
    flip: tuple[bool, bool],
) -> None:
    """A bright square at known pixels: after the flip, the box around where it lies in the
    flipped frame, flipped back, is the original box."""
    frame = np.zeros((1, 1, 20, 40), np.uint8)
    frame[0, 0, 2:6, 4:12] = 255  # rows 2..5, columns 4..11
    flipped = _flipped(frame, *flip)
    ys, xs = np.nonzero(flipped[0, 0])
    h, w = frame.shape[2:]
    found = rows((xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h, 1, [1, 0]))
    back = _flip_back(found, *flip)
    assert back[0, :4].tolist() == pytest.approx([4 / 40, 2 / 20, 12 / 40, 6 / 20])
    assert back[0, 4:].tolist() == found[0, 4:].tolist()
