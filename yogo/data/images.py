"""Finding and decoding one image: lookup by stem, header reads, planes to the model's channels
and bit depth (yogo.data.channels).

    index = index_images(Path("run1/images"))       # stem -> path, plus ambiguous stems
    header = read_header(index.by_stem["img_001"])   # ImageHeader(height=772, width=1032, ...)
    pixels = decode_image(index.by_stem["img_001"], channels=1)   # uint8 (1, H, W)
    pixels = decode_image(path, channels=2, bit_depth=16)          # uint16 (2, H, W)

Pillow is imported inside the functions that need it so `yogo --help` stays instant.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from yogo.data.channels import ChannelError, planes_of, to_channels, to_depth
from yogo.errors import display_path

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# Lookup order when one stem has several images: the first listed wins (and a warning says so).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_COLOR_MODES = {"P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
# Multi-page files already warned about in this process. Loader workers fork after the dataset
# scan has read every header, so a run warns once per file, not once per worker or epoch.
_warned_multi_page: set[Path] = set()


class ImageError(ValueError):
    """An image that cannot be used; the message says why in the user's words."""


class ChannelMismatch(ImageError):
    """A readable frame whose channels are not the model's (not a damaged file: the data and
    the model disagree, so callers stop with the fix rather than skip the frame)."""


@dataclass(frozen=True)
class ImageIndex:
    """Images of one folder by file stem. `ambiguous` lists stems with several images."""

    by_stem: dict[str, Path]
    ambiguous: dict[str, tuple[Path, ...]]


@dataclass(frozen=True)
class ImageHeader:
    height: int
    width: int
    channels: int  # 1 (gray) or 3 (colour) as stored in the file
    bit_depth: int  # 8 or 16
    pages: int = 1  # pages (frames) in the file; only the first is used by gray/RGB models
    samples: int = 1  # samples per pixel: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA

    @property
    def planes(self) -> int:
        """The channels an N-channel model reads from it (yogo.data.channels)."""
        return self.pages if self.pages > 1 else self.samples


def child_paths(folder: Path, names: Sequence[str]) -> list[Path]:
    """`[folder / name for name in names]` for names a folder listing gave (no separator, not
    "." or ".."). On CPython 3.11 and older each `/` parses its argument again, which cost a
    run's start a second per 100k label files and images; there the parts are joined
    directly (pathlib's own constructor of derived paths). Newer pathlib takes the plain way."""
    make = getattr(type(folder), "_from_parsed_parts", None)
    parts = getattr(folder, "_parts", None)
    if sys.version_info >= (3, 12) or make is None or parts is None:
        return [folder / name for name in names]
    drive, root = getattr(folder, "_drv"), getattr(folder, "_root")  # noqa: B009
    return [make(drive, root, [*parts, name]) for name in names]


