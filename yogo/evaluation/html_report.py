"""`--report report.html` of `yogo test` and `yogo infer`: one self-contained HTML file
(pictures embedded as data URLs, no script, nothing fetched) that a lab reads: the counts and
their 95% intervals per specimen and class, the ratios, and for `yogo test` predicted against
true counts per frame, the reliability diagram, the confusion matrix and, per class, the
least and the most confident detections.

    write_test_report(Path("report.html"), report, metrics, counting, dataset)
    write_infer_report(Path("report.html"), summary.counts, predictor.counting)
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from yogo.data.channels import display_planes
from yogo.errors import display_path
from yogo.evaluation.counting import CountModel
from yogo.evaluation.metrics import DetectionMetrics
from yogo.evaluation.plots import (
    confusion_figure,
    count_scatter_figure,
    picture_png,
    reliability_figure,
)
from yogo.outputs import write_atomic

THUMBNAILS = 6  # per class, of the least and of the most confident detections
THUMBNAIL_SIDE = 72  # px

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
table.setup td { text-align: left; }
.ci { white-space: nowrap; }
.note { color: #555; font-size: 0.9em; }
.bad { color: #b00020; font-weight: 600; }
img.figure { max-width: 100%; display: block; margin: 0.5em 0; }
.thumbs { display: flex; flex-wrap: wrap; gap: 6px; margin: 0.3em 0 1em; }
.thumb { text-align: center; font-size: 0.8em; }
.thumb img { display: block; border: 3px solid; image-rendering: pixelated; }
.right img { border-color: #009E73; } .wrong img { border-color: #D55E00; }
"""


def write_test_report(
    path: Path,
    report: dict[str, Any],
    metrics: DetectionMetrics,
    counting: CountModel,
    dataset: Any,
) -> None:
    """`yogo test --report`: the report of one split (its JSON report, the metrics behind
    it, the model's CountModel and the evaluated DetectionDataset for the thumbnails)."""
    names = metrics.class_names
    errors = metrics.frame_errors()
    true = np.array([e["true"] for e in errors]).reshape(-1, len(names))
    predicted = np.array([e["pred"] for e in errors]).reshape(-1, len(names))
    parts = [
        f"<h1>yogo test: {_e(Path(report['checkpoint']).name)} on the {_e(report['split'])} "
        f"split</h1>",
        _setup(report["checkpoint"], report["ddf"], report["counting"], report["num_images"]),
        "<h2>Counts</h2>",
        _class_table(report),
        _ratio_table(report["ratios"]),
        "<h2>Per specimen (DDF entry)</h2>",
        _specimen_table(report["specimens"], names, with_truth=True),
        "<h2>Predicted against true counts per frame</h2>",
        _figure(count_scatter_figure(true, predicted, names), "predicted against true counts"),
        "<h2>Calibration</h2>",
        f"<p>Expected calibration error ({_e(report['counting']['thresholds'])}, 15 bins): "
        f"{_n(report['ece_raw'], 3)} raw, {_n(report['ece'], 3)} calibrated.</p>",
        _figure(reliability_figure(metrics, counting), "reliability diagram"),
        "<h2>Confusion matrix</h2>",
        _figure(confusion_figure(report), "confusion matrix"),
        "<h2>The least and the most confident detections per class</h2>",
        '<p class="note">Calibrated confidence under each; green: matches a label of its '
        "class (IoU 0.5), orange: does not.</p>",
        _thumbnails(metrics, counting, dataset),
    ]
    _write(path, f"yogo test: {Path(report['checkpoint']).name}", parts)


