"""`yogo audit` on a large label set: time and peak memory at two sizes, to show it streams.

    python benchmarks/audit_scale.py --unique 1000 --sizes 10000 100000

Writes `--unique` synthetic frames (96x128, 3 classes), trains a small model on them for 2
epochs, then builds DDFs of N label files by listing folders of hard links to those frames
(N / unique folders: the audit reads and decodes every one as a separate frame), and runs
`yogo audit` on each in a fresh process. Prints a Markdown table for docs/benchmarks.md.
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

# `yogo ARGS` in this process, then its own peak memory and its loader workers' (MiB).
MEASURED = """
import resource, sys
from yogo.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    if e.code:
        raise
mib = [resource.getrusage(w).ru_maxrss / 1024 for w in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN)]
print(*mib, file=sys.stderr)
"""


def linked_ddf(data: Path, copies: int, root: Path) -> Path:
    """A DDF over `copies` folders of hard links to `data`'s images and labels."""
    lines = [
        "class_names: [healthy, ring, trophozoite]",
        "dataset_split_fractions: {train: 1, val: 0, test: 0}",
        "dataset_paths:",
    ]
    for k in range(copies):
        for kind in ("images", "labels"):
            folder = root / f"copy{k:04d}" / kind
            folder.mkdir(parents=True)
            for path in (data / kind).iterdir():
                os.link(path, folder / path.name)
        lines += [
            f"  copy{k:04d}:",
            f"    image_path: copy{k:04d}/images",
            f"    label_path: copy{k:04d}/labels",
        ]
    ddf = root / "ddf.yml"
    ddf.write_text("\n".join(lines) + "\n")
    return ddf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unique", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    import yogo
    from yogo.data.synth import write_dataset

    root = Path(tempfile.mkdtemp(prefix="yogo-audit-scale-"))
    try:
        ddf = write_dataset(root / "data", args.unique, (96, 128), seed=4,
                            split_fractions=(0.8, 0.2, 0))  # fmt: skip
        settings = yogo.TrainConfig(
            ddf=str(ddf), epochs=2, wandb=False, output_dir=str(root / "runs"), name="m"
        )
        run = yogo.train(settings)
        rows = []
        for size in args.sizes:
            big = linked_ddf(ddf.parent, size // args.unique, root / f"set{size}")
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", MEASURED, "audit", str(run / "best.pth"), str(big),
                 "--output-dir", str(root / f"audit{size}")],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            main_mib, workers_mib = (float(v) for v in done.stderr.split()[-2:])
            with open(root / f"audit{size}" / "audit.csv") as f:
                lines = sum(1 for _ in f) - 1
            rows.append((size, lines, seconds, main_mib, workers_mib, done.stdout.splitlines()[0]))
            shutil.rmtree(root / f"set{size}")
    finally:
        shutil.rmtree(root)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; 96x128 frames, 3 classes\n")
    print("| label files | rows | time (s) | frames/s | peak memory, main / a worker (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for size, lines, seconds, main_mib, workers_mib, _ in rows:
        print(
            f"| {size:,} | {lines:,} | {seconds:.0f} | {size / seconds:.0f} | "
            f"{main_mib:.0f} / {workers_mib:.0f} |"
        )
    for row in rows:
        print(f"\n{row[0]:,}: {row[-1]}")


if __name__ == "__main__":
    main()