def index_images(folder: Path) -> ImageIndex:
    """Every image file directly in `folder` (extensions of IMAGE_EXTENSIONS, any case)."""
    found: dict[str, list[str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in IMAGE_EXTENSIONS and entry.is_file():
                found.setdefault(stem, []).append(entry.name)
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    ambiguous: dict[str, tuple[Path, ...]] = {}
    for stem, names in found.items():
        if len(names) > 1:
            names.sort(key=lambda name: (rank[os.path.splitext(name)[1].lower()], name))
            ambiguous[stem] = tuple(child_paths(folder, names))
    chosen = child_paths(folder, [names[0] for names in found.values()])
    return ImageIndex(dict(zip(found, chosen, strict=True)), ambiguous)


def read_header(path: Path) -> ImageHeader:
    """Size, channel count and bit depth from the file header, without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
            pages = _pages(path, image)
    except FileNotFoundError:
        raise ImageError("image file does not exist") from None
    except UnidentifiedImageError:
        size = path.stat().st_size
        reason = "file is empty" if size == 0 else "not a readable image (PNG, JPEG, TIFF, BMP)"
        raise ImageError(reason) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image header cannot be read: {e}") from None
    depth = 16 if mode in _SIXTEEN_BIT_MODES else 8
    samples = {"LA": 2, "PA": 2, "RGBA": 4}.get(mode, _channels_of(mode))
    return ImageHeader(height, width, _channels_of(mode), depth, pages, samples)


def decode_image(path: Path, channels: int, bit_depth: int = 8) -> np.ndarray:
    """The whole image as `(channels, H, W)`, uint8 for `bit_depth` 8 (16-bit values scaled
    to 0..255), uint16 for 16 (8-bit values times 257); yogo.data.channels has the rules.

    Gray to RGB repeats the plane; RGB to gray uses ITU-R 601 luma (Pillow's `convert("L")`
    at 8 bits). Of a multi-page file (TIFF stack), the first page for gray and RGB models (a
    warning says so once per file), every page, one per channel, for other channel counts.
    Raises ImageError for unreadable, truncated or corrupt files and for a frame whose
    channels are not the model's.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if channels in (1, 3) and bit_depth == 8:
                pixels = _to_uint8(image, channels)
            else:
                pixels = _planes(image, path, channels, bit_depth)
            _pages(path, image, warn=channels in (1, 3))  # after decoding: counting pages
    except UnidentifiedImageError:
        raise ImageError("not a readable image (PNG, JPEG, TIFF, BMP)") from None
    except ChannelError as e:
        raise ChannelMismatch(str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image cannot be decoded: {e}") from None
    return pixels


def _planes(image: Image.Image, path: Path, channels: int, bit_depth: int) -> np.ndarray:
    """The frame as `channels` planes at `bit_depth` (gray, RGB and 8 bits aside)."""
    _channels_of(image.mode)  # refuses formats we cannot convert faithfully
    stack = channels not in (1, 3)
    planes = planes_of(image, path, stack, bit_depth)
    pages = int(getattr(image, "n_frames", 1))
    what = f"{pages} pages" if stack and pages > 1 else f"{len(planes)} sample(s) per pixel"
    return to_depth(to_channels(planes, channels, what), bit_depth)


def _pages(path: Path, image: Image.Image, warn: bool = True) -> int:
    """The number of pages (frames) of an open image; with `warn`, warns once per file when
    it is more than one, since only the first is used."""
    try:
        pages = int(getattr(image, "n_frames", 1))
        count = f"{pages} pages"
    except (EOFError, OSError, SyntaxError, TypeError, ValueError):
        # Pillow counts pages by reading the header of each; a damaged later page stops it.
        pages, count = 2, "more than one page (a later one is damaged)"
    if warn and pages > 1 and path not in _warned_multi_page:
        _warned_multi_page.add(path)
        log.warning(
            f"{display_path(path)}: has {count}; gray and RGB models use only page 1 "
            "(--channels N reads N pages as N channels)"
        )
    return pages


def _channels_of(mode: str) -> int:
    if mode in _GRAY_MODES:
        return 1
    if mode in _COLOR_MODES:
        return 3
    raise ImageError(f"unsupported pixel format '{mode}'; save it as 8- or 16-bit gray or RGB")


def _to_uint8(image: Image.Image, channels: int) -> np.ndarray:
    _channels_of(image.mode)  # refuses formats we cannot convert faithfully
    if image.mode in _SIXTEEN_BIT_MODES:
        return array_to_uint8(np.clip(np.asarray(image), 0, 65535).astype(np.uint16), channels)
    if channels == 1:
        gray = image if image.mode == "L" else image.convert("L")
        plane = np.array(gray, dtype=np.uint8)[None]
        return plane
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    planes: np.ndarray = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    return np.ascontiguousarray(planes)


def array_to_uint8(pixels: np.ndarray, channels: int) -> np.ndarray:
    """A uint8 or uint16 frame, (H, W) or (H, W, C), as uint8 `(channels, H, W)`: the same
    values an image file of those pixels decodes to (16-bit scaled to 0..255, RGB to gray with
    Pillow's luma, gray repeated to RGB)."""
    pixels = to_depth(pixels, 8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        return np.repeat(np.ascontiguousarray(pixels)[None], channels, axis=0)
    from PIL import Image

    rgb = Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]), "RGB")
    return _to_uint8(rgb, channels)


def array_to_frame(
    pixels: np.ndarray, channels: int, bit_depth: int, channel_axis: int = -1
) -> np.ndarray:
    """A uint8 or uint16 array, (H, W) or with a channel axis (last, or `channel_axis`), as
    the model's `(channels, H, W)` at `bit_depth` (yogo.data.channels has the rules); gray
    and RGB at 8 bits exactly as `array_to_uint8`. Raises ImageError when the channels do not
    fit the model."""
    planes = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, channel_axis, 0)
    if bit_depth == 8 and channels in (1, 3) and planes.shape[0] in (1, 3, 4):
        return array_to_uint8(np.moveaxis(planes, 0, -1), channels)
    try:
        fitted = to_channels(planes, channels, f"{planes.shape[0]} channels in the array")
    except ChannelError as e:
        raise ChannelMismatch(str(e)) from None
    return np.ascontiguousarray(to_depth(fitted, bit_depth))


def survey_thumbnails(
    folders: dict[str, tuple[Path, ...]], frame_hw: tuple[int, int]
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(path, class name) of each thumbnail that can be pasted into frames of `frame_hw`
    (the smallest training frame), and (path, reason) of each that cannot: unreadable, or
    not smaller than the frame; an image folder with no image is a reason too."""
    usable, unusable = [], []
    for name, dirs in folders.items():
        for folder in dirs:
            files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
            if not files:
                unusable.append((folder, f"no image files in the '{name}' thumbnail folder"))
            for path in files:
                try:
                    h, w = decode_image(path, 1).shape[1:]
                except ImageError as e:
                    unusable.append((path, str(e)))
                    continue
                if h < frame_hw[0] and w < frame_hw[1]:
                    usable.append((path, name))
                else:
                    size = f"{frame_hw[0]} x {frame_hw[1]}"
                    unusable.append((path, f"{h} x {w} px, not smaller than the {size} frames"))
    return usable, unusable
