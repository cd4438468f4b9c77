"""Synthetic blood-smear-like frames with YOLO labels, for tests, demos and benchmarks.

    ddf_path = write_dataset(Path("out"), num_images=64, image_hw=(192, 256),
                             class_names=("healthy", "ring", "trophozoite"), seed=0)

Frames are 8-bit grayscale: a bright, unevenly lit background packed with round cells of
near-uniform size (slightly elliptical, some cut by the frame edge). Class 0 is a plain cell
with a pale centre; the others carry a dark inclusion whose shape tells the class apart (ring,
blob, several dots, crescent, a large nucleated cell, a small free speck), cycling for more
classes. Classes are imbalanced as in real smears: class 0 makes up ~90% of objects.

`class_sizes` and `class_looks` give each class its own diameter (relative to a cell's) and
look (LOOKS), e.g. a small dark class at 0.35x and a large pale one at 2x, as platelets and
white cells are beside red cells:

    write_dataset(out, class_names=("cell", "ring", "small", "large"),
                  class_sizes=(1, 1, 0.35, 2), class_looks=("plain", "ring", "dark", "pale"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yogo.config import ImageFormat, SynthConfig, require_choice
from yogo.ddf import ddf_text, parse_split_override
from yogo.errors import UserError
from yogo.outputs import atomic_path, plan_folder, write_atomic

NUM_STYLES = 7  # the looks classes cycle through by default
# Every look by name, in style order: the first NUM_STYLES cycle, the rest are chosen by name.
LOOKS = ("plain", "ring", "blob", "dots", "crescent", "nucleus", "speck", "dark", "pale")


@dataclass(frozen=True)
class SmearSettings:
    """How frames look. Sizes are in pixels; `coverage` is the fraction of area under cells."""

    image_hw: tuple[int, int] = (192, 256)
    cell_diameter: float | None = None  # default: 6% of the shorter side, at least 12 px
    size_jitter: float = 0.06  # relative standard deviation of cell radii
    coverage: float = 0.3
    noise: float = 0.012  # standard deviation, intensity in [0, 1]
    class_sizes: tuple[float, ...] | None = None  # diameter per class, relative to a cell's
    class_looks: tuple[str, ...] | None = None  # LOOKS name per class
    brightness_jitter: float = 0.1  # an object's darkness varies by up to this fraction

    def style(self, class_index: int) -> int:
        if self.class_looks is None:
            return class_index % NUM_STYLES
        return LOOKS.index(self.class_looks[class_index])

    def scale(self, class_index: int) -> float:
        if self.class_sizes is None:
            return 1.5 if self.style(class_index) == 5 else 1.0  # white cells are larger
        return self.class_sizes[class_index]

    @property
    def diameter(self) -> float:
        if self.cell_diameter is not None:
            return self.cell_diameter
        return max(12.0, 0.06 * min(self.image_hw))


def default_class_frequencies(num_classes: int) -> np.ndarray:
    """Class 0 dominant, each further class half as common as the one before it."""
    weights = np.array([1.0] + [0.08 * 0.5**k for k in range(num_classes - 1)])
    frequencies: np.ndarray = weights / weights.sum()
    return frequencies


def make_frame(
    rng: np.random.Generator, settings: SmearSettings, class_frequencies: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One frame: uint8 `(H, W)` pixels and float32 `(N, 5)` boxes (class, xc, yc, w, h)."""
    height, width = settings.image_hw
    image = _background(rng, height, width)
    boxes = []
    for cy, cx, ry, rx, class_index in _place_cells(rng, settings, class_frequencies):
        _draw_cell(
            image, rng, cy, cx, ry, rx, settings.style(class_index), settings.brightness_jitter
        )
        boxes.append([float(class_index), *_clipped_box(cy, cx, ry, rx, height, width)])
    blurred = _blur(image)
    noisy = blurred + rng.normal(0, settings.noise, blurred.shape)
    pixels = np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)
    return pixels, np.array(boxes, dtype=np.float32).reshape(-1, 5)


