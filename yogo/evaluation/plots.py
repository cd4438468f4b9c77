"""The pictures of an evaluation, for the run folder (validation of best.pth) and
`yogo test --plots DIR`: what people look at to see where a model fails, class by class.

    plot_evaluation(metrics, Path("run/val"), counting)   # run/val_pr_curves.png, ...

- `<prefix>_pr_curves.png`: precision-recall at IoU 0.5 per class, AP in the legend;
- `<prefix>_confusion_matrix.png`: counts, and normalised per true class, with the
  objectness threshold in the title;
- `<prefix>_prf_curves.png`: precision, recall and F1 of each class against the score
  threshold (objectness x class probability), the best F1 marked;
- `<prefix>_per_class_ap.png`: AP@0.5 and AP@0.5:0.95 per class as bars;
- `<prefix>_reliability.png`: the reliability diagram, raw and calibrated (docs/counting.md).

And what the model is fed and what it finds, as drawings: `train_batch.png` (a training batch
after augmentation, with its labels) and `val_predictions.png` (frames with their labels
beside the predictions).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from yogo.evaluation.counting import (
    CALIBRATION_BINS,
    CountModel,
    calibration_errors,
    expected_calibration_error,
    reliability,
)
from yogo.evaluation.draw import COLOURS, caption, draw_boxes, mosaic
from yogo.evaluation.metrics import DetectionMetrics
from yogo.model.boxes import cxcywh_to_xyxy
from yogo.outputs import write_atomic

THRESHOLDS = np.linspace(0, 1, 101)


def plot_evaluation(
    metrics: DetectionMetrics,
    prefix: Path,
    counting: CountModel,
    frames: list[np.ndarray] | None = None,
) -> list[Path]:
    """Write the pictures of `metrics` (the reliability diagram with `counting`'s
    calibration), and with `frames` (the first frames evaluated, uint8 (C, H, W) in order)
    `<prefix>_predictions.png`; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    report = metrics.compute()
    written = [
        _pr_curves(report, metrics.pr_curves(), Path(f"{prefix}_pr_curves.png")),
        save_picture(confusion_figure(report), Path(f"{prefix}_confusion_matrix.png")),
        _prf_curves(metrics.threshold_curves(THRESHOLDS), Path(f"{prefix}_prf_curves.png")),
        _per_class_ap(report, Path(f"{prefix}_per_class_ap.png")),
        save_picture(reliability_figure(metrics, counting), Path(f"{prefix}_reliability.png")),
    ]
    if frames:
        written.append(Path(f"{prefix}_predictions.png"))
        plot_predictions(frames, metrics, written[-1])
    return written


def planned(prefix: Path) -> list[Path]:
    """The files `plot_evaluation(..., prefix, counting, frames)` writes."""
    kinds = "pr_curves confusion_matrix prf_curves per_class_ap reliability predictions"
    return [Path(f"{prefix}_{kind}.png") for kind in kinds.split()]


def save_picture(picture: Any, path: Path) -> Path:
    """A matplotlib figure (closed afterwards) or a PIL image as a PNG, written atomically."""
    write_atomic(path, picture_png(picture))
    return path


def picture_png(picture: Any) -> bytes:
    """A matplotlib figure (closed afterwards) or a PIL image as PNG bytes."""
    buffer = io.BytesIO()
    if hasattr(picture, "savefig"):
        import matplotlib.pyplot as plt

        if picture.get_layout_engine() is None:
            picture.tight_layout()
        picture.savefig(buffer, format="png", dpi=100)
        plt.close(picture)
    else:
        picture.save(buffer, format="PNG")
    return buffer.getvalue()


# Each class's line also has its own dash pattern, so a line on top of another hides neither.
LINE_STYLES = ("-", "--", "-.", ":")


def line_style(i: int) -> dict[str, Any]:
    return {"color": COLOURS[i % len(COLOURS)], "linestyle": LINE_STYLES[i % len(LINE_STYLES)]}


def _pr_curves(report: dict[str, Any], curves: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5), layout="constrained")
    for i, (name, (recall, precision)) in enumerate(curves.items()):
        ap = report["per_class"][name]["AP50"]
        label = f"{name} (AP50 {ap:.3f})" if ap is not None else name
        ax.plot(recall, precision, label=label, **line_style(i))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title("precision-recall at IoU 0.5")
    if curves:  # below the plot: inside, it covered the common class's curve
        fig.legend(loc="outside lower center", ncols=min(3, len(curves)), fontsize=9)
    return save_picture(fig, path)


