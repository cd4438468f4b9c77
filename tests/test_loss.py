"""The loss on hand-made cases: every weight takes effect."""

from __future__ import annotations

import math

import pytest
import torch

from yogo.model.boxes import build_targets
from yogo.model.loss import LossSettings, YOGOLoss

ANCHORS = torch.tensor([0.25, 0.5])


def case() -> tuple[torch.Tensor, torch.Tensor]:
    """One image, 2 x 2 grid, 2 classes; one object of class 1 in cell (0, 1) whose box the
    raw output predicts exactly."""
    labels = torch.tensor([[0, 1, 0.75, 0.25, 0.25, 0.5]])
    targets = build_targets(labels, 1, (2, 2))
    raw = torch.zeros(1, 7, 2, 2)
    raw[0, 4] = -20.0  # confident "no object" everywhere...
    raw[0, 4, 0, 1] = 20.0  # ...except the object's cell
    raw[0, 6, 0, 1] = 20.0  # class 1
    return raw, targets


def test_perfect_prediction_costs_almost_nothing() -> None:
    raw, targets = case()
    parts = YOGOLoss(LossSettings(label_smoothing=0.0))(raw, targets, ANCHORS)
    assert parts["objectness"] < 1e-8 and parts["box"] < 1e-5 and parts["class"] < 1e-8
    assert parts["loss"] == parts["objectness"] + parts["box"] + parts["class"]


@pytest.mark.parametrize(("obj_loss", "per_cell"), [("bce", math.log(2)), ("mse", 0.25)])
def test_objectness_weights(obj_loss: str, per_cell: float) -> None:
    raw, targets = case()
    raw[0, 4] = 0.0  # objectness 0.5 everywhere: the same loss in each of the 4 cells
    settings = LossSettings(no_obj_weight=0.5, obj_loss=obj_loss)
    half = YOGOLoss(settings)(raw, targets, ANCHORS)["objectness"]
    assert half == pytest.approx(per_cell + 3 * 0.5 * per_cell)
    settings = LossSettings(no_obj_weight=0.0, obj_loss=obj_loss)
    assert YOGOLoss(settings)(raw, targets, ANCHORS)["objectness"] == pytest.approx(per_cell)


def test_bce_objectness_pulls_a_missed_object_back_where_mse_gives_up() -> None:
    """An object cell whose objectness was pushed to ~0.0025: the squared error's gradient has
    all but vanished (YOGO 1.0.1's objects stuck there for good), cross-entropy's is ~1."""
    pulls = {}
    for obj_loss in ("bce", "mse"):
        raw, targets = case()
        raw[0, 4, 0, 1] = -6.0
        raw.requires_grad_()
        YOGOLoss(LossSettings(obj_loss=obj_loss))(raw, targets, ANCHORS)["objectness"].backward()
        assert raw.grad is not None
        pulls[obj_loss] = -float(raw.grad[0, 4, 0, 1])
    assert pulls["bce"] == pytest.approx(1.0, abs=0.01) and pulls["mse"] < 0.01


def test_box_term_and_its_weight() -> None:
    raw, targets = case()
    raw[0, 2, 0, 1] = math.log(2)  # twice too wide
    one = YOGOLoss(LossSettings(iou_weight=1.0))(raw, targets, ANCHORS)["box"]
    five = YOGOLoss(LossSettings(iou_weight=5.0))(raw, targets, ANCHORS)["box"]
    assert one == pytest.approx(0.5, abs=0.01)  # IoU 1/2, same centre, same aspect... almost
    assert five == pytest.approx(5 * one)


def test_class_term_weight_smoothing_and_class_weights() -> None:
    raw, targets = case()
    raw[0, 5:, 0, 1] = 0.0  # undecided between the two classes
    plain = YOGOLoss(LossSettings(label_smoothing=0.0))(raw, targets, ANCHORS)["class"]
    assert plain == pytest.approx(math.log(2))
    assert YOGOLoss(LossSettings(classify_weight=0.0))(raw, targets, ANCHORS)["class"] == 0
    tripled = YOGOLoss(LossSettings(classify_weight=3.0, label_smoothing=0.0))
    assert tripled(raw, targets, ANCHORS)["class"] == pytest.approx(3 * math.log(2))
    raw[0, 6, 0, 1] = 20.0  # confident and right: smoothing makes it cost something
    sharp = YOGOLoss(LossSettings(label_smoothing=0.0))(raw, targets, ANCHORS)["class"]
    smooth = YOGOLoss(LossSettings(label_smoothing=0.1))(raw, targets, ANCHORS)["class"]
    assert smooth > sharp + 0.5
    raw[0, 5:, 0, 1] = 0.0
    weights = torch.tensor([1.0, 4.0])
    weighted = YOGOLoss(LossSettings(label_smoothing=0.0, class_weights=weights))
    assert float(weighted(raw, targets, ANCHORS)["class"]) == pytest.approx(4 * math.log(2))


