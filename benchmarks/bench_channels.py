"""What 16-bit and N-channel frames cost yogo's loader, per frame, on one core.

    python benchmarks/bench_channels.py [--image-hw 772 1032] [--frames 20] [--rounds 3]

Writes synthetic smear frames (yogo.data.synth) as an 8-bit gray PNG, a 16-bit gray PNG and a
2-page 16-bit TIFF (phase + fluorescence) into a temporary folder, then times, with the kinds
taking turns in each round (the best round is printed, as the machine is shared):
`decode_image` at the model's channels and depth; `read_header` (what `yogo train` reads of
every training frame to choose the bit depth and check the channels); and the training
augmentation (flips, zoom, brightness/contrast/gamma, blur, noise) on the decoded frame.
Prints `KIND STEP frames/s: X` lines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from yogo.config import AugmentSettings
from yogo.data.images import decode_image, read_header
from yogo.data.synth import SmearSettings, default_class_frequencies, make_frame
from yogo.data.transforms import augment, random_flips

SETTINGS = AugmentSettings(
    translate=0.1, scale=0.1, brightness=0.1, contrast=0.1, gamma=0.1, blur=1.0, noise=2.0
)


def write_frames(folder: Path, hw: tuple[int, int], count: int) -> dict[str, tuple[int, int]]:
    """The frames of each kind; the kind's (channels, bit depth)."""
    rng = np.random.default_rng(0)
    frequencies = default_class_frequencies(1)
    for i in range(count):
        smear = make_frame(rng, SmearSettings(image_hw=hw), frequencies)[0].astype(np.uint16)
        Image.fromarray(smear.astype(np.uint8)).save(folder / f"gray8_{i}.png")
        Image.fromarray(smear * 257).save(folder / f"gray16_{i}.png")
        pages = [Image.fromarray(smear * 257), Image.fromarray((255 - smear) * 90)]
        pages[0].save(folder / f"two16_{i}.tif", save_all=True, append_images=pages[1:])
    return {"gray8": (1, 8), "gray16": (1, 16), "two16": (2, 16)}


def rate(step: Callable[[Path], object], paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        step(path)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-hw", type=int, nargs=2, default=(772, 1032))
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        kinds = write_frames(folder, tuple(args.image_hw), args.frames)
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for kind, (channels, depth) in kinds.items():
                paths = sorted(folder.glob(f"{kind}_*"))

                def augmented(path: Path, channels: int = channels, depth: int = depth) -> None:
                    image = torch.from_numpy(decode_image(path, channels, depth))
                    boxes = torch.zeros(0, 5)
                    generator = torch.Generator().manual_seed(0)
                    image, boxes = random_flips(image, boxes, generator)
                    augment(image, boxes, SETTINGS, generator)

                steps: dict[str, Callable[[Path], object]] = {
                    "decode": lambda p, c=channels, d=depth: decode_image(p, c, d),
                    "header": read_header,
                    "decode+augment": augmented,
                }
                for name, step in steps.items():
                    key = (kind, name)
                    best[key] = max(best.get(key, 0.0), rate(step, paths))
        for (kind, name), value in best.items():
            print(f"{kind} {name} frames/s: {value:.1f}")


if __name__ == "__main__":
    main()
