"""Where `yogo infer` reads its frames: image files (one file or a folder) or a zarr store.

    frames = open_frames(path_to_images="run1/", recursive=False)   # or path_to_zarr="run1.zarr"
    frames.names[i]                 # "sub/img_003.png" (relative to the folder), "run1.zarr/0017"
    frames.read(i, channels=1)      # uint8 (C, H, W); ImageError when it cannot be read
    frames.read(i, channels=2, bit_depth=16)   # uint16 (2, H, W)
    frames.stems[i]                 # Path("run1.zarr/0017"): labels/<stem>.txt, boxes/<stem>.png

A zarr store holds frames as the microscope writes them: one array of (H, W, N) as in YOGO
1.0.1, or (N, H, W), or (N, H, W, C), or (N, C, H, W) for frames of several channels (e.g.
phase and fluorescence); or a group of 2-D (or (H, W, C)) arrays, one per frame. uint8 or
uint16, converted to the model's bit depth as image files are; zarr format 2 or 3; a
directory store or a .zip. Frames are read one at a time, never the whole array, and each
loader worker opens the store itself (a pickled source carries only its path).
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.config import ZarrLayout, choices
from yogo.data.images import IMAGE_EXTENSIONS, ImageError, array_to_frame, decode_image
from yogo.errors import UserError, display_path

log = logging.getLogger(__name__)

ZARR_MISSING_FIX = "pip install 'yogo[zarr]'"
LAYOUTS = choices(ZarrLayout)


@dataclass
class ImageFiles:
    """Image files: `names` relative to `root` (the folder given, or a file's folder)."""

    root: Path
    paths: list[Path]

    @property
    def names(self) -> list[str]:
        return [str(p.relative_to(self.root)) for p in self.paths]

    @property
    def stems(self) -> list[Path]:
        return [p.relative_to(self.root).with_suffix("") for p in self.paths]

    @property
    def inputs(self) -> list[Path]:
        return self.paths

    @property
    def folder(self) -> Path:
        """Where the frames are: nothing is written under it."""
        return self.root

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int, channels: int, bit_depth: int = 8) -> np.ndarray:
        return decode_image(self.paths[i], channels, bit_depth)


class ZarrFrames:
    """The frames of a zarr store, named `<store>/<index>` (zero-padded) or, for a group of
    arrays, `<store>/<array name>`."""

    def __init__(self, path: Path, layout: str = "auto") -> None:
        self.path = path
        node = _open_zarr(path)
        self.keys: list[str] | None = None  # array names of a group of frames
        if _is_group(node):
            self.keys = _frame_arrays(node, path)
            self.layout = "group"
            self._labels = self.keys
        else:
            _require_pixels(node, path)
            self.layout = _layout(node, path, layout)
            shape = tuple(node.shape)
            area = {"hwn": shape[:2], "nchw": shape[2:4]}.get(self.layout, shape[1:3])
            _require_area(area, path)
            count = _frame_count(node, self.layout, path)
            width = len(str(count - 1))
            self._labels = [f"{i:0{width}d}" for i in range(count)]
        self._node: Any = node

    @property
    def names(self) -> list[str]:
        return [f"{self.path.name}/{label}" for label in self._labels]

    @property
    def stems(self) -> list[Path]:
        return [Path(self.path.stem) / label for label in self._labels]

    @property
    def inputs(self) -> list[Path]:
        return [self.path]

    @property
    def folder(self) -> Path:
        return self.path

    def __len__(self) -> int:
        return len(self._labels)

    def __getstate__(self) -> dict[str, Any]:
        # Loader workers get the path and open the store themselves: an open store (a zip file
        # handle, an event loop) is not safe to share across processes.
        return {**self.__dict__, "_node": None}

    def read(self, i: int, channels: int, bit_depth: int = 8) -> np.ndarray:
        if self._node is None:
            self._node = _open_zarr(self.path)
        try:
            if self.keys is not None:
                frame = self._node[self.keys[i]][...]
            elif self.layout == "hwn":
                frame = self._node[:, :, i]
            else:
                frame = self._node[i]
        except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as e:
            raise ImageError(f"frame cannot be read from the zarr store: {e}") from None
        pixels = np.asarray(frame)
        if not pixels.dtype.isnative:  # a big-endian store: torch reads native order only
            pixels = pixels.astype(pixels.dtype.newbyteorder("="))
        return array_to_frame(pixels, channels, bit_depth, 0 if self.layout == "nchw" else -1)


def open_frames(
    path_to_images: str | None, path_to_zarr: str | None, recursive: bool, layout: str = "auto"
) -> ImageFiles | ZarrFrames:
    """The frames to run on: exactly one of the two paths is given."""
    if (path_to_images is None) == (path_to_zarr is None):
        raise UserError(
            "give --path-to-images or --path-to-zarr (one of them)",
            fix="--path-to-images FOLDER for image files, --path-to-zarr STORE for a zarr store",
        )
    if path_to_zarr is not None:
        return ZarrFrames(Path(path_to_zarr), layout)
    assert path_to_images is not None
    return ImageFiles(*find_images(Path(path_to_images), recursive))


