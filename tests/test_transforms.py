"""Augmentations: boxes move with the pixels, each strength takes effect, draws are
reproducible per generator seed (what exact resume relies on)."""

from __future__ import annotations

import pytest
import torch

from yogo.config import AugmentSettings
from yogo.data.transforms import _zoom_and_shift, augment, random_flips

GREY = 100


def square_frame() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1 x 60 x 80 grey frame with one white 10 x 16 (h x w) object and its box."""
    image = torch.full((1, 60, 80), GREY, dtype=torch.uint8)
    image[0, 20:30, 40:56] = 255
    boxes = torch.tensor([[1.0, 48 / 80, 25 / 60, 16 / 80, 10 / 60]])
    return image, boxes


def box_of_white(image: torch.Tensor) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 in pixels of the pixels brighter than the background."""
    rows, cols = (image[0] > (GREY + 255) // 2).nonzero(as_tuple=True)
    return float(cols.min()), float(rows.min()), float(cols.max()) + 1, float(rows.max()) + 1


def box_pixels(box: torch.Tensor, width: int = 80, height: int = 60) -> list[float]:
    _, xc, yc, w, h = box.tolist()
    return [
        (xc - w / 2) * width,
        (yc - h / 2) * height,
        (xc + w / 2) * width,
        (yc + h / 2) * height,
    ]


def test_nothing_on_changes_nothing() -> None:
    image, boxes = square_frame()
    out, moved = augment(image, boxes, AugmentSettings(), torch.Generator().manual_seed(0))
    assert torch.equal(out, image) and torch.equal(moved, boxes)


@pytest.mark.parametrize("seed", range(6))
def test_boxes_follow_the_pixels_through_zoom_and_shift(seed: int) -> None:
    image, boxes = square_frame()
    settings = AugmentSettings(translate=0.2, scale=0.3)
    out, moved = augment(image, boxes, settings, torch.Generator().manual_seed(seed))
    assert out.shape == image.shape and len(moved) == 1 and moved[0, 0] == 1
    # Resampling blurs the edge by up to a pixel.
    assert box_pixels(moved[0]) == pytest.approx(box_of_white(out), abs=1.2)


def test_a_box_cut_by_the_edge_is_clipped_or_dropped() -> None:
    image, boxes = square_frame()
    settings = AugmentSettings(translate=0.5)
    # draws: zoom factor 1 (0.5), shift down 0 (0.5), shift right by +0.45 * 80 = 36 px
    out, moved = _zoom_and_shift(image, boxes, settings, [0.5, 0.5, 0.95])
    # The object spans x 76..92: 4 of its 16 columns stay, a quarter: dropped (< 40%).
    assert (out[0, 20:30, 76:80] == 255).all() and len(moved) == 0
    out, moved = _zoom_and_shift(image, boxes, settings, [0.5, 0.5, 0.85])  # shift 28 px
    # x 68..84: 12 of 16 columns stay; the box is clipped to the frame.
    assert len(moved) == 1 and box_pixels(moved[0]) == pytest.approx([68, 20, 80, 30])
    assert (out[0, :, :28] == round(float(image.float().mean()))).all()  # uncovered: mean grey


@pytest.mark.parametrize(
    ("settings", "check"),
    [
        (AugmentSettings(brightness=0.2), lambda a, b: abs(b.mean() - a.mean()) > 1),
        (AugmentSettings(contrast=0.5), lambda a, b: abs(b.std() - a.std()) > 0.5),
        (AugmentSettings(gamma=0.5), lambda a, b: abs(b[0, 0, 0] - a[0, 0, 0]) > 1),
        (AugmentSettings(blur=3.0), lambda a, b: b.std() < a.std() - 0.5),
        (AugmentSettings(noise=20.0), lambda a, b: (b != a).float().mean() > 0.5),
    ],
)
def test_each_photometric_strength_takes_effect_and_repeats(settings, check) -> None:
    image, boxes = square_frame()
    first = augment(image, boxes, settings, torch.Generator().manual_seed(3))
    again = augment(image, boxes, settings, torch.Generator().manual_seed(3))
    other = augment(image, boxes, settings, torch.Generator().manual_seed(4))
    assert check(image.float(), first[0].float())
    assert torch.equal(first[0], again[0]) and not torch.equal(first[0], other[0])
    assert torch.equal(first[1], boxes)  # only pixels change
    assert first[0].dtype == torch.uint8


def test_switching_one_augmentation_leaves_the_others_draws() -> None:
    image, boxes = square_frame()
    alone = augment(image, boxes, AugmentSettings(scale=0.3), torch.Generator().manual_seed(1))
    both = augment(
        image, boxes, AugmentSettings(scale=0.3, brightness=0.1), torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(alone[1], both[1])  # the same zoom


def test_flips_move_boxes_with_pixels() -> None:
    image, boxes = square_frame()
    for seed in range(8):
        out, moved = random_flips(image, boxes, torch.Generator().manual_seed(seed))
        assert box_pixels(moved[0]) == pytest.approx(box_of_white(out))
