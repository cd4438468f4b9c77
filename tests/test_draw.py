"""Readable drawings (yogo.evaluation.draw):
a canvas large enough for text, lines and labels scaled to
it, compact labels and a legend when cells are small, and the options of `--draw-boxes`."""

from __future__ import annotations

import numpy as np
import pytest

from yogo.evaluation.draw import COLOURS, MIN_SIDE, canvas_scale, draw_boxes, text_colour

NAMES = ("healthy", "ring", "trophozoite")


def _rgb(hex_colour: str) -> tuple[int, ...]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def _mask(image, hex_colour: str) -> np.ndarray:
    return (np.asarray(image)[..., :3] == _rgb(hex_colour)).all(axis=-1)


@pytest.mark.parametrize(("hw", "scale"), [((192, 256), 4), ((96, 128), 8), ((772, 1032), 1)])
def test_small_frames_are_drawn_on_a_canvas_large_enough_to_read(hw, scale) -> None:
    assert canvas_scale(*hw) == scale
    image = draw_boxes(np.zeros((1, *hw), np.uint8), np.zeros((0, 4)), np.zeros(0), NAMES)
    assert image.size == (hw[1] * scale, hw[0] * scale) and min(image.size) >= MIN_SIDE


def test_line_width_and_place_follow_the_box() -> None:
    pixels = np.full((1, 192, 256), 128, np.uint8)
    box = np.array([[0.25, 0.25, 0.75, 0.75]])
    image = draw_boxes(pixels, box, np.array([1]), NAMES, line_width=5, hide_labels=True)
    blue = _mask(image, COLOURS[1])
    column = blue[:, 512]  # through the box's middle: the top and bottom edges
    rows = np.flatnonzero(column)
    top = rows[rows < 384]
    assert top.min() == 192 and len(top) == 5  # y0 = 0.25 of 768, 5 px thick


def test_a_crowded_frame_gets_short_labels_and_a_legend() -> None:
    """12 px cells at 192x256: a full 'trophozoite 0.93' tab would bury the neighbours; the
    tab shows the score and the legend names the colour."""
    pixels = np.full((1, 192, 256), 128, np.uint8)
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.1, 0.9, (40, 2))
    boxes = np.concatenate([centres - 0.025, centres + 0.025], axis=1)
    classes = np.arange(40) % 3
    crowded = draw_boxes(pixels, boxes, classes, NAMES, np.full(40, 0.93))
    assert _legend(crowded)
    roomy = draw_boxes(pixels, np.array([[0.1, 0.1, 0.9, 0.9]]), np.array([2]), NAMES, [0.9])
    assert not _legend(roomy)  # a big box: its full label, no legend


def test_hidden_labels_and_scores() -> None:
    pixels = np.full((1, 192, 256), 128, np.uint8)
    box, cls = np.array([[0.1, 0.3, 0.9, 0.9]]), np.array([0])
    full = draw_boxes(pixels, box, cls, NAMES, np.array([0.9]))
    plain = draw_boxes(pixels, box, cls, NAMES, np.array([0.9]), hide_labels=True, hide_conf=True)
    assert _mask(full, COLOURS[0]).sum() > _mask(plain, COLOURS[0]).sum()  # no filled tab
    assert not _legend(full) and _legend(plain)  # without names, the legend names colours


def _legend(image) -> bool:
    """The legend's white column to the right of the 1024 px wide frame (it covered boxes in
    the frame's top-left corner)."""
    return image.width > 1024 and bool((np.asarray(image)[:3, 1024:] == 255).all())


def test_tab_text_is_black_or_white_by_contrast() -> None:
    """Black text sat on the dark blue tab."""
    assert text_colour("#0072B2") == "white"
    assert [text_colour(c) for c in COLOURS if c != "#0072B2"] == ["black"] * 6


def test_a_tab_that_would_cover_another_is_left_out() -> None:
    """Crowded --draw-boxes tabs overlapped unreadably: the surer box keeps its tab."""
    pixels = np.full((1, 192, 256), 128, np.uint8)
    boxes = np.array([[0.3, 0.3, 0.6, 0.6], [0.31, 0.31, 0.62, 0.62]])
    alone = draw_boxes(pixels, boxes[:1], np.array([0]), NAMES, np.array([0.5]))
    both = draw_boxes(pixels, boxes, np.array([0, 1]), NAMES, np.array([0.5, 0.9]))
    outline = draw_boxes(
        pixels, boxes[:1], np.array([0]), NAMES, np.array([0.5]), hide_conf=True, hide_labels=True
    )
    orange = _mask(both, COLOURS[0]).sum()
    assert orange < _mask(alone, COLOURS[0]).sum()  # its tab is gone ...
    assert abs(orange - _mask(outline, COLOURS[0])[:, :1024].sum()) < 200  # ... its box stays
    assert _mask(both, COLOURS[1]).sum() > _mask(outline, COLOURS[0]).sum()  # the surer tab
