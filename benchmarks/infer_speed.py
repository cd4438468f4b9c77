"""Inference throughput on 772x1032 frames: PyTorch (.pth) vs onnxruntime (.onnx), side by side.

    python benchmarks/infer_speed.py --frames 64 --batch-size 8

Uses the YOGO 1.0.1 base_model checkpoint in tests/fixtures (772x1032, 7 classes), exports it
with `yogo export`, writes synthetic PNG frames, then measures in one run:
  - model only: images/s on an in-memory uint8 batch (after a warm-up batch)
  - end to end: `yogo infer --count` wall time (decode, resize, model, NMS, outputs)
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
import torch

FIXTURE = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/yogo-v1/base_model_7cls_772x1032.pth"
)


def model_only(
    checkpoint: Path, onnx_path: Path, batch: np.ndarray, repeats: int
) -> dict[str, float]:
    from yogo.deploy.predictor import load_predictor

    rates = {}
    for name, path in (("pth", checkpoint), ("onnx", onnx_path)):
        predictor = load_predictor(path, "cpu")
        predictor.run(batch)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            predictor.run(batch)
        rates[name] = repeats * len(batch) / (time.perf_counter() - start)
    return rates


def end_to_end(model: Path, images: Path, out: Path, batch_size: int) -> tuple[float, int]:
    """Seconds `yogo infer` takes (including its start-up), and the detections it made."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "yogo",
            "infer",
            str(model),
            "--path-to-images",
            str(images),
            "--output-dir",
            str(out),
            "--count",
            "--batch-size",
            str(batch_size),
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    return seconds, int(done.stdout.split(" detection(s)")[0].split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    from PIL import Image

    from yogo.config import ExportConfig
    from yogo.data.synth import synthetic_frames
    from yogo.deploy.export import export_onnx

    root = Path(tempfile.mkdtemp(prefix="yogo-infer-speed-"))
    try:
        checkpoint = root / "base_model.pth"
        shutil.copy(FIXTURE, checkpoint)
        onnx_path = export_onnx(ExportConfig(checkpoint=str(checkpoint))).path
        frames = synthetic_frames(8, (772, 1032), 1, seed=0)
        images = root / "frames"
        images.mkdir()
        for i in range(args.frames):
            Image.fromarray(frames[i % len(frames), 0]).save(images / f"frame_{i:04d}.png")
        batch = frames[: args.batch_size] if args.batch_size <= 8 else np.repeat(frames, 2, 0)
        rates = model_only(checkpoint, onnx_path, batch[: args.batch_size], repeats=4)
        single = images / "single"
        single.mkdir()
        shutil.copy(images / "frame_0000.png", single)
        startup = {}
        seconds, detections = {}, {}
        for kind, model in (("pth", checkpoint), ("onnx", onnx_path)):
            startup[kind] = end_to_end(model, single, root / f"one-{kind}", 1)[0]
            seconds[kind], detections[kind] = end_to_end(
                model, images, root / f"out-{kind}", args.batch_size
            )
    finally:
        shutil.rmtree(root)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"{args.frames} PNG frames 772x1032 gray, base_model (YOGO 1.0.1 fixture, random "
        f"weights: {detections['pth'] / args.frames:.0f} detections per frame), batch "
        f"{args.batch_size}\n"
    )
    print("| model | model only (img/s) | `yogo infer` (img/s) | start-up, 1 frame (s) |")
    print("|---|---|---|---|")
    for kind in ("pth", "onnx"):
        print(
            f"| .{kind} | {rates[kind]:.1f} | {args.frames / seconds[kind]:.1f} | "
            f"{startup[kind]:.1f} |"
        )
    print(
        f"\nonnx / pth: model only x{rates['onnx'] / rates['pth']:.2f}, `yogo infer` "
        f"x{seconds['pth'] / seconds['onnx']:.2f}"
    )


if __name__ == "__main__":
    main()
