"""Run output: console records, metrics.csv, plots, and optional Weights & Biases.

    configure_console()                       # once, in the CLI entry point
    logging.getLogger("yogo.ddf").warning("...")   # printed as "warning: ..."

Library modules only log; the CLI decides what is shown. Rank 0 speaks, other ranks print
only warnings and errors, prefixed with their rank.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from yogo.config import TrainConfig
from yogo.errors import display_path


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is when the record arrives (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except OSError:
            self.handleError(record)


class _Format(logging.Formatter):
    prefix = ""  # "[rank N] " on ranks other than 0

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{self.prefix}{record.levelname.lower()}: {message}"
        return f"{self.prefix}{message}"


def configure_console(level: int = logging.INFO) -> None:
    """Send the `yogo` loggers' records to stderr, once (idempotent)."""
    logger = logging.getLogger("yogo")
    if any(getattr(h, "_yogo_console", False) for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(_Format())
    handler._yogo_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def set_console_rank(rank: int) -> None:
    """Rank 0 speaks; other ranks show only warnings and errors, prefixed with their rank."""
    _Format.prefix = f"[rank {rank}] " if rank else ""
    logging.getLogger("yogo").setLevel(logging.INFO if rank == 0 else logging.WARNING)


def progress(
    iterable: Any = None,
    description: str | None = None,
    total: int | None = None,
    unit: str = "it",
    leave: bool = False,
    show: bool = True,
) -> Any:
    """A tqdm bar on a terminal (unless not `show`); silent otherwise (commands print a line
    per epoch or a summary instead).

    tqdm's monitor thread is turned off: it starts with each bar and ends when the last bar is
    gone, and a thread ending while a loader forks its workers can deadlock the new worker
    (CPython 3.11 takes a lock in the child that the ending thread held; seen in a resumed
    2-process run, at the first validation after a training epoch)."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    return tqdm(
        iterable,
        desc=description,
        total=total,
        unit=unit,
        leave=leave,
        disable=not (show and sys.stderr.isatty()),
        dynamic_ncols=True,
    )


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
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    for key, points in losses.items():
        axes[0].plot(*zip(*points, strict=True), label=key, marker=".")
    axes[0].set(title="loss per image", xlabel="epoch", yscale="log")
    if losses:  # a legend without labelled lines is a matplotlib warning
        axes[0].legend()
    axes[1].plot([r["epoch"] for r in rows], [r["lr"] for r in rows], marker=".")
    axes[1].set(title="learning rate (end of epoch)", xlabel="epoch")
    if scores:
        for key, points in scores.items():
            axes[2].plot(*zip(*points, strict=True), label=key, marker=".")
        axes[2].set(title="validation", xlabel="epoch", ylim=(0, 1))
        axes[2].legend()
    if per_class:  # a mean hides a dead class: each class's own line
        for key, points in per_class.items():
            axes[3].plot(*zip(*points, strict=True), label=key.split("/", 1)[1], marker=".")
        axes[3].set(title="validation AP@0.5 per class", xlabel="epoch", ylim=(0, 1.02))
        axes[3].legend(loc="best")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs: no 1.5
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _series(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, list[tuple[Any, Any]]]:
    """(epoch, value) pairs per key, from the rows that have a value (validation runs every
    `--val-every` epochs); keys without any value are left out."""
    series = {}
    for key in keys:
        points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            series[key] = points
    return series


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


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


def init_wandb(
    folder: Path,
    project: str | None,
    entity: str | None,
    name: str | None,
    notes: str | None,
    tags: list[str] | None,
    config: dict[str, Any],
    run_id: str | None,
    job_type: str = "train",
) -> Any:
    """`wandb.init` as every yogo command does it (None when WANDB_MODE is disabled): online
    with credentials, else offline with a one-line note; files under `folder/wandb`."""
    if os.environ.get("WANDB_MODE") == "disabled":
        return None
    import wandb

    mode = os.environ.get("WANDB_MODE")
    if mode is None and not wandb_has_credentials():
        mode = "offline"
        logging.getLogger("yogo").info(
            "W&B: no credentials found, logging offline into "
            f"{display_path(folder / 'wandb')} (`wandb sync` uploads it later)"
        )
    os.environ.setdefault("WANDB_CACHE_DIR", str(folder / "wandb" / "cache"))
    os.environ.setdefault("WANDB_DATA_DIR", str(folder / "wandb" / "data"))
    return wandb.init(
        dir=folder,
        mode=mode,  # type: ignore[arg-type]
        project=project or os.environ.get("WANDB_PROJECT") or "yogo",
        entity=entity or os.environ.get("WANDB_ENTITY"),
        name=name,
        notes=notes,
        tags=tags or None,
        config=config,
        id=run_id,
        resume="allow" if run_id else None,
        job_type=job_type,
    )
