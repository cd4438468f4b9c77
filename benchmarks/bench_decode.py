"""Frames decoded per second by each decoder on the registry, per file kind, on one core.

    python benchmarks/bench_decode.py [--image-hw 772 1032] [--frames 40]

Writes synthetic smear frames (yogo.data.synth) as 8-bit gray PNG, 16-bit gray PNG, JPEG
(quality 95) and TIFF (uncompressed and LZW) into a temporary folder, then decodes each file
with every decoder that can read that kind and is installed (Pillow, pyspng, OpenCV,
simplejpeg), checks that each decoder gives the same pixels as Pillow (JPEG: within 2 grey
levels, decoders differ in their IDCT; one that does not is reported, not timed), and prints
`KIND DECODER frames/s: X` lines.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from yogo.data.synth import SmearSettings, default_class_frequencies, make_frame

Decoder = Callable[[bytes], np.ndarray]


def pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def decoders() -> dict[str, dict[str, Decoder]]:
    """Per file kind, the decoders installed here (Pillow always)."""
    kinds = ("png8", "png16", "jpeg", "tiff", "tiff-lzw")
    found: dict[str, dict[str, Decoder]] = {kind: {"pillow": pillow} for kind in kinds}
    try:
        import pyspng

        for kind in ("png8", "png16"):
            found[kind]["pyspng"] = pyspng.load
    except ImportError:
        pass
    try:
        import cv2

        cv2.setNumThreads(1)

        def opencv(data: bytes) -> np.ndarray:
            flat = np.frombuffer(data, np.uint8)
            return cv2.imdecode(flat, cv2.IMREAD_UNCHANGED)

        for kind in kinds:
            found[kind]["opencv"] = opencv
    except ImportError:
        pass
    try:
        import simplejpeg

        found["jpeg"]["simplejpeg"] = lambda data: simplejpeg.decode_jpeg(data, colorspace="GRAY")[
            ..., 0
        ]
    except ImportError:
        pass
    return found


def same(got: np.ndarray, want: np.ndarray, tolerance: int) -> bool:
    if got.shape != want.shape:
        return False
    return bool(np.abs(got.astype(np.int32) - want).max() <= tolerance)


def encode(kind: str, pixels: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    if kind == "png16":
        Image.fromarray(pixels.astype(np.uint16) * 257).save(out, "PNG")
    elif kind == "jpeg":
        Image.fromarray(pixels).save(out, "JPEG", quality=95)
    elif kind == "tiff":
        Image.fromarray(pixels).save(out, "TIFF")
    elif kind == "tiff-lzw":
        Image.fromarray(pixels).save(out, "TIFF", compression="tiff_lzw")
    else:
        Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-hw", type=int, nargs=2, default=(772, 1032))
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    frames = [
        make_frame(rng, SmearSettings(tuple(args.image_hw)), default_class_frequencies(3))[0]
        for _ in range(4)
    ]
    print(f"frames: {args.frames} of {args.image_hw[0]}x{args.image_hw[1]} gray, one core")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, available in decoders().items():
            files = []
            for i in range(args.frames):
                path = Path(tmp) / f"{kind}{i}"
                path.write_bytes(encode(kind, frames[i % len(frames)]))
                files.append(path)
            reference = [pillow(p.read_bytes()).astype(np.int32) for p in files[:4]]
            for name, decode in available.items():
                tolerance = 2 if kind == "jpeg" else 0
                if not all(
                    same(decode(p.read_bytes()), want, tolerance)
                    for p, want in zip(files[:4], reference, strict=True)
                ):
                    print(f"{kind} {name} frames/s: wrong pixels (differs from Pillow)")
                    continue
                start = time.perf_counter()
                for p in files:
                    decode(p.read_bytes())
                rate = len(files) / (time.perf_counter() - start)
                print(f"{kind} {name} frames/s: {rate:.0f}")


if __name__ == "__main__":
    main()
