"""Box decoding, grid targets and post-processing on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from yogo.model.boxes import build_targets, complete_iou_loss, cxcywh_to_xyxy, decode, postprocess


def test_decode_hand_case() -> None:
    raw = torch.zeros(1, 7, 2, 4)  # 2 classes, grid 2 rows x 4 columns
    raw[0, 2, 1, 3] = math.log(2.0)  # w doubles the anchor at row 1, column 3
    raw[0, 4, 1, 3] = 10.0  # confident object there
    raw[0, 6, 1, 3] = 3.0  # class 1
    out = decode(raw, 0.1, 0.2)[0]
    assert out.shape == (7, 2, 4)
    assert out[0, 1, 3] == 3 / 4 + 0.5 / 4  # (i + sigmoid(0)) / Sx
    assert out[1, 1, 3] == 1 / 2 + 0.5 / 2
    assert torch.isclose(out[2, 1, 3], torch.tensor(0.2)) and torch.isclose(
        out[3, 1, 3], torch.tensor(0.2)
    )
    assert out[4, 1, 3] > 0.99 and out[4, 0, 0] == 0.5
    assert torch.allclose(out[5:].sum(0), torch.ones(2, 4))
    assert out[6, 1, 3] > 0.95


def test_decode_clamps_the_exponent() -> None:
    raw = torch.zeros(1, 6, 1, 1)
    raw[0, 2] = 1000.0
    assert torch.isfinite(decode(raw, 0.1, 0.1)).all()


def test_build_targets_places_objects_and_keeps_the_first_in_a_cell() -> None:
    labels = torch.tensor(
        [
            [0, 1, 0.10, 0.10, 0.05, 0.05],  # image 0, cell (0, 0)
            [0, 2, 0.20, 0.20, 0.05, 0.05],  # image 0, same cell as the first: dropped
            [1, 0, 0.90, 0.60, 0.10, 0.20],  # image 1, cell (row 1, col 3)
            [1, 1, 1.00, 1.00, 0.10, 0.10],  # far edge: clamped into the last cell, taken
        ]
    )
    t = build_targets(labels, batch_size=2, grid=(2, 4))
    assert t.shape == (2, 2, 4, 6)
    assert t[..., 0].sum() == 2
    torch.testing.assert_close(t[0, 0, 0], torch.tensor([1, 0.1, 0.1, 0.05, 0.05, 1]))
    torch.testing.assert_close(t[1, 1, 3], torch.tensor([1, 0.9, 0.6, 0.1, 0.2, 0]))


def test_build_targets_without_labels() -> None:
    assert build_targets(torch.zeros(0, 6), 3, (2, 2)).abs().sum() == 0


def test_postprocess_thresholds_and_class_agnostic_nms() -> None:
    decoded = torch.zeros(2, 7, 1, 3)
    # image 0: two overlapping boxes of different classes (NMS keeps the more confident),
    # one separate box below the objectness threshold
    decoded[0, :, 0, 0] = torch.tensor([0.2, 0.5, 0.2, 0.2, 0.9, 0.9, 0.1])
    decoded[0, :, 0, 1] = torch.tensor([0.22, 0.5, 0.2, 0.2, 0.8, 0.2, 0.8])
    decoded[0, :, 0, 2] = torch.tensor([0.8, 0.5, 0.1, 0.1, 0.3, 0.6, 0.4])
    decoded[1, :, 0, 0] = torch.tensor([0.5, 0.5, 0.1, 0.1, 0.7, 0.45, 0.55])
    out = postprocess(decoded, obj_thresh=0.5, iou_thresh=0.5)
    assert [len(o) for o in out] == [1, 1]
    torch.testing.assert_close(out[0][0], torch.tensor([0.1, 0.4, 0.3, 0.6, 0.9, 0.9, 0.0]))
    assert out[1][0, 6] == 1
    assert len(postprocess(decoded, 0.5, 0.5, min_class_confidence=0.6)[1]) == 0
    assert len(postprocess(decoded, 0.2, 0.5)[0]) == 2


def test_cxcywh_to_xyxy() -> None:
    torch.testing.assert_close(
        cxcywh_to_xyxy(torch.tensor([[0.5, 0.5, 0.2, 0.4]])), torch.tensor([[0.4, 0.3, 0.6, 0.7]])
    )


def test_complete_iou_loss_matches_torchvision_in_value_and_gradient() -> None:
    """yogo's own CIoU (written in cxcywh so training needs no torchvision import) against
    torchvision's, on overlapping, touching, disjoint, nested and identical boxes."""
    import torchvision

    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(200, 2, generator=generator)
    sizes = 0.01 + 0.3 * torch.rand(200, 2, generator=generator)
    pred = torch.cat([centres, sizes], 1)
    target = pred + 0.1 * torch.randn(200, 4, generator=generator)
    target[:, 2:] = target[:, 2:].abs() + 0.01
    target[:10] = pred[:10]  # identical
    target[10:20, :2] = pred[10:20, :2] + 5  # far apart
    target[20:30, 2:] = pred[20:30, 2:] / 3  # nested
    target[20:30, :2] = pred[20:30, :2]
    mine_pred = pred.clone().double().requires_grad_()
    theirs_pred = pred.clone().double().requires_grad_()
    mine = complete_iou_loss(mine_pred, target.double())
    theirs = torchvision.ops.complete_box_iou_loss(
        cxcywh_to_xyxy(theirs_pred), cxcywh_to_xyxy(target.double()), reduction="none"
    )
    torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)
    mine.sum().backward()
    theirs.sum().backward()
    assert mine_pred.grad is not None and theirs_pred.grad is not None
    torch.testing.assert_close(mine_pred.grad, theirs_pred.grad, rtol=1e-5, atol=1e-6)