def synthetic_frames(
    count: int, image_hw: tuple[int, int], channels: int, seed: int = 0
) -> np.ndarray:
    """`count` smear frames as uint8 (count, channels, H, W), e.g. to check an exported model
    when no real images are at hand."""
    rng = np.random.default_rng(seed)
    settings = SmearSettings(image_hw=image_hw)
    frequencies = default_class_frequencies(3)
    frames = [make_frame(rng, settings, frequencies)[0] for _ in range(count)]
    return np.repeat(np.stack(frames)[:, None], channels, axis=1)


def write_dataset(
    out_dir: str | Path,
    num_images: int = SynthConfig.num_images,
    image_hw: tuple[int, int] = SynthConfig.image_hw,
    class_names: Sequence[str] = SynthConfig.class_names,
    seed: int = SynthConfig.seed,
    split_fractions: tuple[float, float, float] = SynthConfig.split_fractions,
    class_frequencies: Sequence[float] | None = None,
    image_format: str = SynthConfig.image_format,
    cell_diameter: float | None = None,
    class_sizes: Sequence[float] | None = None,
    class_looks: Sequence[str] | None = None,
    size_jitter: float = SynthConfig.size_jitter,
    coverage: float = SynthConfig.coverage,
    brightness_jitter: float = SynthConfig.brightness_jitter,
) -> Path:
    """Write `images/`, `labels/` and `ddf.yml` into `out_dir` (new or empty); return the DDF.
    The arguments are `yogo.config.SynthConfig`'s fields (`write_dataset(**asdict(cfg))`)."""
    from PIL import Image

    out_dir = Path(out_dir)
    _validate(out_dir, num_images, image_hw, class_names, class_frequencies, image_format)
    split = parse_split_override(split_fractions, "--split-fractions")
    frequencies = (
        default_class_frequencies(len(class_names))
        if class_frequencies is None
        else np.asarray(class_frequencies, dtype=np.float64) / sum(class_frequencies)
    )
    if cell_diameter is not None and not 4 <= cell_diameter <= min(image_hw) / 2:
        raise UserError(
            f"--cell-diameter must be between 4 and half the shorter side, got {cell_diameter:g}"
        )
    _validate_per_class(class_names, class_sizes, class_looks)
    for name, value, high in (
        ("size-jitter", size_jitter, 0.3),
        ("coverage", coverage, 0.6),
        ("brightness-jitter", brightness_jitter, 0.5),
    ):
        if not 0 <= value <= high:
            raise UserError(f"--{name} must be between 0 and {high:g}, got {value:g}")
    settings = SmearSettings(
        image_hw=image_hw,
        cell_diameter=cell_diameter,
        size_jitter=size_jitter,
        coverage=coverage,
        brightness_jitter=brightness_jitter,
        class_sizes=tuple(class_sizes) if class_sizes is not None else None,
        class_looks=tuple(class_looks) if class_looks is not None else None,
    )
    plan_folder(out_dir, replace=False, option="OUT_DIR")
    rng = np.random.default_rng(seed)
    images, labels = out_dir / "images", out_dir / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(exist_ok=True)
    digits = max(4, len(str(num_images - 1)))
    for i in range(num_images):
        pixels, boxes = make_frame(rng, settings, frequencies)
        stem = f"frame_{i:0{digits}d}"
        with atomic_path(images / f"{stem}.{image_format}") as partial:  # same suffix: format
            Image.fromarray(pixels).save(partial)
        rows = (f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)
        write_atomic(labels / f"{stem}.txt", "".join(rows))
    ddf = out_dir / "ddf.yml"
    comment = f"Synthetic smear frames: {num_images} x {image_hw[0]}x{image_hw[1]}, seed {seed}."
    write_atomic(ddf, ddf_text(comment, class_names, split, [("synthetic", "images", "labels")]))
    return ddf


