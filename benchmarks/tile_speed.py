"""Time per megapixel of tiled infer on a large frame (yogo.model.tiles), per network.

    python benchmarks/tile_speed.py --rounds 3 --frame 2048 --tile 128 --overlap 48
    python benchmarks/tile_speed.py --checkpoint runs/tiled/best.pth   # a trained model too

One synthetic 2048 x 2048 frame with 20-px cells (yogo.data.synth). For each network of the
registry given (base_model and the smaller quarter_filters by default; random weights, built
as a --tile model), `Predictor.detect_tiled` on the frame: tiling, the model on every tile
(batched), post-processing and the merge. Random weights detect nothing at objectness 1, so
those rows time the tiles and the model; with --checkpoint a trained tiled model also runs at
its own thresholds (thousands of detections: the merge's cost included). Models take turns,
round after round, and each keeps its best round. Prints a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def random_predictor(name: str, tile: int, overlap: int):  # type: ignore[no-untyped-def]
    """A --tile model of network `name` with random weights, as a Predictor on the CPU."""
    from yogo.deploy.predictor import Deployed, Predictor
    from yogo.evaluation.counting import CountModel
    from yogo.model.network import ModelConfig, build_model

    config = ModelConfig(
        name, ("healthy", "ring"), 1, True, (tile, tile), 0.02, 0.02, False, overlap
    )
    model = Deployed(build_model(config)).eval()

    def run(images: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.from_numpy(images))

    counting = CountModel.default(config.class_names)
    return Predictor(run, config.class_names, (tile, tile), 1, "pytorch on cpu", counting, overlap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frame", type=int, default=2048, help="frame side in pixels")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=["base_model", "quarter_filters"])
    parser.add_argument("--checkpoint", help="a model trained with --tile, run as well")
    args = parser.parse_args()

    from yogo.data.images import decode_image
    from yogo.data.synth import write_dataset
    from yogo.deploy.predictor import load_predictor
    from yogo.model.tiles import plan_windows

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "big", 1, (args.frame, args.frame), seed=4, cell_diameter=20)
        frame = decode_image(next((Path(tmp) / "big" / "images").iterdir()), 1)
    runs = {name: (random_predictor(name, args.tile, args.overlap), 1.0) for name in args.models}
    if args.checkpoint:
        trained = load_predictor(args.checkpoint, "cpu")
        runs[f"{trained_name(args.checkpoint)} (trained)"] = (trained, None)
    best = dict.fromkeys(runs, float("inf"))
    found = dict.fromkeys(runs, 0)
    for _ in range(args.rounds):
        for label, (predictor, obj_thresh) in runs.items():
            thresholds = predictor.counting.thresholds if obj_thresh is None else obj_thresh
            overlap = predictor.overlap(None)
            start = time.perf_counter()
            rows = predictor.detect_tiled(
                frame, overlap, thresholds, 0.5, 0.0, False, args.batch_size
            )
            best[label] = min(best[label], time.perf_counter() - start)
            found[label] = len(rows)
    megapixels = args.frame * args.frame / 1e6
    print(
        f"{args.frame} x {args.frame} frame ({megapixels:.2f} MP), {torch.get_num_threads()} "
        f"thread(s), {platform.processor() or platform.machine()}, best of {args.rounds}\n"
    )
    print("| model | tile, overlap | tiles | detections | s per frame | s per megapixel |")
    print("|---|---|---|---|---|---|")
    for label, (predictor, _) in runs.items():
        tile, overlap = predictor.image_hw[0], predictor.overlap(None)
        count = len(plan_windows(tuple(frame.shape[1:]), predictor.image_hw, overlap))
        print(
            f"| {label} | {tile}, {overlap} | {count} | {found[label]} | {best[label]:.2f} | "
            f"{best[label] / megapixels:.2f} |"
        )


def trained_name(path: str) -> str:
    from yogo.model.checkpoint import load_checkpoint

    return load_checkpoint(Path(path)).model_config.model_name


if __name__ == "__main__":
    main()