def confusion_figure(report: dict[str, Any]) -> Any:
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
        f"confusion matrix at {report['thresholds']}, IoU 0.5 ({report['num_images']} images)"
    )
    return fig


def reliability_figure(metrics: DetectionMetrics, counting: CountModel) -> Any:
    """The reliability diagram of the detections at the metrics' thresholds: fraction right
    against confidence, before and after the model's calibration, with the ECE of each and
    how many detections each bin holds."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    kept = metrics.detections_by_class(kept=True)
    raw = np.concatenate([score for _, score, _ in kept])
    hit = np.concatenate([h for _, _, h in kept])
    classes = np.concatenate([np.full(len(score), c) for c, (_, score, _) in enumerate(kept)])
    calibrated = counting.calibrate(raw, classes.astype(np.int64))
    fig, (ax, bars) = plt.subplots(
        2, 1, figsize=(6, 6.5), height_ratios=(3, 1), sharex=True, layout="constrained"
    )
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="perfectly calibrated")
    for i, (name, confidence) in enumerate((("raw", raw), ("calibrated", calibrated))):
        mean_conf, fraction, count = reliability(confidence, hit)
        ece = expected_calibration_error(confidence, hit)
        label = f"{name} (ECE {ece:.3f})" if ece is not None else name
        shown = count > 0
        (line,) = ax.plot(mean_conf[shown], fraction[shown], label=label, **line_style(i))
        # a bin's dot grows with its detections: a bin of one is a guess, not a finding
        sizes = 8 + 120 * np.sqrt(count[shown] / max(int(count.max()), 1))
        ax.scatter(mean_conf[shown], fraction[shown], s=sizes, color=line.get_color(), zorder=3)
        centres = (np.arange(CALIBRATION_BINS) + 0.5) / CALIBRATION_BINS
        width = 0.45 / CALIBRATION_BINS
        bars.bar(centres + (i - 0.5) * width, count, width=width, color=line.get_color())
    ax.set(ylabel="fraction right (IoU 0.5, same class)", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(
        f"reliability diagram: {len(raw)} detections, {CALIBRATION_BINS} bins (dot area: share)"
    )
    ax.legend(loc="upper left", fontsize=9)
    per_class = calibration_errors(metrics, counting)
    lines = ["ECE per class, raw → calibrated"] + [
        f"{name}: {ece_text(e['raw'])} → {ece_text(e['calibrated'])}"
        for name, e in per_class.items()
        if name != "all"
    ]
    ax.text(0.98, 0.03, "\n".join(lines), ha="right", va="bottom", ma="left", fontsize=8,
            transform=ax.transAxes, bbox={"facecolor": "white", "edgecolor": "0.8"})  # fmt: skip
    bars.set(xlabel="confidence", ylabel="detections")
    if len(raw):  # counts over decades; none at all (an untrained model) stays linear
        bars.set_yscale("log")
        bars.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        bars.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    else:
        ax.text(0.5, 0.5, "no detections at these thresholds", ha="center", va="center")
    return fig


def ece_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def count_scatter_figure(
    true: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...]
) -> Any:
    """Predicted against true count per frame, one panel per class, with the identity."""
    import matplotlib.pyplot as plt

    n = len(class_names)
    columns = min(n, 4)
    rows = -(-n // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.4 * columns, 3.3 * rows), squeeze=False, layout="constrained"
    )
    for c, ax in enumerate(axes.flat):
        if c >= n:
            ax.set_visible(False)
            continue
        top = max(1, int(max(true[:, c].max(initial=0), predicted[:, c].max(initial=0))))
        ax.plot([0, top], [0, top], color="0.6", lw=1)
        jitter = np.random.default_rng(c).uniform(-0.15, 0.15, size=(2, len(true)))
        ax.scatter(true[:, c] + jitter[0], predicted[:, c] + jitter[1], s=12, alpha=0.6,
                   color=COLOURS[c % len(COLOURS)])  # fmt: skip
        ax.set(xlabel="true count per frame", ylabel="predicted", title=class_names[c])
        margin = 0.5 + 0.04 * top
        ax.set_xlim(-margin, top + margin)
        ax.set_ylim(-margin, top + margin)
    fig.suptitle(f"predicted against true counts, {len(true)} frames")
    return fig


def _prf_curves(curves: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5), layout="constrained")
    for i, (name, (precision, recall, f1)) in enumerate(curves.items()):
        style = line_style(i)
        best = int(np.argmax(f1))
        label = f"{name}: best F1 {f1[best]:.2f} at {THRESHOLDS[best]:.2f}"
        empty = np.flatnonzero(np.isnan(precision))
        if len(empty):  # precision is undefined there: no line, and the legend says why
            label += f"; no predictions from {THRESHOLDS[empty[0]]:.2f}"
        axes[0].plot(THRESHOLDS, precision, label=label, **style)
        axes[1].plot(THRESHOLDS, recall, **style)
        axes[2].plot(THRESHOLDS, f1, **style)
        axes[2].plot(THRESHOLDS[best], f1[best], "o", color=style["color"])
    for ax, title in zip(axes, ("precision", "recall", "F1"), strict=True):
        ax.set(xlabel="score threshold (objectness x class probability)", xlim=(0, 1),
               ylim=(0, 1.02), title=f"{title} at IoU 0.5")  # fmt: skip
    if curves:  # one legend below the panels: inside, legends covered the lines
        fig.legend(loc="outside lower center", ncols=min(3, len(curves)), fontsize=9)
    return save_picture(fig, path)


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
    return save_picture(fig, path)


TILE_SIDE = 384  # px: the shorter side of each drawn frame in a mosaic


def plot_train_batch(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], path: Path
) -> None:
    """Up to 9 frames of a batch, uint8 (B, C, H, W), with their `labels` (N, 6): image
    index, class, xc, yc, w, h, as the loader gives them."""
    import torch

    tiles = []
    for i, pixels in enumerate(images[:9]):
        mine = labels[labels[:, 0] == i]
        boxes = cxcywh_to_xyxy(torch.from_numpy(mine[:, 2:6])).numpy()
        tiles.append(
            draw_boxes(pixels, boxes, mine[:, 1], class_names, hide_conf=True, min_side=TILE_SIDE)
        )
    sheet = mosaic(tiles, columns=min(3, len(tiles)))
    save_picture(caption(sheet, "training batch after augmentation, with its labels"), path)


def plot_predictions(frames: list[np.ndarray], metrics: DetectionMetrics, path: Path) -> None:
    """Frames (uint8 (C, H, W)), the first of `metrics.images`, drawn twice side by side:
    their labels, and the predictions at the metrics' thresholds."""
    tiles = [
        plot_frame(pixels, image, metrics.class_names, metrics.thresholds)
        for pixels, image in zip(frames, metrics.images, strict=False)
    ]
    sheet = mosaic(tiles, columns=min(2, len(tiles)), gap=12)
    text = (
        f"labels (left) and predictions at {metrics.describe_thresholds()} (right); "
        "the tabs show each box's objectness"
    )
    save_picture(caption(sheet, text), path)


def first_frames(dataset: Any, metrics: DetectionMetrics, count: int = 6) -> list[np.ndarray]:
    """The first `count` frames of an evaluated `dataset` (DetectionDataset) at the model's
    size, in step with `metrics.images`; none when a frame was skipped (out of step)."""
    if len(metrics.images) != len(dataset):
        return []
    return [dataset.frame(i).numpy() for i in range(min(count, len(dataset)))]


def plot_frame(
    pixels: np.ndarray,
    image: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    thresholds: np.ndarray,
) -> Any:
    """One frame twice, side by side: its labels, and the predictions at or above their
    class's objectness threshold; `image` is one of DetectionMetrics.images: (detections
    (N, 7), truths (M, 5))."""
    det, truth = image
    shown = det[det[:, 4] >= thresholds[det[:, 6].astype(np.int64)]]
    labelled = draw_boxes(
        pixels, truth[:, 1:5], truth[:, 0], class_names, hide_conf=True, min_side=TILE_SIDE
    )
    objectness = shown[:, 4]  # the number the threshold compares (docs/design.md)
    found = draw_boxes(
        pixels, shown[:, :4], shown[:, 6], class_names, objectness, min_side=TILE_SIDE
    )
    return mosaic([labelled, found], columns=2, gap=3)