def find_images(path: Path, recursive: bool) -> tuple[Path, list[Path]]:
    """(the folder output names are relative to, the images in name order)."""
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise UserError("does not exist", path=path, fix="give an image or a folder of images")
    if is_zarr_store(path):
        raise UserError(
            "is a zarr store, not a folder of images", path=path, fix="use --path-to-zarr"
        )
    pattern = "**/*" if recursive else "*"
    images = sorted(
        p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        deeper = "" if recursive else " (add --recursive to look in sub-folders)"
        raise UserError(f"no PNG, JPEG, TIFF or BMP images here{deeper}", path=path)
    return path, images


def is_zarr_store(path: Path) -> bool:
    """A directory with zarr metadata (format 2 or 3) at its top."""
    return any((path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup"))


def _open_zarr(path: Path) -> Any:
    try:
        import zarr
    except ImportError:
        raise UserError(
            "reading zarr stores needs the zarr package", fix=ZARR_MISSING_FIX
        ) from None
    if not path.exists():
        raise UserError("does not exist", path=path, fix="give a zarr store (a folder or a .zip)")
    try:
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise UserError(
                    "is a file but not a zipped zarr store", path=path, fix="give a zarr store"
                )
            return zarr.open(zarr.storage.ZipStore(str(path), mode="r"), mode="r")
        return zarr.open(str(path), mode="r")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise UserError(
            f"is not a readable zarr store ({type(e).__name__}: {e})",
            path=path,
            fix="give the store's top folder (it holds zarr.json, .zarray or .zgroup)",
        ) from None


def _is_group(node: Any) -> bool:
    return hasattr(node, "arrays") and not hasattr(node, "dtype")


def _natural_key(name: str) -> tuple[Any, ...]:
    """ "img_2" before "img_10": digits compare as numbers."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _frame_arrays(group: Any, path: Path) -> list[str]:
    arrays = {name: array for name, array in group.arrays()}
    if not arrays:
        groups = sorted(name for name, _ in group.groups())
        if groups and path.is_dir():
            raise UserError(
                f"is a zarr group whose arrays are in sub-groups ({', '.join(groups)}), not at "
                "its top",
                path=path,
                fix=f"give the sub-group that holds the frames: --path-to-zarr "
                f"{display_path(path / groups[0])}",
            )
        raise UserError("is a zarr group without arrays", path=path, fix="give a store of frames")
    for name, array in arrays.items():
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise UserError(
                f"array '{name}' has shape {tuple(array.shape)}; a group's frames are (H, W) "
                "or (H, W, C) arrays",
                path=path,
            )
        _require_pixels(array, path)
        _require_area(tuple(array.shape[:2]), path, f"array '{name}'")
    return sorted(arrays, key=_natural_key)


def _layout(array: Any, path: Path, layout: str) -> str:
    """Which axis counts the frames: `layout` when given, else from the shape and chunks."""
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    if layout not in LAYOUTS:
        raise UserError(f"--zarr-layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    if array.ndim == 4 and layout in ("auto", "nhwc", "nchw"):
        if layout != "auto":
            return layout
        # The channel axis is the short one: (N, H, W, C) with C 1, 3 or 4 as cameras write
        # colour, else (N, C, H, W) as multichannel microscopes write planes.
        return "nhwc" if shape[3] in (1, 3, 4) and shape[1] > 4 else "nchw"
    if array.ndim != 3 or layout in ("nhwc", "nchw"):
        raise UserError(
            f"holds one array of shape {shape}; frames are (H, W, N), (N, H, W), (N, H, W, C) "
            "or (N, C, H, W)",
            path=path,
            fix="give a store of frames (or --zarr-layout for 3-D and 4-D arrays)",
        )
    if layout != "auto":
        return layout
    # A frame per chunk says which axis counts frames; else YOGO 1.0.1's (H, W, N).
    if chunks[0] == 1 and chunks[2] > 1:
        return "nhw"
    if chunks[2] == 1 and chunks[0] > 1:
        return "hwn"
    log.warning(
        f"{display_path(path)}: reading the {shape} array as (H, W, N) frames, as YOGO 1.0.1 "
        "did (--zarr-layout nhw for (N, H, W))"
    )
    return "hwn"


def _frame_count(array: Any, layout: str, path: Path) -> int:
    """Frames in the array. With one frame per chunk, chunks never written (a scope that
    stopped early) or holding only the fill value are said to read as blank frames. YOGO 1.0.1
    counted only stored chunks, which shifted every later frame after a blank one."""
    axis = 2 if layout == "hwn" else 0
    total = int(array.shape[axis])
    others = [a for a in range(array.ndim) if a != axis]
    per_frame = array.chunks[axis] == 1 and all(array.chunks[a] >= array.shape[a] for a in others)
    if per_frame:
        stored = int(array.nchunks_initialized)
        if stored < total:
            log.warning(
                f"{display_path(path)}: {total - stored} of {total} frames were never written "
                "(or hold only the fill value): they read as blank frames"
            )
    if total == 0:
        raise UserError("holds no frames", path=path)
    return total


def _require_area(hw: tuple[int, ...], path: Path, what: str = "its frames") -> None:
    if min(hw) < 1:
        raise UserError(
            f"{what}: frames of {hw[0]} x {hw[1]} pixels; a frame needs at least one row and "
            "one column",
            path=path,
            fix="check the array's shape (or --zarr-layout)",
        )


def _require_pixels(array: Any, path: Path) -> None:
    dtype = np.dtype(array.dtype)
    if dtype.kind != "u" or dtype.itemsize not in (1, 2):  # either byte order
        raise UserError(
            f"frames of type {array.dtype}; yogo reads uint8 and uint16 frames",
            path=path,
            fix="convert the frames to uint8 or uint16",
        )