def write_infer_report(path: Path, counts: dict[str, Any], counting: CountModel) -> None:
    """`yogo infer --report`: counts per specimen with their intervals and the ratios, and
    the validation confusion matrix the correction uses (infer has no labels to compare
    with: the other pictures are in `yogo test --report`)."""
    names = tuple(counts["class_names"])
    specimens = counts["specimens"]
    if len(specimens) > 1:
        specimens = {"all frames": counts["all"], **specimens}
    parts = [
        "<h1>yogo infer: counts per specimen</h1>",
        _setup(None, None, counts, counts["all"]["frames"]),
        "<h2>Per specimen</h2>",
        _specimen_table(specimens, names, with_truth=False),
    ]
    if counts["all"]["ratios"]:
        parts.append("<h2>Ratios</h2>")
        for name, part in specimens.items():
            parts += [f"<p>{_e(name)}</p>", _ratio_table(part["ratios"])]
    if counting.confusion is not None:
        summed = counting.confusion.sum(axis=0)
        summed_report = {
            "class_names": list(names),
            "confusion_matrix": summed.tolist(),
            "thresholds": counting.describe(),
            "num_images": len(counting.confusion),
        }
        parts += [
            "<h2>The validation confusion matrix behind the correction</h2>",
            f'<p class="note">{_e(counting.source)}</p>',
            _figure(confusion_figure(summed_report), "validation confusion matrix"),
        ]
    _write(path, "yogo infer: counts", parts)


def _write(path: Path, title: str, parts: Sequence[str]) -> None:
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + '\n<p class="note">Written by yogo. How each number is made: docs/counting.md.</p>'
        "\n</body></html>\n"
    )
    write_atomic(path, document)


def _setup(checkpoint: str | None, ddf: str | None, counting: dict[str, Any], frames: int) -> str:
    rows = []
    if checkpoint:
        rows.append(("model", display_path(checkpoint)))
    if ddf:
        rows.append(("dataset definition", display_path(ddf)))
    rows += [
        ("frames", str(frames)),
        ("thresholds", counting["thresholds"]),
        ("fitted on", counting["fitted_on"] or "-"),
    ]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    warning = (
        ""
        if counting["corrected"]
        else '<p class="bad">Raw counts only: this model has no count correction fitted on '
        "validation (yogo test CHECKPOINT DDF --fit-thresholds NEW.pth), or --obj-thresh "
        "replaced its thresholds.</p>"
    )
    return f'<table class="setup">{table}</table>{warning}'


