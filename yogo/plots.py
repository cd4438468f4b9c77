"""The pictures of an evaluation, for the run folder (validation of best.pth) and
`yogo test --plots DIR`: what people look at to see where a model fails, class by class.

    plot_evaluation(metrics, Path("run/val"))   # run/val_pr_curves.png, run/val_...png

- `<prefix>_pr_curves.png`: precision-recall at IoU 0.5 per class, AP in the legend;
- `<prefix>_confusion_matrix.png`: counts, and normalised per true class, with the
  objectness threshold in the title;
- `<prefix>_prf_curves.png`: precision, recall and F1 of each class against the score
  threshold (objectness x class probability), the best F1 marked;
- `<prefix>_per_class_ap.png`: AP@0.5 and AP@0.5:0.95 per class as bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from yogo.draw import COLOURS
from yogo.metrics import DetectionMetrics

THRESHOLDS = np.linspace(0, 1, 101)


def plot_evaluation(metrics: DetectionMetrics, prefix: Path) -> list[Path]:
    """Write the four pictures of `metrics`; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    report = metrics.compute()
    written = [
        _pr_curves(report, metrics.pr_curves(), Path(f"{prefix}_pr_curves.png")),
        _confusion(report, Path(f"{prefix}_confusion_matrix.png")),
        _prf_curves(metrics.threshold_curves(THRESHOLDS), Path(f"{prefix}_prf_curves.png")),
        _per_class_ap(report, Path(f"{prefix}_per_class_ap.png")),
    ]
    return written


def planned(prefix: Path) -> list[Path]:
    """The files `plot_evaluation(..., prefix)` writes."""
    kinds = ("pr_curves", "confusion_matrix", "prf_curves", "per_class_ap")
    return [Path(f"{prefix}_{kind}.png") for kind in kinds]


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pr_curves(report: dict[str, Any], curves: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for i, (name, (recall, precision)) in enumerate(curves.items()):
        ap = report["per_class"][name]["AP50"]
        label = f"{name} (AP50 {ap:.3f})" if ap is not None else name
        ax.plot(recall, precision, label=label, color=COLOURS[i % len(COLOURS)])
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("precision-recall at IoU 0.5")
    if curves:
        ax.legend(loc="lower left")
    return _save(fig, path)


def _confusion(report: dict[str, Any], path: Path) -> Path:
    """Counts, and each true class's row as shares, side by side; text dark on light cells
    and light on dark ones, so every cell can be read."""
    import matplotlib.pyplot as plt

    names = [*report["class_names"], "background"]
    counts = np.array(report["confusion_matrix"], dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 0.9 * len(names) + 2.5
    fig, axes = plt.subplots(1, 2, figsize=(2 * size, size), layout="constrained")
    panels = ((counts, np.log1p(counts), "counts"), (shares, shares, "share of each true class"))
    for ax, (values, shade, title) in zip(axes, panels, strict=True):
        ax.imshow(shade, cmap="Blues", vmin=0, vmax=max(float(shade.max()), 1e-9))
        dark = shade > 0.55 * max(float(shade.max()), 1e-9)
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:d}" if values.dtype.kind == "i" else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if dark[i, j] else "black")  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.suptitle(
        f"confusion matrix at objectness >= {report['obj_thresh']:g}, IoU 0.5 "
        f"({report['num_images']} images)"
    )
    return _save(fig, path)


def _prf_curves(curves: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for i, (name, (precision, recall, f1)) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        best = int(np.argmax(f1))
        axes[0].plot(THRESHOLDS, precision, color=colour, label=name)
        axes[1].plot(THRESHOLDS, recall, color=colour, label=name)
        axes[2].plot(THRESHOLDS, f1, color=colour,
                     label=f"{name} (best {f1[best]:.2f} at {THRESHOLDS[best]:.2f})")  # fmt: skip
        axes[2].plot(THRESHOLDS[best], f1[best], "o", color=colour)
    for ax, title in zip(axes, ("precision", "recall", "F1"), strict=True):
        ax.set(xlabel="score threshold (objectness x class probability)", xlim=(0, 1),
               ylim=(0, 1.02), title=f"{title} at IoU 0.5")  # fmt: skip
        if curves:
            ax.legend(loc="lower left" if title == "recall" else "best")
    return _save(fig, path)


def _per_class_ap(report: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = report["class_names"]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 4))
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "AP50", "AP@0.5"), (0.2, "AP50_95", "AP@0.5:0.95")):
        values = [report["per_class"][n][key] for n in names]
        bars = ax.bar(x + offset, [v or 0 for v in values], width=0.4, label=label)
        for bar, value in zip(bars, values, strict=True):
            text = "no labels" if value is None else f"{value:.2f}"
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, text,
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0)
    ax.set(ylim=(0, 1.1), ylabel="AP")
    ax.set_title(f"AP per class (mAP@0.5 {report['mAP50'] or 0:.3f})")
    ax.legend(loc="upper right")
    return _save(fig, path)
