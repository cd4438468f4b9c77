"""Run folders: OUTPUT_DIR/NAME, never overwritten, and the dataset record in config.yaml.

require_new_run_name(cfg)                  # UserError when OUTPUT_DIR/NAME holds a run
run_dir = create_run_dir(cfg, ddf.path)    # new; a generated name when cfg.name is None
record = dataset_record(ddf.path, splits)  # DDF, split sizes, SHA-256 of the sample list
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

from yogo.config import TrainConfig
from yogo.data.scan import LabelledSample
from yogo.errors import UserError


def require_new_run_name(cfg: TrainConfig) -> None:
    """An existing run folder of that name is never overwritten."""
    if cfg.name is None:
        return
    run_dir = Path(cfg.output_dir) / cfg.name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(
            f"a run named '{cfg.name}' already exists",
            path=run_dir,
            fix="choose another --name (runs are never overwritten)",
        )


def create_run_dir(cfg: TrainConfig, ddf_path: Path) -> Path:
    """OUTPUT_DIR/NAME (or a generated name), new."""
    output = Path(cfg.output_dir)
    if cfg.name is not None:
        require_new_run_name(cfg)
        run_dir = output / cfg.name
    else:
        stem = f"{datetime.now():%Y-%m-%d_%H%M%S}_{ddf_path.stem}"
        run_dir, n = output / stem, 1
        while run_dir.exists():
            n += 1
            run_dir = output / f"{stem}-{n}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def dataset_record(ddf_path: Path, splits: dict[str, tuple[LabelledSample, ...]]) -> dict[str, Any]:
    """The DDF, the split sizes and a SHA-256 of the resolved sample list, for config.yaml."""
    digest = hashlib.sha256()
    for name in ("train", "val", "test"):
        for s in splits[name]:
            digest.update(f"{name}\t{s.label}\t{s.image}\n".encode())
    return {
        "ddf": str(ddf_path),
        "samples_sha256": digest.hexdigest(),
        "num_samples": {name: len(splits[name]) for name in ("train", "val", "test")},
    }
