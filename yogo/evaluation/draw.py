"""Boxes drawn so people can read them: `yogo infer --draw-boxes` and the pictures of a run.

    image = draw_boxes(pixels, boxes, classes, class_names, scores)   # a PIL RGB image
    image.save("frame.png")

Readable at any size: a frame is drawn on a canvas at least `MIN_SIDE` px on its shorter side
(whole-number upscaling, so pixels stay sharp), lines and text scale with that canvas, and a
label goes on a filled tab in the class's colour, its text black or white by contrast. When
labels would be much wider than their boxes (a frame full of small cells), the tabs show only
the numbers (or nothing, for labels without them) and a legend beside the frame maps colours
to class names, so labels do not bury the cells; a tab that would cover another (the surer
one is drawn first) is left out, its box kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from yogo.data.channels import display_planes

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
    """`pixels` (C, H, W) (uint8 or uint16, any channels: yogo.data.channels.display_planes)
    with `boxes` (N, 4) x0, y0, x1, y1 normalised (0..1), their
    `classes` (N,) and, for predictions, `scores` (N,); a PIL RGB image of the upscaled canvas.
    `line_width` in canvas pixels (None: from the canvas size); `min_side` the canvas's
    shorter side at least (smaller for the tiles of a mosaic)."""
    from PIL import Image, ImageDraw, ImageFont

    planes = display_planes(pixels)
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
    shown = [
        "" if hide_conf or scores is None or np.isnan(scores[k]) else f"{scores[k]:.2f}"
        for k in range(len(classes))
    ]  # a NaN score: a label's box, drawn without one
    texts = [f"{name} {score}".strip() for name, score in zip(names, shown, strict=True)]
    # Crowded frames (labels much wider than their boxes) show scores only, all of them alike.
    widths = np.array([font.getlength(t) for t in texts])
    ratio = widths / np.maximum(pixel_boxes[:, 2] - pixel_boxes[:, 0], 1)
    crowded = bool(len(boxes)) and float(np.median(ratio)) > CROWDED
    for (x0, y0, x1, y1), cls in zip(pixel_boxes.tolist(), classes, strict=True):
        draw.rectangle((x0, y0, x1, y1), outline=colour(int(cls)), width=line)
    # Tabs, the surest first; one that would cover an earlier tab is left out (its box stays).
    order = np.argsort(-np.asarray(scores)) if scores is not None else range(len(classes))
    placed: list[tuple[float, float, float, float]] = []
    for k in order:
        text = shown[k] if crowded else texts[k]
        if not text:
            continue
        x0, y0 = pixel_boxes[k, :2].tolist()
        tab = _tab_box(font, (x0, y0), text, line, image.width)
        if any(_overlap(tab, other) for other in placed):
            continue
        placed.append(tab)
        _tab(draw, font, tab, text, colour(int(classes[k])), line)
    if (crowded or hide_labels) and len(boxes):
        return _with_legend(image, font, [int(c) for c in np.unique(classes)], class_names)
    return image


def _tab_box(
    font: Any, corner: tuple[float, float], text: str, line: int, width: int
) -> tuple[float, float, float, float]:
    """Where `text`'s tab goes: above the box's top-left corner (inside it at the top edge),
    moved left when it would leave the canvas (`width` px) on the right."""
    left, top, right, bottom = font.getbbox(text)
    tab_w, tab_h = right - left + 2 * line, bottom - top + 2 * line
    x, y = min(corner[0], width - tab_w), corner[1] - tab_h
    if y < 0:
        y = corner[1]
    return (x, y, x + tab_w, y + tab_h)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def text_colour(fill: str) -> str:
    """Black or white, whichever contrasts more with `fill` (WCAG 2 relative luminance):
    white on the dark blue, black on the others."""
    channels = [int(fill[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


def _tab(
    draw: Any, font: Any, tab: tuple[float, float, float, float], text: str, fill: str, line: int
) -> None:
    """`text` on a filled tab at `tab` (from _tab_box)."""
    left, top, _, _ = font.getbbox(text)
    draw.rectangle(tab, fill=fill)
    draw.text((tab[0] + line - left, tab[1] + line - top), text, fill=text_colour(fill), font=font)


def _with_legend(image: Any, font: Any, classes: list[int], class_names: Sequence[str]) -> Any:
    """`image` with colour swatches and class names in a white column to its right, where
    they cover no box."""
    from PIL import Image, ImageDraw

    _, top, _, bottom = font.getbbox("Ag")
    row = bottom - top + 6
    wide = int(max(font.getlength(class_names[c]) for c in classes) + row + 16)
    out = Image.new("RGB", (image.width + wide, image.height), "white")
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, c in enumerate(classes):
        x, y = image.width + 6, 3 + i * row
        draw.rectangle((x, y + 2, x + row - 4, y + row - 2), fill=colour(c))
        draw.text((x + row + 2, y + 3 - top), class_names[c], fill="black", font=font)
    return out


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
    """`image` with text above it (a line per line of `text`), on white."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(12, round(min(image.size) / 30)))
    lines = text.split("\n")
    _, top, _, bottom = font.getbbox("".join(lines))
    height = int(bottom - top) + 4
    band = height * len(lines) + 6
    out = Image.new("RGB", (image.width, image.height + band), "white")
    out.paste(image, (0, band))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((6, 5 - top + i * height), line, fill="black", font=font)
    return out
