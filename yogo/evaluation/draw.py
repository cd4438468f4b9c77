"""Boxes drawn so people can read them: `yogo infer --draw-boxes` and the pictures of a run.

    image = draw_boxes(pixels, boxes, classes, class_names, scores)   # a PIL RGB image
    image.save("frame.png")

Readable at any size: a frame is drawn on a canvas at least `MIN_SIDE` px on its shorter side
(whole-number upscaling, so pixels stay sharp), lines and text scale with that canvas, and a
label goes on a filled tab in the class's colour. When labels would be much wider than their
boxes (a frame full of small cells), the tabs show only the scores (or nothing, for labels
without scores) and a legend in the corner maps colours to class names, so labels do not
bury the cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# One colour per class (Okabe-Ito, readable for colour-blind users), cycling.
COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
MIN_SIDE = 768  # px: the shorter side of the canvas a frame is drawn on
CROWDED = 1.2  # labels wider than this many box widths (median): scores only, and a legend


def colour(class_index: int) -> str:
    return COLOURS[class_index % len(COLOURS)]


def canvas_scale(height: int, width: int, min_side: int = MIN_SIDE) -> int:
    """The whole-number factor that brings the shorter side to at least `min_side` px."""
    return max(1, math.ceil(min_side / min(height, width)))


def draw_boxes(
    pixels: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    class_names: Sequence[str],
    scores: np.ndarray | None = None,
    line_width: int | None = None,
    hide_labels: bool = False,
    hide_conf: bool = False,
    min_side: int = MIN_SIDE,
) -> Any:
    """`pixels` uint8 (C, H, W) with `boxes` (N, 4) x0, y0, x1, y1 normalised (0..1), their
    `classes` (N,) and, for predictions, `scores` (N,); a PIL RGB image of the upscaled canvas.
    `line_width` in canvas pixels (None: from the canvas size); `min_side` the canvas's
    shorter side at least (smaller for the tiles of a mosaic)."""
    from PIL import Image, ImageDraw, ImageFont

    planes = np.repeat(pixels, 3, axis=0) if len(pixels) == 1 else pixels[:3]
    height, width = planes.shape[1:]
    scale = canvas_scale(height, width, min_side)
    image = Image.fromarray(np.ascontiguousarray(planes.transpose(1, 2, 0)))
    if scale > 1:
        image = image.resize((width * scale, height * scale), Image.Resampling.NEAREST)
    side = min(image.size)
    line = line_width or max(1, round(side / 350))
    font = ImageFont.load_default(size=max(10, round(side / 60)))
    draw = ImageDraw.Draw(image)
    canvas = np.array([image.width, image.height] * 2)
    pixel_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * canvas
    classes = np.asarray(classes).astype(np.int64)
    names = ["" if hide_labels else class_names[c] for c in classes]
    shown = ["" if hide_conf or scores is None else f"{scores[k]:.2f}" for k in range(len(classes))]
    texts = [f"{name} {score}".strip() for name, score in zip(names, shown, strict=True)]
    # Crowded frames (labels much wider than their boxes) show scores only, all of them alike.
    widths = np.array([font.getlength(t) for t in texts])
    ratio = widths / np.maximum(pixel_boxes[:, 2] - pixel_boxes[:, 0], 1)
    crowded = bool(len(boxes)) and float(np.median(ratio)) > CROWDED
    for k, ((x0, y0, x1, y1), cls) in enumerate(zip(pixel_boxes.tolist(), classes, strict=True)):
        draw.rectangle((x0, y0, x1, y1), outline=colour(int(cls)), width=line)
        text = shown[k] if crowded else texts[k]
        if text:
            _tab(draw, font, (x0, y0), text, colour(int(cls)), line)
    if (crowded or hide_labels) and len(boxes):
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


def mosaic(tiles: Sequence[Any], columns: int, gap: int = 6) -> Any:
    """PIL images in a grid, `columns` wide, on white; each cell as large as the largest."""
    from PIL import Image

    width = max(t.width for t in tiles)
    height = max(t.height for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new(
        "RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), "white"
    )
    for k, tile in enumerate(tiles):
        row, column = divmod(k, columns)
        sheet.paste(tile, (column * (width + gap), row * (height + gap)))
    return sheet


def caption(image: Any, text: str) -> Any:
    """`image` with a line of text above it, on white."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(12, round(min(image.size) / 30)))
    _, top, _, bottom = font.getbbox(text)
    band = int(bottom - top) + 10
    out = Image.new("RGB", (image.width, image.height + band), "white")
    out.paste(image, (0, band))
    ImageDraw.Draw(out).text((6, 5 - top), text, fill="black", font=font)
    return out
