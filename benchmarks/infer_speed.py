"""Inference speed of every model format on this CPU, side by side, in one run.

    python benchmarks/infer_speed.py --rounds 3 --frames 16 --batch-size 8
        [--device cuda] [--formats "PyTorch fp32,onnxruntime fp32"]

Uses the YOGO 1.0.1 base_model checkpoint in tests/fixtures (772x1032, 7 classes; random
weights, so the int8 files are kept with --force-accuracy: this measures speed, the quality
set in docs/benchmarks.md measures accuracy). int8 calibrates on synthetic frames written with
the checkpoint's class names. Two measurements:
  - model only: frames/s of PyTorch, onnxruntime fp32 and int8, OpenVINO fp32, fp16 and int8
    on in-memory uint8 frames after a warm-up, at 772x1032 and on the scope's centred band of
    193 rows (--crop-height 0.25), at batch 1 (the scope's case) and batched. The formats take
    turns, round after round (the VM's speed drifts), and each keeps its best round.
  - end to end: `yogo infer --count` on a folder of PNG frames (decoding, the model, NMS,
    the outputs, and the process's start-up), for the .pth, the .onnx and the OpenVINO int8.
Prints Markdown tables for docs/benchmarks.md.

    python benchmarks/infer_speed.py --yogo-v1 /tmp/yogo101-venv/bin/yogo --rounds 3

With --yogo-v1 (YOGO 1.0.1's `yogo` console script; how to install it: docs/benchmarks.md
"Counting speed"), only the counting comparison instead: its `yogo infer --count` and ours,
taking turns on the same --frames PNG frames, whole process, each side's best; then ours in
this process: the model-only rate (frames/s of `Predictor.run` on in-memory frames) beside
infer's own rate over the same frames (its loop: decoding, model, NMS, outputs; no start-up).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
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
FORMATS = [  # (name, --format, --precision); None: the .pth through PyTorch
    ("PyTorch fp32", None, None),
    ("onnxruntime fp32", "onnx", "fp32"),
    ("onnxruntime int8", "onnx", "int8"),
    ("OpenVINO fp32", "openvino", "fp32"),
    ("OpenVINO fp16", "openvino", "fp16"),
    ("OpenVINO int8", "openvino", "int8"),
]
END_TO_END = ("PyTorch fp32", "onnxruntime fp32", "OpenVINO int8")
BAND = 0.25  # 193 of 772 rows


def export_all(
    checkpoint: Path, ddf: Path, root: Path, formats: list[tuple[str, str | None, str | None]]
) -> dict[tuple[str, float | None], Path]:
    from yogo.config import ExportConfig
    from yogo.deploy.export import export_onnx

    files: dict[tuple[str, float | None], Path] = {}
    for crop in (None, BAND):
        for name, fmt, precision in formats:
            if fmt is None:
                files[(name, crop)] = checkpoint
                continue
            suffix = ".xml" if fmt == "openvino" else ".onnx"
            cfg = ExportConfig(
                checkpoint=str(checkpoint),
                output_filename=str(root / f"{fmt}-{precision}-{crop or 1}{suffix}"),
                format=fmt,  # type: ignore[arg-type]
                precision=precision,  # type: ignore[arg-type]
                crop_height=crop,
                calibration=str(ddf),
                calibration_frames=32,
                force_accuracy=True,
            )
            files[(name, crop)] = export_onnx(cfg).path
    return files


def rate(predictor: object, frames: np.ndarray, batch: int) -> float:
    """Frames per second over `frames`, `batch` at a time."""
    run = predictor.run  # type: ignore[attr-defined]
    run(frames[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), batch):
        run(frames[i : i + batch])
    return len(frames) / (time.perf_counter() - start)


def end_to_end(model: Path, images: Path, out: Path, batch_size: int, device: str) -> float:
    """Seconds `yogo infer --count` takes on `images`, its start-up included."""
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable, "-m", "yogo", "infer", str(model), "--path-to-images", str(images),
            "--output-dir", str(out), "--count", "--batch-size", str(batch_size),
            "--device", device,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def counting_run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Seconds a whole `yogo infer` process takes, and what it printed."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout + done.stderr


def against_yogo_v1(v1: Path, rounds: int, count: int, batch_size: int, device: str) -> None:
    """YOGO 1.0.1's `yogo infer --count` and ours on the same frames, A/B/A/B."""
    from PIL import Image

    from yogo.data.synth import synthetic_frames
    from yogo.deploy.predictor import load_predictor

    root = Path(tempfile.mkdtemp(prefix="yogo-v1-speed-"))
    try:
        images = root / "frames"
        images.mkdir()
        frames = synthetic_frames(count, (772, 1032), 1, seed=0)
        for i, frame in enumerate(frames):
            Image.fromarray(frame[0]).save(images / f"frame_{i:04d}.png")
        theirs_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        theirs = [
            str(v1), "infer", str(FIXTURE), "--path-to-images", str(images), "--count",
            "--batch-size", str(batch_size), "--device", device, "--no-use-tqdm",
        ]  # fmt: skip
        best = {"YOGO 1.0.1": float("inf"), "yogo": float("inf")}
        loop_seconds = float("inf")
        for r in range(rounds):
            took_v1, _ = counting_run(theirs, root, theirs_env)
            best["YOGO 1.0.1"] = min(best["YOGO 1.0.1"], took_v1)
            ours = [
                sys.executable, "-m", "yogo", "infer", str(FIXTURE), "--path-to-images",
                str(images), "--count", "--batch-size", str(batch_size), "--device", device,
                "--output-dir", str(root / f"out-{r}"), "--no-use-tqdm",
            ]  # fmt: skip
            took, said = counting_run(ours, Path.cwd(), dict(os.environ))
            best["yogo"] = min(best["yogo"], took)
            found = re.search(r"detection\(s\) in ([0-9.]+) s \((.*?)\)", said)
            assert found, said
            loop_seconds, kind = min(loop_seconds, float(found[1])), found[2]
            print(f"round {r + 1}: YOGO 1.0.1 {took_v1:.1f} s, yogo {took:.1f} s", flush=True)
        predictor = load_predictor(FIXTURE, device)
        model_only = max(rate(predictor, frames, batch_size) for _ in range(rounds))
    finally:
        shutil.rmtree(root)
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; {count} PNG frames of 772x1032, `yogo infer --count "
        f"--batch-size {batch_size} --device {device}`, whole process, best of {rounds} "
        f"turns each; ours ran as {kind}\n"
    )
    print("| | seconds | frames/s |\n|---|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.1f} | {count / seconds:.2f} |")
    print(f"\nyogo / YOGO 1.0.1 speed: {best['YOGO 1.0.1'] / best['yogo']:.2f}x")
    print(
        f"model only: {model_only:.2f} frames/s; infer's loop (no start-up): "
        f"{count / loop_seconds:.2f} frames/s = {count / loop_seconds / model_only:.2f}x of it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (an .xml runs on the CPU)")
    parser.add_argument(
        "--formats", help="comma-separated names from the table (default: every format)"
    )
    parser.add_argument("--yogo-v1", type=Path, metavar="BIN", help="YOGO 1.0.1's yogo script")
    args = parser.parse_args()
    if args.yogo_v1 is not None:
        against_yogo_v1(args.yogo_v1, args.rounds, args.frames, args.batch_size, args.device)
        return
    chosen = args.formats.split(",") if args.formats else [name for name, _, _ in FORMATS]
    formats = [f for f in FORMATS if f[0] in chosen]
    if len(formats) < len(chosen):
        parser.error(f"--formats: each of {', '.join(name for name, _, _ in FORMATS)}")
    from PIL import Image

    from yogo.data.synth import synthetic_frames, write_dataset
    from yogo.deploy.predictor import load_predictor
    from yogo.model.checkpoint import load_checkpoint

    names = load_checkpoint(FIXTURE).model_config.class_names
    root = Path(tempfile.mkdtemp(prefix="yogo-infer-speed-"))
    try:
        checkpoint = root / "base_model.pth"
        shutil.copy(FIXTURE, checkpoint)
        ddf = write_dataset(
            root / "data", 40, (772, 1032), class_names=names, seed=1,
            split_fractions=(0.8, 0.1, 0.1),
        )  # fmt: skip
        files = export_all(checkpoint, ddf, root, formats)
        frames = synthetic_frames(args.frames, (772, 1032), 1, seed=0)
        images = root / "frames"
        images.mkdir()
        for i, frame in enumerate(frames):
            Image.fromarray(frame[0]).save(images / f"frame_{i:04d}.png")
        predictors = {
            key: load_predictor(path, args.device, key[1] if path.suffix == ".pth" else None)
            for key, path in files.items()
        }
        best: dict[tuple[str, float | None, int], float] = {}
        seconds: dict[str, float] = {}
        for r in range(args.rounds):  # A, B, C, ..., A, B, C, ...
            for (name, crop), predictor in predictors.items():
                for batch in (1, args.batch_size):
                    fps = rate(predictor, frames, batch)
                    best[(name, crop, batch)] = max(best.get((name, crop, batch), 0.0), fps)
            for name in (n for n in END_TO_END if n in chosen):
                out = root / f"out-{r}-{name}"
                took = end_to_end(files[(name, None)], images, out, 8, args.device)
                seconds[name] = min(seconds.get(name, float("inf")), took)
    finally:
        shutil.rmtree(root)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, --device {args.device}; "
        f"best of {args.rounds} rounds, {args.frames} frames each\n"
    )
    b = args.batch_size
    print(f"| format | 772x1032 batch 1 (frames/s) | batch {b} | 193x1032 batch 1 | batch {b} |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in formats:
        cells = [best[(name, crop, batch)] for crop in (None, BAND) for batch in (1, b)]
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    for crop, where in ((None, "772x1032"), (BAND, "193x1032 band")):
        if not {"OpenVINO int8", "onnxruntime fp32"} <= set(chosen):
            break
        ratio = best[("OpenVINO int8", crop, 1)] / best[("onnxruntime fp32", crop, 1)]
        print(f"\nOpenVINO int8 / onnxruntime fp32 at batch 1, {where}: {ratio:.2f}x")
    print(f"\n`yogo infer --count --batch-size 8` on {args.frames} PNG frames (with start-up):\n")
    print("| model | seconds | frames/s |")
    print("|---|---:|---:|")
    for name in (n for n in END_TO_END if n in chosen):
        print(f"| {name} | {seconds[name]:.1f} | {args.frames / seconds[name]:.2f} |")


if __name__ == "__main__":
    main()