def test_loss_is_per_image_and_empty_batches_work() -> None:
    raw, targets = case()
    two = YOGOLoss(LossSettings())(raw.repeat(2, 1, 1, 1), targets.repeat(2, 1, 1, 1), ANCHORS)
    one = YOGOLoss(LossSettings())(raw, targets, ANCHORS)
    assert two["loss"] == pytest.approx(one["loss"])
    empty = YOGOLoss(LossSettings())(
        torch.zeros(1, 7, 2, 2, requires_grad=True), torch.zeros(1, 2, 2, 6), ANCHORS
    )
    empty["loss"].backward()
    assert empty["box"] == 0 and empty["class"] == 0


@pytest.mark.parametrize(("weights", "factor"), [((0.5, 4.0), 2.0), ((2.0, 0.5), 1.0)])
def test_object_cells_weigh_the_root_of_their_class_weight_at_least_1(
    weights: tuple[float, float], factor: float
) -> None:
    raw, targets = case()  # the object is of class 1
    raw[0, 4] = 0.0  # objectness 0.5: squared error 0.25
    weighted = LossSettings(no_obj_weight=0.0, class_weights=torch.tensor(weights))
    objectness = YOGOLoss(weighted)(raw, targets, ANCHORS)["objectness"]
    assert objectness == pytest.approx(factor * 0.25)


def test_box_term_weighs_like_objectness() -> None:
    raw, targets = case()  # the object is of class 1
    raw[0, 2, 0, 1] = math.log(2)
    plain = YOGOLoss(LossSettings())(raw, targets, ANCHORS)["box"]
    rare = LossSettings(class_weights=torch.tensor([0.5, 4.0]))  # boost sqrt(4) = 2
    assert YOGOLoss(rare)(raw, targets, ANCHORS)["box"] == pytest.approx(2 * plain)


def test_neighbour_cells_decode_the_box_the_targets_were_built_for() -> None:
    """Neighbour cells' target centres lie outside the cells: a model trained with neighbour
    cells decodes that far."""
    labels = torch.tensor([[0, 1, 0.5, 0.5, 0.75, 0.75]])  # 3 cells wide in a 4 x 4 grid
    targets = build_targets(labels, 1, (4, 4), neighbour_cells=True)
    cells = [tuple(c) for c in targets[0, :, :, 0].nonzero().tolist()]
    assert sorted(cells) == [(1, 2), (2, 1), (2, 2)]  # the centre cell and two neighbours
    raw = torch.zeros(1, 7, 4, 4)
    raw[0, 2:4] = math.log(3.0)  # 3 cells wide with an anchor of one cell
    # Centre (2, 2) in cell units: (col + 2 sigmoid(t) - 0.5) = 2.
    third = math.log(3.0)  # sigmoid = 3/4
    raw[0, 0:2, 2, 2] = -third
    raw[0, 0:2, 2, 1] = torch.tensor([third, -third])
    raw[0, 0:2, 1, 2] = torch.tensor([-third, third])
    anchors = torch.tensor([0.25, 0.25])
    exact = YOGOLoss(LossSettings())(raw, targets, anchors, True)["box"]
    assert float(exact) == pytest.approx(0.0, abs=1e-4)
    assert YOGOLoss(LossSettings())(raw, targets, anchors, False)["box"] > 0.5


def test_an_iou_objectness_target_is_the_boxes_fit() -> None:
    raw, targets = case()
    raw[0, 2, 0, 1] = math.log(2)  # twice too wide: IoU 1/2
    raw[0, 4, 0, 1] = 0.0  # objectness 0.5
    settings = LossSettings(no_obj_weight=0.0, obj_target="iou")
    assert float(YOGOLoss(settings)(raw, targets, ANCHORS)["objectness"]) == pytest.approx(0.0)
    one = LossSettings(no_obj_weight=0.0)
    assert float(YOGOLoss(one)(raw, targets, ANCHORS)["objectness"]) == pytest.approx(0.25)


@pytest.mark.parametrize("obj_loss", ["mse", "bce"])
def test_each_images_loss_adds_up_to_the_batch_loss(obj_loss: str) -> None:
    """--hard-frames ranks frames by `per_image`: the frame with the wrong prediction is the
    hard one, and the per-image losses sum to the batch's (x the batch size)."""
    raw, targets = case()
    wrong = raw.clone()
    wrong[0, 5:, 0, 1] = torch.tensor([20.0, -20.0])  # the object called class 0
    weights = torch.tensor([1.0, 3.0])
    settings = LossSettings(class_weights=weights, obj_loss=obj_loss)
    parts = YOGOLoss(settings)(
        torch.cat([raw, wrong, torch.zeros_like(raw)]), targets.repeat(3, 1, 1, 1), ANCHORS
    )
    per_image = parts["per_image"]
    assert per_image.shape == (3,) and not per_image.requires_grad
    assert per_image.sum() / 3 == pytest.approx(float(parts["loss"]), rel=1e-5)
    assert per_image[1] > per_image[0] and per_image[1] > 10 * per_image[0]
