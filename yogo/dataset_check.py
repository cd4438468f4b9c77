"""The report behind `yogo check`: counts, sizes, the anchor and grid a run would use, and
every problem of a dataset scan, as JSON-ready data and as the table the command prints.

    report = check(CheckConfig(ddf="data.yml"))       # or, from a scan you already have:
    report = check_report(ddf, scan_dataset(ddf, policy="error"), image_hw=None)
    print(format_report(report))
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from yogo.config import CheckConfig, TrainConfig
from yogo.data.images import survey_thumbnails
from yogo.data.index import DEFAULT_NAME, open_cache
from yogo.data.labels import ERROR_KINDS, WARNING_KINDS, Problem
from yogo.data.scan import (
    UNNAMED_CLASSES,
    UNNAMED_CLASSES_FIX,
    DatasetScan,
    LabelledSample,
    capped,
    class_diagnoses,
    missing_classes,
    no_objects_left,
    scan_dataset,
)
from yogo.ddf import SPLITS, DatasetDefinition
from yogo.errors import UserError, display_path, where
from yogo.log import speak_unless_configured
from yogo.model.grid import (
    STRIDE,
    Collision,
    collision_losses,
    grid_collisions,
    grid_shape,
    require_usable_image_hw,
)
from yogo.outputs import Inputs

NO_VAL = (
    "no val split: a run cannot pick its best epoch and writes no best.pth; add val to "
    "dataset_split_fractions"
)
NO_TEST = (
    "no test split: `yogo test` needs --split val, or test_paths or a test fraction in "
    "dataset_split_fractions"
)


def check(cfg: CheckConfig) -> dict[str, Any]:
    """Scan the DDF's dataset as `cfg` says and report on it: what `yogo check` prints."""
    speak_unless_configured()
    cfg.require_valid()
    ddf = DatasetDefinition.from_yaml(cfg.ddf, cfg.dataset_split_override)
    # Without --cache-dir or $YOGO_CACHE_DIR: the index `yogo train` keeps by default, when
    # there is one here (check never makes that folder itself).
    trained = Path(TrainConfig.output_dir) / DEFAULT_NAME
    inputs = Inputs.of(cfg.ddf) | ddf.inputs()
    cache = open_cache(cfg.cache_dir, inputs, trained if trained.is_dir() else None)
    scan = scan_dataset(
        ddf,
        cfg.bad_labels,
        decode=cfg.decode,
        cache=cache,
        min_confidence=cfg.min_label_confidence,
    )
    image_hw = (cfg.image_hw[0], cfg.image_hw[1]) if cfg.image_hw else None
    return check_report(ddf, scan, image_hw)


def check_report(
    ddf: DatasetDefinition, scan: DatasetScan, image_hw: tuple[int, int] | None = None
) -> dict[str, Any]:
    """Everything `yogo check` prints, as JSON-ready data."""
    usable = [s for name in SPLITS for s in scan.splits[name]]
    sizes = Counter((s.height, s.width) for s in usable)
    train = scan.splits["train"]
    if image_hw is None and train:
        image_hw = (train[0].height, train[0].width)
    problems = list(scan.problems)
    if len(sizes) > 1:
        listing = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common())
        message = f"{len(sizes)} image sizes: {listing}; a run resizes them to --image-hw"
        problems.append(Problem(ddf.path, None, "mixed-sizes", message))
    problems += [Problem(ddf.path, None, "dataset-definition", w) for w in ddf.warnings]
    problems += [
        Problem(ddf.path, None, "missing-class", m)
        for m in missing_classes(scan.splits, ddf.class_names)
    ]
    if not scan.splits["val"]:
        problems.append(Problem(ddf.path, None, "empty-split", NO_VAL))
    if not scan.splits["test"]:
        problems.append(Problem(ddf.path, None, "empty-split", NO_TEST))
    if ddf.thumbnail_augmentation and train:
        smallest = (min(s.height for s in train), min(s.width for s in train))
        _, unusable = survey_thumbnails(ddf.thumbnail_augmentation, smallest)
        problems += [Problem(p, None, "thumbnail", f"not pasted: {why}") for p, why in unusable]
    diagnoses = class_diagnoses(scan.problems)
    nothing_left = no_objects_left(scan) if train else None
    reasons = []  # why a run could not train on it (the checks of require_trainable, and more)
    if not train:
        reasons.append("the train split is empty")
    if any(p.severity == "error" and p.action is None for p in problems):
        reasons.append(
            f"fix the errors above ({UNNAMED_CLASSES}: see the fix above)"
            if diagnoses
            else "fix the errors above, or use --bad-labels drop (or clip) to skip (or repair) them"
        )
    elif nothing_left is not None:
        reasons.append(nothing_left)
    grid: dict[str, Any] | None = None
    if image_hw is not None:
        try:
            require_usable_image_hw(image_hw)
        except UserError as e:
            reasons.append(f"{e.message}; fix: {e.fix}")
        cells = grid_shape(image_hw)
        collisions, lost, total = grid_collisions(
            [s.boxes for s in usable], cells, len(ddf.class_names)
        )
        problems += [collision_problem(usable[c.image], c, cells) for c in collisions]
        for message in collision_losses(lost, total, ddf.class_names, image_hw):
            problems.append(Problem(ddf.path, None, "collision-loss", message))
        grid = {
            "image_hw": list(image_hw),
            "stride": STRIDE,
            "cells": list(cells),
            "objects_lost": int(lost.sum()),
            "images_with_collisions": len({c.image for c in collisions}),
        }
    return {
        "ddf": str(ddf.path),
        "class_names": list(ddf.class_names),
        "bad_labels": scan.policy,
        "trainable": not reasons,
        "not_trainable_because": reasons,
        "class_diagnoses": diagnoses,
        "split_fractions": ddf.split_fractions.as_dict(),
        "splits": {name: _split_stats(scan.splits[name], ddf.class_names) for name in SPLITS},
        "image_sizes": [{"height": h, "width": w, "count": n} for (h, w), n in sizes.items()],
        "channels": {str(c): n for c, n in sorted(Counter(s.channels for s in usable).items())},
        "object_size_px": _object_sizes(usable, ddf.class_names),
        "anchor": _anchor(train),
        "label_confidence": _confidence_stats(scan),
        "grid": grid,
        "problem_counts": dict(Counter(p.kind for p in problems)),
        "problems": [p.to_dict() for p in problems],
    }


