"""What a run reports: the line per epoch, the classes a mean hides, metrics.csv, the
training curves and the W&B run.

    csv = MetricsCSV(run_dir / "metrics.csv", metric_columns(class_names))
    csv.append(row); curves.update(rows)  # curves = TrainingCurves(run_dir / "training_curves.png")
    print_epoch(row, report)          # rank 0: "epoch 3: loss ...; val mAP@0.5 ..."
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yogo.config import TrainConfig
from yogo.data.scan import LabelledSample
from yogo.evaluation.plots import line_style, save_picture
from yogo.log import init_wandb
from yogo.model.grid import collision_losses, grid_losses
from yogo.model.network import ModelConfig
from yogo.training.resume import LOSS_PARTS

log = logging.getLogger(__name__)


class MetricsCSV:
    """One row per epoch in `metrics.csv`, in the run's `columns` (a resumed run keeps the
    file's); a row without a value leaves its cell blank (validation runs every
    `--val-every` epochs)."""

    def __init__(self, path: Path, columns: list[str] | None = None) -> None:
        self.path = path
        self.columns = columns

    def read(self) -> list[dict[str, Any]]:
        """The rows already in the file (numbers as floats), continuing its columns; none when
        there is no file yet (a run stopped in its first epoch)."""
        import csv

        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            self.columns = list(reader.fieldnames or self.columns or [])
        return [{k: _number(v) for k, v in row.items()} for row in rows]

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Replace the file with `rows` (atomically), keeping its columns."""
        import csv
        import io

        from yogo.outputs import write_atomic

        table = io.StringIO(newline="")
        writer = csv.writer(table)
        if self.columns is not None:
            writer.writerow(self.columns)
            writer.writerows([_cell(row.get(c)) for c in self.columns] for row in rows)
        write_atomic(self.path, table.getvalue())

    def append(self, row: dict[str, Any]) -> None:
        import csv

        if self.columns is None:
            self.columns = list(row)
        if not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_cell(row.get(c)) for c in self.columns])


def _number(text: str) -> float | None:
    return float(text) if text != "" else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# training_curves.png is redrawn at most this often (and whenever the run ends or stops).
CURVES_EVERY_S = 60.0


@dataclass
class TrainingCurves:
    """training_curves.png, kept current at most a minute behind metrics.csv. Drawing it takes
    about a second, and every rank waits for rank 0: after each epoch of a run whose epochs
    take seconds, that was more time than the training."""

    path: Path
    drawn_at: float = field(default_factory=time.perf_counter)
    rows_drawn: int = 0

    def update(self, rows: list[dict[str, Any]], now: bool = False) -> None:
        """Draw `rows` if the picture lacks some and `now` (the run ends or stops) or the last
        drawing is CURVES_EVERY_S old (the first: the run's start)."""
        if len(rows) == self.rows_drawn:
            return
        if now or time.perf_counter() - self.drawn_at >= CURVES_EVERY_S:
            plot_training_curves(rows, self.path)
            self.drawn_at, self.rows_drawn = time.perf_counter(), len(rows)


def plot_training_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Losses, learning rate and validation mAP against epoch, as one PNG; a run without
    validation values (no val split yet, or none at all) gets no validation panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    losses = _series(rows, ("loss", "objectness", "box", "class", "val_loss"))
    scores = _series(rows, ("val_mAP50", "val_mAP50_95"))
    keys = dict.fromkeys(k for row in rows for k in row)  # every column, in order
    per_class = _series(rows, tuple(k for k in keys if k.startswith("val_AP50/")))
    panels = 2 + bool(scores) + bool(per_class)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.6), layout="constrained")
    for key, points in losses.items():
        axes[0].plot(*zip(*points, strict=True), label=key, marker=".")
    axes[0].set(title="loss per image", xlabel="epoch", yscale="log")
    if losses:  # a legend without labelled lines is a matplotlib warning
        _legend_below(axes[0])
    axes[1].plot([r["epoch"] for r in rows], [r["lr"] for r in rows], marker=".")
    axes[1].set(title="learning rate (end of epoch)", xlabel="epoch")
    if scores:
        for key, points in scores.items():
            axes[2].plot(*zip(*points, strict=True), label=key, marker=".")
        axes[2].set(title="validation", xlabel="epoch", ylim=(0, 1))
        _legend_below(axes[2])
    if per_class:  # a mean hides a dead class: each class's own line
        for i, (key, points) in enumerate(per_class.items()):
            axes[3].plot(
                *zip(*points, strict=True), label=key.split("/", 1)[1], marker=".", **line_style(i)
            )
        axes[3].set(title="validation AP@0.5 per class", xlabel="epoch", ylim=(0, 1.02))
        _legend_below(axes[3])
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs: no 1.5
    save_picture(fig, path)


