"""Boxes drawn so people can read them: `yogo infer --draw-boxes` and the pictures of a run.

    image = draw_boxes(pixels, boxes, classes, class_names, scores)   # a PIL RGB image
    image.save("frame.png")

Readable at any size: a frame is drawn on a canvas at least `MIN_SIDE` px on its shorter side
(whole-number upscaling, so pixels stay sharp), lines and text scale with that canvas, and a
label goes on a filled tab in the class's colour. When a label would be much wider than its
box (a frame full of small cells), the tab shows only the score and a legend in the corner
maps colours to class names, so labels do not bury the cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# One colour per class (Okabe-Ito, readable for colour-blind users), cycling.
COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
MIN_SIDE = 768  # px: the shorter side of the canvas a frame is drawn on
CROWDED = 1.5  # a label wider than this many box widths shows only the score


def colour(class_index: int) -> str:
    return COLOURS[class_index % len(COLOURS)]


def canvas_scale(height: int, width: int) -> int:
    """The whole-number factor that brings the shorter side to at least MIN_SIDE px."""
    return max(1, math.ceil(MIN_SIDE / min(height, width)))


def draw_boxes(
    pixels: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    class_names: Sequence[str],
    scores: np.ndarray | None = None,
    line_width: int | None = None,
    hide_labels: bool = False,
    hide_conf: bool = False,
) -> Any:
    """`pixels` uint8 (C, H, W) with `boxes` (N, 4) x0, y0, x1, y1 normalised (0..1), their
    `classes` (N,) and, for predictions, `scores` (N,); a PIL RGB image of the upscaled canvas.
    `line_width` in canvas pixels (None: from the canvas size)."""
    from PIL import Image, ImageDraw, ImageFont

    planes = np.repeat(pixels, 3, axis=0) if len(pixels) == 1 else pixels[:3]
    height, width = planes.shape[1:]
    scale = canvas_scale(height, width)
    image = Image.fromarray(np.ascontiguousarray(planes.transpose(1, 2, 0)))
    if scale > 1:
        image = image.resize((width * scale, height * scale), Image.Resampling.NEAREST)
    side = min(image.size)
    line = line_width or max(1, round(side / 350))
    font = ImageFont.load_default(size=max(10, round(side / 60)))
    draw = ImageDraw.Draw(image)
    canvas = np.array([image.width, image.height] * 2)
    compacted = False
    for k, (box, cls) in enumerate(zip(boxes, classes.astype(np.int64), strict=True)):
        x0, y0, x1, y1 = (np.asarray(box) * canvas).tolist()
        draw.rectangle((x0, y0, x1, y1), outline=colour(int(cls)), width=line)
        name = "" if hide_labels else class_names[int(cls)]
        score = "" if hide_conf or scores is None else f"{scores[k]:.2f}"
        text = f"{name} {score}".strip()
        if name and font.getlength(text) > CROWDED * max(x1 - x0, 1):
            text, compacted = score, True
        if text:
            _tab(draw, font, (x0, y0), text, colour(int(cls)), line)
    if compacted or (hide_labels and len(boxes)):
        _legend(draw, font, [int(c) for c in np.unique(classes)], class_names)
    return image


def _tab(
    draw: Any, font: Any, corner: tuple[float, float], text: str, fill: str, line: int
) -> None:
    """`text` on a filled tab above the box's top-left corner (inside it at the top edge)."""
    left, top, right, bottom = font.getbbox(text)
    tab_h = bottom - top + 2 * line
    x, y = corner[0], corner[1] - tab_h
    if y < 0:
        y = corner[1]
    draw.rectangle((x, y, x + right - left + 2 * line, y + tab_h), fill=fill)
    draw.text((x + line - left, y + line - top), text, fill="black", font=font)


def _legend(draw: Any, font: Any, classes: list[int], class_names: Sequence[str]) -> None:
    """Colour swatches and class names in the top-left corner, on a white panel."""
    _, top, _, bottom = font.getbbox("Ag")
    row = bottom - top + 6
    wide = max(font.getlength(class_names[c]) for c in classes) + row + 12
    draw.rectangle((0, 0, wide, row * len(classes) + 6), fill="white")
    for i, c in enumerate(classes):
        y = 3 + i * row
        draw.rectangle((4, y + 2, 4 + row - 4, y + row - 2), fill=colour(c))
        draw.text((row + 6, y + 3 - top), class_names[c], fill="black", font=font)