CONFIDENCE_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _confidence_stats(scan: DatasetScan) -> dict[str, Any] | None:
    """The distribution of the confidence column of machine-labelled rows (None: no row has
    one), and how many rows --min-label-confidence leaves out."""
    values = scan.confidence
    if not len(values):
        return None
    counts, _ = np.histogram(values, bins=CONFIDENCE_BINS)
    quantiles = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0]).round(3).tolist()
    return {
        "rows": len(values),
        "min_label_confidence": scan.min_confidence,
        "left_out": scan.below_confidence,
        "min": quantiles[0],
        "p10": quantiles[1],
        "median": quantiles[2],
        "p90": quantiles[3],
        "max": quantiles[4],
        "histogram": {
            f"{lo:.1f}-{hi:.1f}": int(n)
            for lo, hi, n in zip(CONFIDENCE_BINS, CONFIDENCE_BINS[1:], counts, strict=False)
        },
    }


def _split_stats(
    samples: tuple[LabelledSample, ...], class_names: tuple[str, ...]
) -> dict[str, Any]:
    counts = np.zeros(len(class_names), dtype=np.int64)
    for s in samples:
        counts += np.bincount(s.boxes[:, 0].astype(np.int64), minlength=len(class_names))
    return {
        "images": len(samples),
        "objects": int(counts.sum()),
        "empty_images": sum(1 for s in samples if len(s.boxes) == 0),
        "objects_per_class": {name: int(n) for name, n in zip(class_names, counts, strict=True)},
    }


def _object_sizes(samples: list[LabelledSample], class_names: tuple[str, ...]) -> dict[str, Any]:
    """Median box width and height in pixels of each box's own image, overall and per class."""
    if not samples:
        return {"median_w": None, "median_h": None, "per_class": {}}
    boxes = np.concatenate([s.boxes for s in samples])
    scale = np.concatenate([np.tile([s.width, s.height], (len(s.boxes), 1)) for s in samples])
    px = boxes[:, 3:5] * scale

    def medians(mask: np.ndarray) -> dict[str, float | None]:
        if not mask.any():
            return {"median_w": None, "median_h": None}
        w, h = np.median(px[mask], axis=0)
        return {"median_w": round(float(w), 2), "median_h": round(float(h), 2)}

    result: dict[str, Any] = medians(np.ones(len(px), dtype=bool))
    result["per_class"] = {name: medians(boxes[:, 0] == i) for i, name in enumerate(class_names)}
    return result


def _anchor(train: tuple[LabelledSample, ...]) -> dict[str, float] | None:
    """The anchor a run would fit, as YOGO 1.0.1 fitted it: the mean normalised box width and
    height in train."""
    boxes = [s.boxes for s in train if len(s.boxes)]
    if not boxes:
        return None
    w, h = np.concatenate(boxes)[:, 3:5].mean(axis=0)
    return {"w": round(float(w), 6), "h": round(float(h), 6)}