def _validate(
    out_dir: Path,
    num_images: int,
    image_hw: tuple[int, int],
    class_names: Sequence[str],
    class_frequencies: Sequence[float] | None,
    image_format: str,
) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(
            "output folder exists and is not empty", path=out_dir, fix="choose a new folder"
        )
    if num_images < 1:
        raise UserError(f"--num-images must be >= 1, got {num_images}")
    if min(image_hw) < 32:
        raise UserError(f"--image-hw must be at least 32 32, got {image_hw[0]} {image_hw[1]}")
    if not class_names or len(set(class_names)) != len(class_names):
        raise UserError("--class-names needs one or more distinct names")
    if class_frequencies is not None and (
        len(class_frequencies) != len(class_names)
        or min(class_frequencies) < 0
        or sum(class_frequencies) <= 0
    ):
        raise UserError(
            f"--class-frequencies needs {len(class_names)} non-negative numbers, one per class"
        )
    require_choice("image_format", image_format, ImageFormat)


def _validate_per_class(
    class_names: Sequence[str],
    class_sizes: Sequence[float] | None,
    class_looks: Sequence[str] | None,
) -> None:
    if class_sizes is not None and (
        len(class_sizes) != len(class_names) or not all(0.2 <= v <= 3 for v in class_sizes)
    ):
        raise UserError(
            f"--class-sizes needs {len(class_names)} numbers between 0.2 and 3, one per class "
            "(diameter relative to a cell's)"
        )
    if class_looks is not None and (
        len(class_looks) != len(class_names) or not set(class_looks) <= set(LOOKS)
    ):
        raise UserError(
            f"--class-looks needs {len(class_names)} names, one per class, from: "
            + ", ".join(LOOKS)
        )


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Bright field with uneven illumination (a tilted, off-centre vignette)."""
    ys = np.linspace(-1, 1, height)[:, None]
    xs = np.linspace(-1, 1, width)[None, :]
    oy, ox = rng.uniform(-0.5, 0.5, 2)
    tilt_y, tilt_x = rng.uniform(-0.04, 0.04, 2)
    level = rng.uniform(0.78, 0.86)
    field: np.ndarray = (
        level - 0.035 * ((ys - oy) ** 2 + (xs - ox) ** 2) + tilt_y * ys + tilt_x * xs
    )
    return field


def _place_cells(
    rng: np.random.Generator, settings: SmearSettings, class_frequencies: np.ndarray
) -> list[tuple[float, float, float, float, int]]:
    """Non-overlapping cells (cy, cx, ry, rx, class) by dart throwing, centres in the frame."""
    height, width = settings.image_hw
    radius = settings.diameter / 2
    spread = max(0.2, 3 * settings.size_jitter)  # sizes clipped at +-20% or 3 deviations
    target = int(settings.coverage * height * width / (np.pi * radius**2))
    centres = np.zeros((0, 2))
    radii = np.zeros(0)
    cells: list[tuple[float, float, float, float, int]] = []
    for _ in range(target * 6):
        if len(cells) >= target:
            break
        class_index = int(rng.choice(len(class_frequencies), p=class_frequencies))
        r = (
            settings.scale(class_index)
            * radius
            * float(np.clip(1 + settings.size_jitter * rng.normal(), 1 - spread, 1 + spread))
        )
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        if len(centres) and (np.hypot(*(centres - [cy, cx]).T) - radii - r).min() < 1.0:
            continue
        squash = rng.uniform(0.92, 1.0)
        ry, rx = (r, r * squash) if rng.random() < 0.5 else (r * squash, r)
        cells.append((cy, cx, ry, rx, class_index))
        centres = np.vstack([centres, [cy, cx]])
        radii = np.append(radii, r)
    return cells


def _draw_cell(
    image: np.ndarray,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    style: int,
    jitter: float = 0.1,
) -> None:
    """Darken `image` in place with one cell of the given style, its darkness varied by up to
    `jitter`."""
    height, width = image.shape
    y0, y1 = max(0, int(cy - ry - 2)), min(height, int(cy + ry + 3))
    x0, x1 = max(0, int(cx - rx - 2)), min(width, int(cx + rx + 3))
    ys = np.arange(y0, y1)[:, None] + 0.5
    xs = np.arange(x0, x1)[None, :] + 0.5
    dy, dx = (ys - cy) / ry, (xs - cx) / rx
    rho = np.sqrt(dy**2 + dx**2)
    inside = np.clip((1 - rho) * min(ry, rx) + 0.5, 0, 1)  # anti-aliased edge, ~1 px wide
    patch = image[y0:y1, x0:x1]
    if style == 6:  # a free speck (platelet-like): small and dark, no cell body
        speck = np.clip((0.45 - rho) * min(ry, rx) + 0.5, 0, 1)
        patch -= 0.45 * speck
        return
    if style == 7:  # dark: a small solid dark body filling its box (platelet, free parasite)
        patch -= inside * (0.38 + 0.08 * rho**2) * rng.uniform(1 - jitter, 1 + jitter)
        return
    if style == 8:  # pale: a large faint cell with a granular texture (a white cell's cytoplasm)
        grain = rng.normal(0, 0.02, patch.shape)
        patch -= inside * (0.07 + 0.05 * rho**2 + grain)
        return
    body = 0.16 + 0.08 * rho**2  # darker rim, paler centre
    patch -= inside * body * rng.uniform(1 - jitter, 1 + jitter)
    if style == 0:
        return
    oy, ox = rng.uniform(-0.3, 0.3, 2)
    if style == 1:  # ring form: thin dark ring with a chromatin dot
        r = np.sqrt((dy - oy) ** 2 + (dx - ox) ** 2)
        patch -= inside * 0.5 * np.exp(-(((r - 0.33) / 0.09) ** 2))
        patch -= inside * 0.3 * np.exp(-(((dy - oy + 0.33) ** 2 + (dx - ox) ** 2) / 0.015))
    elif style == 2:  # trophozoite: a large irregular dark blob
        for _ in range(3):
            by, bx = oy + rng.uniform(-0.15, 0.15), ox + rng.uniform(-0.15, 0.15)
            patch -= inside * 0.28 * np.exp(-((dy - by) ** 2 + (dx - bx) ** 2) / 0.06)
    elif style == 3:  # schizont: several small dots
        for _ in range(int(rng.integers(6, 10))):
            by, bx = rng.uniform(-0.55, 0.55, 2)
            patch -= inside * 0.35 * np.exp(-((dy - by) ** 2 + (dx - bx) ** 2) / 0.012)
    elif style == 4:  # gametocyte: a dark crescent along the cell
        angle = rng.uniform(0, np.pi)
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        patch -= inside * 0.4 * np.exp(-((u / 0.7) ** 2 + ((v - 0.25 * u**2) / 0.18) ** 2))
    elif style == 5:  # white cell: dark lobed nucleus
        for _ in range(3):
            by, bx = rng.uniform(-0.35, 0.35, 2)
            patch -= inside * 0.3 * np.exp(-((dy - by) ** 2 + (dx - bx) ** 2) / 0.05)


def _clipped_box(
    cy: float, cx: float, ry: float, rx: float, height: int, width: int
) -> tuple[float, float, float, float]:
    """The cell's box clipped to the frame, normalised (xc, yc, w, h)."""
    x0, x1 = max(0.0, cx - rx), min(float(width), cx + rx)
    y0, y1 = max(0.0, cy - ry), min(float(height), cy + ry)
    return (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height


def _blur(image: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge replication: the optics are not perfectly sharp."""
    padded = np.pad(image, 1, mode="edge")
    rows = (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4
    blurred: np.ndarray = (rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]) / 4
    return blurred