def _legend_below(ax: Any) -> None:
    """The panel's legend under its x axis, where it covers no line (inside, it did)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3, fontsize=8, frameon=False)


def _series(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, list[tuple[Any, Any]]]:
    """(epoch, value) pairs per key, from the rows that have a value (validation runs every
    `--val-every` epochs); keys without any value are left out."""
    series = {}
    for key in keys:
        points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            series[key] = points
    return series


def start_wandb(cfg: TrainConfig, run_dir: Path, run_id: str | None = None) -> Any:
    """A W&B run, or None (`cfg.wandb` False). Default (`cfg.wandb` None): online with
    credentials, else offline with a one-line note. WANDB_MODE/WANDB_PROJECT/WANDB_ENTITY are
    respected; files go into the run folder, never the working directory. `run_id` (a resumed
    run) continues that W&B run."""
    if cfg.wandb is False:
        return None
    return init_wandb(
        run_dir,
        cfg.wandb_project,
        cfg.wandb_entity,
        name=run_dir.name,
        notes=cfg.note,
        tags=cfg.tags,
        config=cfg.to_dict(),
        run_id=run_id,
    )


PER_CLASS = ("AP50", "precision", "recall")  # per-class values of each validation


def metric_columns(class_names: Sequence[str]) -> list[str]:
    """metrics.csv's columns (and W&B's keys): the epoch's training values, then validation's,
    per class as `val_AP50/<class>` and so on (W&B groups them by the part before `/`)."""
    per_class = [f"val_{key}/{name}" for key in PER_CLASS for name in class_names]
    return [
        *("epoch", "step", "lr", *LOSS_PARTS, "images_per_s", "data_wait_fraction"),
        *("val_loss", "val_mAP50", "val_mAP50_95", *per_class, "elapsed_s"),
    ]


def warn_collision_losses(train: tuple[LabelledSample, ...], config: ModelConfig) -> None:
    """Say when the grid keeps too few objects of a class (one object per cell). A tiled
    model's cells are 8 frame pixels: its grid over a frame is the frame's own size's."""
    if config.tile_overlap is not None and train:
        config = dataclasses.replace(config, image_hw=(train[0].height, train[0].width))
    lost, total = grid_losses([s.boxes for s in train], config.grid, config.num_classes)
    for message in collision_losses(lost, total, config.class_names, config.image_hw):
        log.warning(message)


def print_epoch(row: dict[str, Any], report: dict[str, Any] | None) -> None:
    text = (
        f"epoch {row['epoch']}: loss {row['loss']:.4g} (obj {row['objectness']:.3g}, "
        f"box {row['box']:.3g}, class {row['class']:.3g}), lr {row['lr']:.2e}, "
        f"{row['images_per_s']:.1f} img/s, data wait {100 * row['data_wait_fraction']:.0f}%"
    )
    if report is not None and report["mAP50"] is not None:
        per_class = ", ".join(
            f"{n} {c['AP50']:.3f}" for n, c in report["per_class"].items() if c["AP50"] is not None
        )
        text += f"; val mAP@0.5 {report['mAP50']:.4f} ({per_class})"
    log.info(text)
    if report is not None:
        for line in dead_classes(report):
            log.warning(line)


# A class below DEAD_AP while the mean is at least LOOKS_FINE is a class the mean hides.
DEAD_AP, LOOKS_FINE = 0.1, 0.5


def dead_classes(report: dict[str, Any]) -> list[str]:
    """One line per class (with val labels) that the model does not find although the
    validation mAP@0.5 looks fine."""
    mean = report["mAP50"]
    if mean is None or mean < LOOKS_FINE:
        return []
    return [
        f"class '{name}': val AP@0.5 {c['AP50']:.3f} while mAP@0.5 is {mean:.3f}; the mean "
        f"hides a class the model does not find ({c['num_true']} labelled in val)"
        for name, c in report["per_class"].items()
        if c["AP50"] is not None and c["AP50"] < DEAD_AP
    ]