def collision_problem(
    sample: LabelledSample, collision: Collision, cells: tuple[int, int]
) -> Problem:
    """A shared grid cell, in the words and lines of the sample's label file."""
    lines = sample.lines[list(collision.objects)]
    on = ", ".join(str(line) for line in lines)
    message = (
        f"{len(lines)} objects (lines {on}) share grid cell row {collision.cell[0]}, column "
        f"{collision.cell[1]} of {cells[0]}x{cells[1]}; training keeps line "
        f"{sample.lines[collision.kept]}"
    )
    return Problem(sample.label, int(lines[0]), "collision", message)


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table `yogo check` prints."""
    class_names = report["class_names"]
    out = [f"dataset {display_path(report['ddf'])}: {len(class_names)} classes"]
    header = ["split", "images", "objects", "empty", *class_names]
    rows = [header]
    for name, stats in report["splits"].items():
        per_class = [str(stats["objects_per_class"][c]) for c in class_names]
        counts = (stats["images"], stats["objects"], stats["empty_images"])
        rows.append([name, *map(str, counts), *per_class])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells))
    sizes = ", ".join(f"{s['height']}x{s['width']} ({s['count']})" for s in report["image_sizes"])
    channels = ", ".join(f"{c} ({n})" for c, n in report["channels"].items())
    out.append(f"image sizes (HxW): {sizes or 'none'}; channels: {channels or 'none'}")
    size = report["object_size_px"]
    if size["median_w"] is not None:
        out.append(f"median object size: {size['median_w']} x {size['median_h']} px (w x h)")
    anchor = report["anchor"]
    if anchor is not None:
        out.append(f"anchor a run would fit (normalised w, h): {anchor['w']}, {anchor['h']}")
    confidence = report["label_confidence"]
    if confidence is not None:
        out += _format_confidence(confidence)
    grid = report["grid"]
    if grid is not None:
        h, w = grid["image_hw"]
        out.append(
            f"grid at --image-hw {h} {w}: {grid['cells'][0]}x{grid['cells'][1]} cells, "
            f"{grid['objects_lost']} object(s) lost to shared cells in "
            f"{grid['images_with_collisions']} image(s)"
        )
    out += _format_problems(report["problems"])
    if report["class_diagnoses"]:
        out.append(f"{UNNAMED_CLASSES}:")
        out += [f"  {d}" for d in report["class_diagnoses"]]
        policy = report["bad_labels"]
        dropped = f" (--bad-labels {policy} drops these rows: those classes are not trained)"
        out.append(f"  fix: {UNNAMED_CLASSES_FIX}{dropped if policy != 'error' else ''}")
    if report["trainable"]:
        out.append(f"trainable: yes (--bad-labels {report['bad_labels']})")
    else:
        out += [f"trainable: no: {reason}" for reason in report["not_trainable_because"]]
    return "\n".join(out)


def _format_confidence(stats: dict[str, Any]) -> list[str]:
    """Machine-label confidences: quantiles, a text histogram, and what the threshold leaves
    out."""
    out = [
        f"label confidence ({stats['rows']} machine-labelled rows): min {stats['min']}, "
        f"10% {stats['p10']}, median {stats['median']}, 90% {stats['p90']}, max {stats['max']}"
    ]
    peak = max(stats["histogram"].values())
    for span, n in stats["histogram"].items():
        if n:
            out.append(f"  {span}  {n:7d}  {'#' * max(1, round(30 * n / peak))}")
    threshold = stats["min_label_confidence"]
    out.append(
        f"  --min-label-confidence {threshold:g} leaves out {stats['left_out']} row(s)"
        + ("" if threshold else " (raise it to train on the surer labels only)")
    )
    return out


def _format_problems(problems: list[dict[str, Any]]) -> list[str]:
    if not problems:
        return ["problems: none"]
    counts = Counter((p["severity"], p["kind"]) for p in problems)
    out = [f"problems: {len(problems)}"]
    for (severity, kind), n in sorted(counts.items()):
        meaning = ERROR_KINDS.get(kind) or WARNING_KINDS.get(kind, "")
        out.append(f"  {severity:7s} {kind:18s} {n:6d}  {meaning}")
    lines = []
    for p in problems:
        text = f"{where(p['path'], p['line'])}: {p['severity']}: {p['message']}"
        lines.append((p["kind"], f"{text} ({p['action']})" if p["action"] else text))
    return out + capped(lines)