def test_neighbour_cells_reach_half_a_cell_beyond_the_cell() -> None:
    raw = torch.zeros(1, 6, 2, 4)
    raw[0, 0, 1, 2], raw[0, 0, 1, 3] = -100.0, 100.0
    one, two = decode(raw, 0.1, 0.1)[0], decode(raw, 0.1, 0.1, neighbour_cells=True)[0]
    assert one[0, 0, 0] == two[0, 0, 0] == 0.5 / 4  # sigmoid(0): the cell's centre either way
    assert one[0, 1, 2] == 2 / 4 and two[0, 1, 2] == 1.5 / 4  # half a cell before column 2
    assert one[0, 1, 3] == 4 / 4 and two[0, 1, 3] == 4.5 / 4  # half a cell past column 3


def test_neighbour_cells_go_to_objects_covering_them() -> None:
    grid = (8, 8)
    #          centre cell (row, col), fraction in it: the nearer neighbours are taken
    labels = torch.tensor(
        [
            [0, 3, 0.53, 0.53, 0.40, 0.40],  # 3.2 cells wide at cell (4, 4), frac (0.24, 0.24)
            [0, 0, 0.20, 0.80, 0.18, 0.18],  # 1.4 cells wide: its neighbours are not covered
            [0, 0, 0.5625, 0.4375, 0.10, 0.10],  # its centre cell (3, 4) is the first's too
            [1, 3, 0.99, 0.99, 0.40, 0.40],  # corner: neighbours outside the grid are skipped
        ]
    )
    t = build_targets(labels, 2, grid, neighbour_cells=True)
    mask = t[..., 0]
    assert [tuple(c) for c in mask[0].nonzero().tolist()] == [(3, 4), (4, 3), (4, 4), (6, 1)]
    assert [tuple(c) for c in mask[1].nonzero().tolist()] == [(7, 7)]
    # A neighbour cell carries its object's box and class; a centre keeps its own object.
    torch.testing.assert_close(t[0, 4, 3], t[0, 4, 4])
    assert t[0, 3, 4, 5] == 0 and float(t[0, 3, 4, 1]) == pytest.approx(0.5625)
    assert build_targets(labels, 2, grid)[..., 0].sum() == 4  # without: centre cells only


def test_a_cell_two_objects_claim_goes_to_the_nearer_centre() -> None:
    labels = torch.tensor(
        [
            [0, 0, 0.30, 0.50, 0.40, 0.40],  # centre (2.4, 4.0) in cells: claims (4, 1)...
            [0, 1, 0.10, 0.52, 0.40, 0.40],  # ...as does this one, centre (0.8, 4.16)
        ]
    )
    t = build_targets(labels, 1, (8, 8), neighbour_cells=True)
    # Cell (4, 1)'s centre (1.5, 4.5): squared distances 1.06 and 0.61; the second wins.
    assert t[0, 4, 1, 0] == 1 and t[0, 4, 1, 5] == 1


def test_postprocess_keeps_what_torchvision_batched_nms_keeps() -> None:
    """Per-image NMS over torchvision's kernel, one split per batch: the same detections, in
    the same order, as torchvision.ops.batched_nms over the whole batch (images with many
    overlapping candidates, none, and per-class thresholds)."""
    import torchvision

    generator = torch.Generator().manual_seed(3)
    decoded = torch.rand(4, 5 + 3, 12, 16, generator=generator)
    decoded[:, 2:4] *= 0.3  # boxes of up to 30% of the frame: many overlap
    decoded[2, 4] = 0.0  # an image with no candidate
    for thresholds in (0.3, [0.3, 0.6, 0.9]):
        got = postprocess(decoded, thresholds, iou_thresh=0.4)
        floor = 0.3
        flat = decoded.flatten(2).transpose(1, 2)
        image, cell = (flat[..., 4] >= floor).nonzero(as_tuple=True)
        boxes = cxcywh_to_xyxy(flat[image, cell, :4])
        kept = torchvision.ops.batched_nms(boxes, flat[image, cell, 4], image, 0.4)
        per_class = torch.as_tensor(thresholds).reshape(-1)
        classes = flat[image[kept], cell[kept], 5:].argmax(-1)
        if len(per_class) > 1:
            kept = kept[flat[image[kept], cell[kept], 4] >= per_class[classes]]
        for b in range(4):
            mine = kept[image[kept] == b]
            assert len(got[b]) == len(mine)
            torch.testing.assert_close(got[b][:, :4], boxes[mine])
            torch.testing.assert_close(got[b][:, 4], flat[image[mine], cell[mine], 4])
        assert len(got[2]) == 0 and sum(map(len, got)) > 10
