"""Training images per second end to end (`yogo train` as a user runs it, validation left out)
against the same model, optimiser and batch on tensors already on the device (model only),
and optionally against another checkout of yogo (the figure before a change), in one run.

    yogo synth /tmp/smear --num-images 240 --image-hw 192 256
    python benchmarks/bench_train.py /tmp/smear/ddf.yml [--batch-size 16] [--epochs 4]
        [--model base_model] [--seconds 20] [--before OTHER_CHECKOUT] [other yogo train flags]

(`--device cuda --num-workers 8 --cache ram --compile`: `yogo train` flags, which the
model-only steps follow too; `--seconds 0` leaves the model-only steps out.)

Prints `name: value` lines: `epoch N train images/s` (from the run's metrics.csv, which
times the training loop only), `train images/s` (epochs after the first: the frame cache is
warm), `model-only images/s`, `end-to-end / model-only`, and with --before the same run of
the other checkout (`before train images/s`, `speedup vs before`).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def train_rates(tree: Path, ddf: str, out: Path, flags: list[str]) -> list[float]:
    """Run `python -m yogo train` of the checkout `tree`; images/s of each epoch."""
    command = [sys.executable, "-m", "yogo", "train", str(Path(ddf).resolve()), *flags]
    command += ["--no-wandb", "--output-dir", str(out), "--name", "bench"]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with (out / "bench" / "metrics.csv").open() as f:
        return [float(row["images_per_s"]) for row in csv.DictReader(f)]


def steady(rates: list[float]) -> float:
    return float(np.mean(rates[1:])) if len(rates) > 1 else rates[0]


def model_only(run: Path, seconds: float) -> float:
    """Training steps of the run's model (from its last.pth), optimiser, precision and memory
    order on one fixed batch already on the device (its first training frames and labels)."""
    from yogo.config import load_config
    from yogo.data.dataset import DetectionDataset
    from yogo.data.loader import collate
    from yogo.data.scan import scan_dataset
    from yogo.ddf import DatasetDefinition
    from yogo.dist import resolve_device
    from yogo.model.boxes import build_targets
    from yogo.model.checkpoint import load_checkpoint
    from yogo.model.loss import LossSettings, YOGOLoss
    from yogo.training.optim import make_optimizer, precision_context

    cfg = load_config(run / "config.yaml")
    assert cfg.batch_size is not None
    device = resolve_device(cfg.device)  # the run's
    model = load_checkpoint(run / "last.pth").build_model().to(device)
    config = model.config
    samples = scan_dataset(DatasetDefinition.from_yaml(cfg.ddf)).splits["train"]
    dataset = DetectionDataset(samples[: cfg.batch_size], config.image_hw, config.channels)
    batch = collate([dataset[i] for i in range(len(dataset))])
    images = batch.images.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    net: torch.nn.Module = torch.compile(model) if cfg.compile else model  # type: ignore[assignment]
    targets = build_targets(batch.labels, len(dataset), config.grid, device)
    loss_fn = YOGOLoss(LossSettings())
    optimizer = make_optimizer(model, cfg)
    autocast, scaler = precision_context(cfg.precision, device)

    def step() -> None:
        with autocast():
            raw = net(images)
        loss = loss_fn(raw, targets, model.anchors)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up (and the compile)
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ddf")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--model", default="base_model")
    parser.add_argument("--seconds", type=float, default=20.0, help="model-only timing (0: none)")
    parser.add_argument("--before", type=Path, help="another yogo checkout to compare with")
    args, more = parser.parse_known_args()  # the rest: yogo train flags
    flags = ["--epochs", str(args.epochs), "-bs", str(args.batch_size), "--model", args.model]
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        rates = train_rates(REPO, args.ddf, Path(tmp) / "now", [*flags, *more])
        for epoch, rate in enumerate(rates, start=1):
            print(f"epoch {epoch} train images/s: {rate:.1f}")
        fast = steady(rates)
        print(f"train images/s: {fast:.1f}")
        if args.seconds > 0:
            alone = model_only(Path(tmp) / "now" / "bench", args.seconds)
            print(f"model-only images/s: {alone:.1f}")
            print(f"end-to-end / model-only: {fast / alone:.2f}")
        if args.before:
            before = train_rates(args.before, args.ddf, Path(tmp) / "before", flags)
            for epoch, rate in enumerate(before, start=1):
                print(f"before epoch {epoch} train images/s: {rate:.1f}")
            print(f"before train images/s: {steady(before):.1f}")
            print(f"speedup vs before: {fast / steady(before):.2f}")


if __name__ == "__main__":
    main()
