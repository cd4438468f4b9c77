"""How the planes of one frame become the model's channels, and at which bit depth.

    planes = planes_of(image, path)                      # (K, H, W) uint8 or uint16, as stored
    pixels = to_channels(planes, channels=2, path=path)  # (2, H, W), or ChannelError
    pixels = to_depth(pixels, bit_depth=16)              # uint16 (8-bit values times 257)

A frame's planes are its pages when it is a stack of gray pages (a multi-page TIFF), else its
samples per pixel (gray 1, gray + alpha 2, RGB 3, RGBA 4). Gray and RGB models keep YOGO's
rules: RGB to gray by luma, gray repeated to RGB, page 1 of a stack. Any other channel count
(`--channels N`) takes the planes as they are, and a frame with another count is refused: no
plane is invented or dropped for the user. Bit depth changes only when the model's differs
from the file's: 16 to 8 rounds (an 8-bit model, as before), 8 to 16 multiplies by 257 (0 and
255 map to 0 and 65535), so a 16-bit model never sees a frame squashed to 8 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_GRAY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N"}
# Pillow decodes colour PNGs of 16 bits per sample to 8 bits; the file header says so.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {2: "RGB", 4: "gray + alpha", 6: "RGBA"}


class ChannelError(ValueError):
    """A frame whose planes are not the model's channels; the message names both counts."""


def planes_of(image: Image.Image, path: Path, stack: bool, bit_depth: int) -> np.ndarray:
    """The frame's planes as stored, (K, H, W) uint8 or uint16: the pages of a gray stack
    when `stack` (a model of N channels other than 1 and 3), else the first page's samples.
    For a 16-bit model a 16-bit colour PNG is refused: its decoder squashes it to 8 bits."""
    if bit_depth == 16:
        _refuse_png16_colour(path)
    pages = int(getattr(image, "n_frames", 1))
    if stack and pages > 1:
        planes = []
        for page in range(pages):
            image.seek(page)
            if image.mode not in _GRAY_MODES:
                raise ChannelError(
                    f"page {page + 1} of the {pages}-page stack is {image.mode}; each page of a "
                    "stack is one gray channel"
                )
            planes.append(_gray(image))
        if len({p.shape for p in planes}) > 1:
            raise ChannelError(f"the {pages} pages of the stack differ in size")
        image.seek(0)
        return np.stack(planes)
    if image.mode in _GRAY_MODES:
        return _gray(image)[None]
    if image.mode in ("LA", "RGB", "RGBA"):
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    rgb = image.convert("RGBA" if "A" in image.mode else "RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def to_channels(planes: np.ndarray, channels: int, what: str) -> np.ndarray:
    """`planes` (K, H, W) as the model's `channels` (C, H, W). `what` describes where the
    planes came from (e.g. "3 samples per pixel") for the error."""
    count = planes.shape[0]
    if count == channels:
        return planes
    if channels in (1, 3) and count in (1, 2, 3, 4):
        colour = planes[:3] if count >= 3 else planes[:1]
        if channels == 3:
            return np.repeat(colour, 3, axis=0) if len(colour) == 1 else colour
        return luma(colour) if len(colour) == 3 else colour
    raise ChannelError(
        f"has {count} channel(s) ({what}); the model takes {channels}. Give frames of "
        f"{channels} pages (a TIFF stack), {channels} samples per pixel, or a (T, {channels}, H, "
        f"W) zarr array, or train with --channels {count}"
    )


def luma(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) to (1, H, W) by ITU-R 601 luma, as Pillow's `convert("L")`, at either bit
    depth (Pillow does it in 8 bits only)."""
    top = 255 if rgb.dtype == np.uint8 else 65535
    weighted = rgb[0] * 0.299 + rgb[1] * 0.587 + rgb[2] * 0.114
    gray: np.ndarray = np.clip(np.rint(weighted), 0, top).astype(rgb.dtype)
    return gray[None]


def to_depth(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """`pixels` (any shape) as uint8 (`bit_depth` 8) or uint16 (16)."""
    if bit_depth == 16:
        if pixels.dtype == np.uint8:
            wide: np.ndarray = pixels.astype(np.uint16) * np.uint16(257)
            return wide
        return pixels
    if pixels.dtype == np.uint16:
        # Round to nearest: 0 -> 0 and 65535 -> 255 exactly.
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return pixels


def _gray(image: Image.Image) -> np.ndarray:
    if image.mode in SIXTEEN_BIT_MODES:
        plane: np.ndarray = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        return plane
    gray = image if image.mode == "L" else image.convert("L")
    return np.array(gray, dtype=np.uint8)


def _refuse_png16_colour(path: Path) -> None:
    if path.suffix.lower() != ".png":
        return
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[24] == 16 and head[25] in (2, 4, 6):
        raise ChannelError(
            f"is a 16-bit {_PNG_COLOUR_TYPES[head[25]]} PNG, which the image decoder reads as "
            "8 bits; save its channels as a 16-bit TIFF stack (one page per channel) or a zarr "
            "array to keep 16 bits"
        )


def display_planes(pixels: np.ndarray) -> np.ndarray:
    """A frame (C, H, W) as uint8 RGB (3, H, W) for pictures (never for the model): gray
    repeated, RGB as is; 16-bit channels stretched from their 0.5th to 99.5th percentile (a
    16-bit frame shown as value / 257 is often black); two channels as a false-colour
    composite, channel 0 in green and channel 1 in magenta; four or more, the first three."""
    planes = pixels
    if planes.dtype == np.uint16:
        planes = np.stack([_stretch(p) for p in planes])
    if len(planes) == 1:
        return np.repeat(planes, 3, axis=0)
    if len(planes) == 2:
        return np.stack([planes[1], planes[0], planes[1]])
    return planes[:3]


def _stretch(plane: np.ndarray) -> np.ndarray:
    low, high = np.percentile(plane, (0.5, 99.5))
    if high <= low:
        high = low + 1
    scaled = (plane.astype(np.float32) - low) / (high - low) * 255
    shown: np.ndarray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return shown
