"""Images per second from the training loader exactly as `yogo train` builds it, per epoch,
against a naive loader (decode the PNG and parse the label file every epoch, one worker), in
one run on the same files.

    yogo synth /tmp/big --num-images 200 --image-hw 772 1032
    python benchmarks/bench_loader.py /tmp/big/ddf.yml --epochs 3 [--batch-size 16]
        [--image-hw H W] [--cache auto|ram|disk|none] [--num-workers N] [--no-augment]
        [--augment-scale F ... --augment-noise F] [--copy-paste P]

Prints `name: value` lines: `epoch N images/s`, `images/s` (epochs after the first: a warm
cache), `naive images/s` and `speedup`. Loading only: no model, the batches are consumed as
they arrive.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from yogo.config import AUGMENT_STRENGTHS, ResolvedTrainConfig, TrainConfig
from yogo.data.loader import Loaders
from yogo.data.scan import LabelledSample
from yogo.data.setup import load_splits, make_data, paste_pool
from yogo.data.transforms import resize
from yogo.dist import DistContext
from yogo.model.network import ModelConfig
from yogo.outputs import plan_folder


class NaiveDataset(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """What a plain PyTorch loader does (YOGO 1.0.1's did about this): read the image file and
    the label text for every item, every epoch."""

    def __init__(self, samples: tuple[LabelledSample, ...], image_hw: tuple[int, int]) -> None:
        self.samples, self.image_hw = samples, image_hw

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        sample = self.samples[i]
        with Image.open(sample.image) as image:
            pixels = torch.from_numpy(np.array(image.convert("L")))[None]
        rows = np.loadtxt(sample.label, ndmin=2, dtype=np.float32).reshape(-1, 5)
        return resize(pixels, self.image_hw), torch.from_numpy(rows)


def naive_collate(
    items: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.stack([image for image, _ in items]), [boxes for _, boxes in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ddf")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-hw", type=int, nargs=2, default=None)
    parser.add_argument("--cache", default=TrainConfig.cache)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    for name in (*AUGMENT_STRENGTHS, "copy_paste"):  # strengths as `yogo train` takes them
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=0.0)
    args = parser.parse_args()
    cfg = ResolvedTrainConfig(
        ddf=args.ddf,
        batch_size=args.batch_size,
        cache=args.cache,
        num_workers=args.num_workers,
        augment=args.augment,
        copy_paste=args.copy_paste,
        **{name: getattr(args, name) for name in AUGMENT_STRENGTHS},
    )
    ctx = DistContext(0, 0, 1, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as run_dir:
        plan_folder(Path(run_dir), replace=True)  # the label index goes there, as in a run
        ddf, splits = load_splits(cfg, ctx, None)
        first = splits["train"][0]
        image_hw = tuple(args.image_hw) if args.image_hw else (first.height, first.width)
        model = ModelConfig(
            "base_model",
            ddf.class_names,
            first.channels,
            True,
            (image_hw[0], image_hw[1]),
            0.05,
            0.05,
        )
        with Loaders() as loaders:
            pool = paste_pool(cfg, splits, model, ddf.thumbnail_augmentation)
            data = make_data(cfg, ctx, Path(run_dir), splits, model, loaders, pool)
            print(f"frames: {len(splits['train'])} of {image_hw[0]}x{image_hw[1]}")
            print(f"loader workers: {data.num_workers}")
            rates = []
            for epoch in range(1, args.epochs + 1):
                data.train_sampler.set_epoch(epoch)
                start, seen = time.perf_counter(), 0
                for batch in data.train_loader:
                    seen += len(batch.images)
                rates.append(seen / (time.perf_counter() - start))
                print(f"epoch {epoch} images/s: {rates[-1]:.1f}")
            fast = float(np.mean(rates[1:])) if len(rates) > 1 else rates[0]
            print(f"images/s: {fast:.1f}")

            naive = loaders.make(
                NaiveDataset(splits["train"], image_hw),
                args.batch_size,
                num_workers=1,
                collate_fn=naive_collate,
            )
            start, seen = time.perf_counter(), 0
            for images, _ in naive:
                seen += len(images)
            slow = seen / (time.perf_counter() - start)
            print(f"naive images/s: {slow:.1f}")
            print(f"speedup: {fast / slow:.2f}")


if __name__ == "__main__":
    main()
