"""How long `yogo check` (and the DDF load alone) takes on many label files, on one core.

    python benchmarks/check_speed.py --files 10000 100000

For each size it writes a dataset into a temporary folder (distinct label files and image files;
the pixels repeat a few synthetic frames so that writing stays quick), then times, in fresh
processes pinned to one CPU core:
  - start-up: `DatasetDefinition.from_yaml` (listing, matching, splitting)
  - `yogo check DDF` (every label parsed, every image header read, the report)
and prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from yogo.data.synth import SmearSettings, default_class_frequencies, make_frame

UNIQUE_FRAMES = 32


def build(root: Path, files: int, image_hw: tuple[int, int]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [
        make_frame(rng, SmearSettings(image_hw), default_class_frequencies(3))
        for _ in range(UNIQUE_FRAMES)
    ]
    encoded = []
    for i, (pixels, _) in enumerate(frames):
        Image.fromarray(pixels).save(root / f"frame{i}.png")
        encoded.append((root / f"frame{i}.png").read_bytes())
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for n in range(files):
        pixels_png = encoded[n % UNIQUE_FRAMES]
        boxes = frames[n % UNIQUE_FRAMES][1]
        (root / "images" / f"f{n:06d}.png").write_bytes(pixels_png)
        rows = "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)
        (root / "labels" / f"f{n:06d}.txt").write_text(rows)
    ddf = root / "ddf.yml"
    ddf.write_text(
        "class_names: [healthy, ring, trophozoite]\n"
        "dataset_split_fractions: {train: 0.8, val: 0.1, test: 0.1}\n"
        "dataset_paths:\n  bench: {image_path: images, label_path: labels}\n"
    )
    return ddf


def timed(command: list[str]) -> float:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    start = time.perf_counter()
    subprocess.run(pin + command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000])
    parser.add_argument("--image-hw", type=int, nargs=2, default=(192, 256))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = "import sys; from yogo import DatasetDefinition as D; D.from_yaml(sys.argv[1])"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"python {platform.python_version()}; one core (taskset -c 0); best of {args.repeats}"
    )
    print("| label files | DDF load (s) | `yogo check` (s) | label files/s |")
    print("|---:|---:|---:|---:|")
    for files in args.files:
        with tempfile.TemporaryDirectory() as tmp:
            ddf = build(Path(tmp), files, tuple(args.image_hw))
            # The first run warms the page cache, as a second `yogo check` would find it.
            timed([sys.executable, "-m", "yogo", "check", str(ddf)])
            startup = min(
                timed([sys.executable, "-c", load, str(ddf)]) for _ in range(args.repeats)
            )
            check = min(
                timed([sys.executable, "-m", "yogo", "check", str(ddf)])
                for _ in range(args.repeats)
            )
        print(f"| {files:,} | {startup:.2f} | {check:.2f} | {files / check:,.0f} |")


if __name__ == "__main__":
    main()
