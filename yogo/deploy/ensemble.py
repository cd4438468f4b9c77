"""Several models, and flipped copies of each frame, as one predictor: what `yogo infer` runs
with `--model` (more models) and `--tta` (test-time flips).

    predictor = load_ensemble(["a.pth", "b.pth", "c.pth"], tta=True)   # 3 models x 4 flips
    found = predictor.detect(frames, predictor.counting.thresholds)    # fused detections

The views are fused by yogo.model.fusion (weighted box fusion); docs/design.md "Ensembles and
test-time flips".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from yogo.config import Precision
from yogo.deploy.predictor import Predictor, load_predictor
from yogo.evaluation.counting import ensemble_counting
from yogo.model.fusion import FLIPS, Fusion, detect_views, require_matching


@dataclass(frozen=True)
class Ensemble(Predictor):
    """Predictors run on the same frames, each on every flip, fused. `run` is the first
    member's (its output grid, for `yogo infer --heatmap-mask`); `detect` is the ensemble's."""

    members: tuple[Predictor, ...] = ()
    flips: tuple[tuple[bool, bool], ...] = FLIPS[:1]
    fusion: Fusion = "wbf"

    def detect(
        self,
        images: np.ndarray,
        obj_thresh: float | Sequence[float],
        iou_thresh: float = 0.5,
        min_class_confidence: float = 0.0,
        class_probs: bool = False,
    ) -> list[torch.Tensor]:
        runs = [member.run for member in self.members]
        return detect_views(
            runs, images, obj_thresh, iou_thresh, min_class_confidence, class_probs, self.flips,
            self.fusion,
        )  # fmt: skip


def load_ensemble(
    paths: Sequence[str | Path],
    device_name: str | None = None,
    crop_height: float | None = None,
    half: bool = False,
    tta: bool = False,
    fusion: Fusion = "wbf",
    precision: Precision = "auto",
) -> Predictor:
    """The predictor of one model file, or of several (and with `tta`, of each on the four
    flips of every frame) fused; see `yogo.evaluation.counting.ensemble_counting` for its
    thresholds and counts."""
    files = [Path(p) for p in paths]
    members = [load_predictor(path, device_name, crop_height, half, precision) for path in files]
    first = members[0]
    if len(members) == 1 and not tta:
        return first
    require_matching(files, [(m.class_names, m.image_hw, m.channels, m.bit_depth) for m in members])
    flips = FLIPS if tta else FLIPS[:1]
    views = len(members) * len(flips)
    return Ensemble(
        first.run,
        first.class_names,
        first.image_hw,
        first.channels,
        f"{len(members)} model(s) x {len(flips)} flip(s), {fusion}; {first.kind}",
        ensemble_counting(first.counting, files[0], views),
        bit_depth=first.bit_depth,
        tile_overlap=first.tile_overlap,
        members=tuple(members),
        flips=flips,
        fusion=fusion,
    )