def _class_table(report: dict[str, Any]) -> str:
    head = (
        "<tr><th>class</th><th>true</th><th>counted</th><th>count error</th>"
        "<th>corrected</th><th>95% interval</th><th>truth inside</th><th>threshold</th>"
        "<th>AP@0.5</th><th>ECE raw</th><th>ECE calibrated</th></tr>"
    )
    rows = []
    for name, c in report["per_class"].items():
        ci = c["count_ci95"]
        inside = "-" if ci is None else ("yes" if ci[0] <= c["num_true"] <= ci[1] else "no")
        error = c["count_error"]
        rows.append(
            f"<tr><td>{_e(name)}</td><td>{c['num_true']}</td><td>{c['num_pred']}</td>"
            f"<td>{'-' if error is None else f'{error:+.1%}'}</td>"
            f"<td>{_n(c['count_corrected'], 1)}</td><td>{_interval(ci, 1)}</td>"
            f"<td{' class=bad' if inside == 'no' else ''}>{inside}</td>"
            f"<td>{c['threshold']:.3g} ({_e(c['threshold_rule'])})</td>"
            f"<td>{_n(c['AP50'], 3)}</td><td>{_n(c['ece_raw'], 3)}</td>"
            f"<td>{_n(c['ece'], 3)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _ratio_table(ratios: dict[str, Any]) -> str:
    if not ratios:
        return ""
    rows = "".join(
        f"<tr><td>{_e(text)}</td><td>{_n(r['value'], 5)}</td><td>{_interval(r['ci95'], 5)}</td>"
        "</tr>"
        for text, r in ratios.items()
    )
    return f"<table><tr><th>ratio</th><th>value</th><th>95% interval</th></tr>{rows}</table>"


def _specimen_table(specimens: dict[str, Any], names: Sequence[str], with_truth: bool) -> str:
    if not specimens:
        return '<p class="note">No specimens.</p>'
    head = "<tr><th>specimen</th><th>frames</th>" + "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = []
    for specimen, part in specimens.items():
        cells = []
        for name in names:
            c = part["per_class"][name]
            text = f"{c['count']}"
            if c["count_corrected"] is not None:
                text += f" &rarr; {_n(c['count_corrected'], 1)} {_interval(c['count_ci95'], 1)}"
            if with_truth:
                text += f' <span class="note">(true {c["num_true"]})</span>'
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr><td>{_e(specimen)}</td><td>{part['frames']}</td>{''.join(cells)}</tr>")
    note = (
        '<p class="note">Counted &rarr; corrected [95% interval] per class.</p>'
        if any(
            c["count_corrected"] is not None
            for part in specimens.values()
            for c in part["per_class"].values()
        )
        else ""
    )
    return f"<table>{head}</tr>{''.join(rows)}</table>{note}"


def _thumbnails(metrics: DetectionMetrics, counting: CountModel, dataset: Any) -> str:
    from PIL import Image

    if len(metrics.images) != len(dataset):
        return '<p class="note">Frames were skipped while evaluating: no thumbnails.</p>'
    found: list[list[tuple[float, int, np.ndarray, bool]]] = [[] for _ in metrics.class_names]
    for i in range(len(metrics.images)):
        det, hits = metrics.matches(i)
        confidence = counting.calibrate(det[:, 4] * det[:, 5], det[:, 6].astype(np.int64))
        for row, p, hit in zip(det, confidence, hits, strict=True):
            found[int(row[6])].append((float(p), i, row, bool(hit)))
    out = []
    for c, name in enumerate(metrics.class_names):
        ranked = sorted(found[c], key=lambda item: item[0])
        if not ranked:
            out.append(f"<h3>{_e(name)}</h3><p class='note'>no detections</p>")
            continue
        low = ranked[:THUMBNAILS]
        high = ranked[max(len(low), len(ranked) - THUMBNAILS) :][::-1]
        out.append(f"<h3>{_e(name)} ({len(ranked)} detections)</h3>")
        for title, items in (("least confident", low), ("most confident", high)):
            if not items:
                continue
            tiles = []
            for p, i, row, hit in items:
                pixels = dataset.frame(i).numpy()
                tile = Image.fromarray(_crop(pixels, row[:4]))
                tile = tile.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.NEAREST)
                tiles.append(
                    f'<div class="thumb {"right" if hit else "wrong"}">'
                    f'<img alt="{_e(name)} {p:.2f}" src="{_data_url(picture_png(tile))}">'
                    f"{p:.2f}</div>"
                )
            out.append(f'<p class="note">{title}</p><div class="thumbs">{"".join(tiles)}</div>')
    return "\n".join(out)


def _crop(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box (normalised xyxy) with half its size around it, from a (C, H, W) frame, as
    (h, w) or (h, w, 3) uint8 (16-bit and N-channel frames as yogo.data.channels shows them)."""
    if pixels.dtype != np.uint8 or len(pixels) not in (1, 3):
        pixels = display_planes(pixels)
    channels, height, width = pixels.shape
    x0, y0, x1, y1 = box
    pad_x, pad_y = (x1 - x0) / 2, (y1 - y0) / 2
    left = int(np.clip((x0 - pad_x) * width, 0, width - 1))
    right = int(np.clip(np.ceil((x1 + pad_x) * width), left + 1, width))
    top = int(np.clip((y0 - pad_y) * height, 0, height - 1))
    bottom = int(np.clip(np.ceil((y1 + pad_y) * height), top + 1, height))
    crop = pixels[:, top:bottom, left:right]
    return crop[0] if channels == 1 else np.moveaxis(crop, 0, -1)


def _figure(figure: Any, alt: str) -> str:
    return f'<img class="figure" alt="{_e(alt)}" src="{_data_url(picture_png(figure))}">'


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _interval(ci: Sequence[float | None] | None, digits: int) -> str:
    if ci is None or None in ci:
        return "-"
    return f'<span class="ci">[{_n(ci[0], digits)}, {_n(ci[1], digits)}]</span>'


def _n(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _e(text: object) -> str:
    return html.escape(str(text))
