"""Checking a whole dataset: every label file and image header once, the `--bad-labels` policy,
and the report behind `yogo check`.

    ddf = DatasetDefinition.from_yaml("ddf.yml")
    scan = scan_dataset(ddf, policy="error")      # what a run would train on, and every problem
    report = check_report(ddf, scan, image_hw=None)
    print(format_report(report))

Training calls `scan_dataset` and `require_trainable` too, so `yogo check` and `yogo train` never
disagree about what is usable.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.data.images import ImageError, decode_image, read_header
from yogo.data.labels import (
    ERROR_KINDS,
    SAMPLE_KINDS,
    WARNING_KINDS,
    BadLabelsPolicy,
    ClassLookup,
    Problem,
    apply_policy,
    load_label_studio_ids,
    parse_label_file,
)
from yogo.ddf import SPLITS, DatasetDefinition
from yogo.errors import UserError, display_path, where

# Total stride of the model family until the model registry exists (SPEC §5.1: base_model).
GRID_STRIDE = 8
SHOWN_PER_KIND = 10  # warnings of one kind printed in the table; --json has every one


@dataclass(frozen=True)
class LabelledSample:
    """A usable sample: image, label file, boxes after the policy, and the image header."""

    image: Path
    label: Path
    boxes: np.ndarray  # (N, 5) float32 class, xc, yc, w, h normalised
    lines: np.ndarray  # (N,) line of each box in the label file
    height: int
    width: int
    channels: int


@dataclass(frozen=True)
class DatasetScan:
    """What a run would use under `policy`, per split, and every problem found."""

    policy: BadLabelsPolicy
    splits: dict[str, tuple[LabelledSample, ...]]
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")


def scan_dataset(
    ddf: DatasetDefinition, policy: BadLabelsPolicy = "error", decode: bool = False
) -> DatasetScan:
    """Parse every label file and read every image header once (`decode`: every image fully,
    on all cores); apply `policy` to bad rows and samples."""
    lookups: dict[Path, ClassLookup] = {}
    problems: list[Problem] = []
    splits: dict[str, tuple[LabelledSample, ...]] = {}
    for name in SPLITS:
        kept: list[LabelledSample] = []
        for sample in ddf.splits[name]:
            folder = sample.label.parent
            if folder not in lookups:
                lookups[folder] = ClassLookup(ddf.classes, load_label_studio_ids(folder))
            usable, found = _scan_sample(sample.image, sample.label, lookups[folder], policy)
            if usable is not None:
                kept.append(usable)
            problems += found
        splits[name] = tuple(kept)
    if decode:
        splits, decode_problems = _decode_all(splits, policy)
        problems += decode_problems
    problems += _unlabelled_and_ambiguous(ddf)
    return DatasetScan(policy, splits, tuple(problems))


def require_trainable(scan: DatasetScan) -> None:
    """Raise a UserError listing every error when the scan's policy is `error`, or when
    nothing is left to train on."""
    if scan.policy == "error" and scan.errors:
        raise UserError(
            f"{len(scan.errors)} problem(s) in the labels and images",
            details=[str(p) for p in scan.errors],
            fix="correct the files above, or use --bad-labels drop (or clip) to skip "
            "(or repair) them",
        )
    if not scan.splits["train"]:
        raise UserError("the train split is empty: there is nothing to train on")


def _scan_sample(
    image: Path | None, label: Path, classes: ClassLookup, policy: BadLabelsPolicy
) -> tuple[LabelledSample | None, list[Problem]]:
    """The usable sample (None when the whole sample is unusable) and every problem in it."""
    parsed = parse_label_file(label, classes)
    result = apply_policy(parsed, policy)
    unusable = [p for p in parsed.problems if p.kind in SAMPLE_KINDS]
    if image is None:
        message = f"no image named {label.stem}.* (png, jpg, jpeg, tif, tiff, bmp) beside it"
        unusable.insert(0, Problem(label, None, "no-image", message))
    else:
        try:
            header = read_header(image)
        except ImageError as e:
            unusable.insert(0, Problem(image, None, "unreadable-image", str(e)))
    if image is not None and not unusable:
        usable = LabelledSample(
            image,
            label,
            result.boxes,
            result.lines,
            header.height,
            header.width,
            header.channels,
        )
        return usable, list(result.problems)
    # The whole sample goes; its row problems are still listed so one pass fixes everything.
    action = "dropped sample" if policy != "error" else None
    found = unusable + [p for p in parsed.problems if p.kind not in SAMPLE_KINDS]
    return None, [Problem(p.path, p.line, p.kind, p.message, action) for p in found]


def _decode_one(path: str) -> str | None:
    try:
        decode_image(Path(path), channels=1)
    except ImageError as e:
        return str(e)
    return None


def _decode_all(
    splits: dict[str, tuple[LabelledSample, ...]], policy: BadLabelsPolicy
) -> tuple[dict[str, tuple[LabelledSample, ...]], list[Problem]]:
    """Decode every image on all cores; corrupt ones become problems (and are dropped unless
    the policy is `error`)."""
    images = [str(s.image) for name in SPLITS for s in splits[name]]
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, workers or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunk = max(1, len(images) // (workers * 8))
        reasons = list(pool.map(_decode_one, images, chunksize=chunk))
    bad = {Path(path): reason for path, reason in zip(images, reasons, strict=True) if reason}
    action = "dropped sample" if policy != "error" else None
    problems = [Problem(path, None, "corrupt-image", why, action) for path, why in bad.items()]
    if policy == "error":
        return splits, problems
    kept = {name: tuple(s for s in splits[name] if s.image not in bad) for name in SPLITS}
    return kept, problems


def _unlabelled_and_ambiguous(ddf: DatasetDefinition) -> list[Problem]:
    problems = []
    by_folder = Counter(p.parent for p in ddf.unlabelled_images)
    for folder, count in sorted(by_folder.items()):
        message = f"{count} image(s) without a label file (not used)"
        problems.append(Problem(folder, None, "unlabelled-images", message))
    for chosen, paths in sorted(ddf.ambiguous_images.items()):
        names = ", ".join(p.name for p in paths)
        message = f"several images share this stem ({names}); using {chosen.name}"
        problems.append(Problem(chosen, None, "ambiguous-image", message))
    return problems


# --- the report ----------------------------------------------------------------------------


def grid_shape(image_hw: tuple[int, int], stride: int = GRID_STRIDE) -> tuple[int, int]:
    """Grid rows and columns for an input size: each stride-2 conv (padding 1) rounds up."""
    return math.ceil(image_hw[0] / stride), math.ceil(image_hw[1] / stride)


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
    grid: dict[str, Any] | None = None
    if image_hw is not None:
        collisions, lost = _collisions(usable, grid_shape(image_hw))
        problems += collisions
        grid = {
            "image_hw": list(image_hw),
            "stride": GRID_STRIDE,
            "cells": list(grid_shape(image_hw)),
            "objects_lost": lost,
            "images_with_collisions": len({p.path for p in collisions}),
        }
    has_errors = any(p.severity == "error" and p.action is None for p in problems)
    trainable = bool(train) and not has_errors
    return {
        "ddf": str(ddf.path),
        "class_names": list(ddf.classes),
        "bad_labels": scan.policy,
        "trainable": trainable,
        "split_fractions": ddf.split_fractions.as_dict(),
        "splits": {name: _split_stats(scan.splits[name], ddf.classes) for name in SPLITS},
        "image_sizes": [{"height": h, "width": w, "count": n} for (h, w), n in sizes.items()],
        "channels": {str(c): n for c, n in sorted(Counter(s.channels for s in usable).items())},
        "object_size_px": _object_sizes(usable, ddf.classes),
        "anchor": _anchor(train),
        "grid": grid,
        "problem_counts": dict(Counter(p.kind for p in problems)),
        "problems": [p.to_dict() for p in problems],
    }


def _split_stats(samples: tuple[LabelledSample, ...], classes: tuple[str, ...]) -> dict[str, Any]:
    counts = np.zeros(len(classes), dtype=np.int64)
    for s in samples:
        counts += np.bincount(s.boxes[:, 0].astype(np.int64), minlength=len(classes))
    return {
        "images": len(samples),
        "objects": int(counts.sum()),
        "empty_images": sum(1 for s in samples if len(s.boxes) == 0),
        "objects_per_class": {name: int(n) for name, n in zip(classes, counts, strict=True)},
    }


def _object_sizes(samples: list[LabelledSample], classes: tuple[str, ...]) -> dict[str, Any]:
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
    result["per_class"] = {name: medians(boxes[:, 0] == i) for i, name in enumerate(classes)}
    return result


def _anchor(train: tuple[LabelledSample, ...]) -> dict[str, float] | None:
    """The anchor a run would fit (SPEC §5.2): mean normalised box width and height in train."""
    boxes = [s.boxes for s in train if len(s.boxes)]
    if not boxes:
        return None
    w, h = np.concatenate(boxes)[:, 3:5].mean(axis=0)
    return {"w": round(float(w), 6), "h": round(float(h), 6)}


def _collisions(samples: list[LabelledSample], cells: tuple[int, int]) -> tuple[list[Problem], int]:
    """One warning per grid cell holding more than one object centre, and how many objects
    the grid loses (all but one per crowded cell)."""
    rows, cols = cells
    counts = [len(s.boxes) for s in samples]
    if not sum(counts):
        return [], 0
    boxes = np.concatenate([s.boxes for s in samples])
    lines = np.concatenate([s.lines for s in samples])
    owner = np.repeat(np.arange(len(samples)), counts)
    row = np.clip((boxes[:, 2] * rows).astype(np.int64), 0, rows - 1)
    col = np.clip((boxes[:, 1] * cols).astype(np.int64), 0, cols - 1)
    key = (owner * rows + row) * cols + col
    order = np.argsort(key, kind="stable")
    _, starts, multiplicity = np.unique(key[order], return_index=True, return_counts=True)
    problems = []
    for start, n in zip(starts[multiplicity > 1], multiplicity[multiplicity > 1], strict=True):
        members = order[start : start + n]
        first = members[0]
        on = ", ".join(str(line) for line in lines[members])
        message = (
            f"{n} objects (lines {on}) share grid cell row {row[first]}, column {col[first]} "
            f"of {rows}x{cols}; training keeps one"
        )
        label = samples[owner[first]].label
        problems.append(Problem(label, int(lines[first]), "collision", message))
    return problems, int((multiplicity[multiplicity > 1] - 1).sum())


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table `yogo check` prints."""
    classes = report["class_names"]
    out = [f"dataset {display_path(report['ddf'])}: {len(classes)} classes"]
    header = ["split", "images", "objects", "empty", *classes]
    rows = [header]
    for name, stats in report["splits"].items():
        per_class = [str(stats["objects_per_class"][c]) for c in classes]
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
    grid = report["grid"]
    if grid is not None:
        h, w = grid["image_hw"]
        out.append(
            f"grid at --image-hw {h} {w}: {grid['cells'][0]}x{grid['cells'][1]} cells, "
            f"{grid['objects_lost']} object(s) lost to shared cells in "
            f"{grid['images_with_collisions']} image(s)"
        )
    out += _format_problems(report["problems"])
    if report["trainable"]:
        out.append(f"trainable: yes (--bad-labels {report['bad_labels']})")
    elif not report["splits"]["train"]["images"]:
        out.append("trainable: no: the train split is empty")
    else:
        out.append(
            "trainable: no: fix the errors above, or use --bad-labels drop (or clip) to skip "
            "(or repair) them"
        )
    return "\n".join(out)


def _format_problems(problems: list[dict[str, Any]]) -> list[str]:
    if not problems:
        return ["problems: none"]
    counts = Counter((p["severity"], p["kind"]) for p in problems)
    out = [f"problems: {len(problems)}"]
    for (severity, kind), n in sorted(counts.items()):
        meaning = ERROR_KINDS.get(kind) or WARNING_KINDS.get(kind, "")
        out.append(f"  {severity:7s} {kind:18s} {n:6d}  {meaning}")
    shown: Counter[str] = Counter()
    for p in problems:
        shown[p["kind"]] += 1
        # Every error is listed (each must be fixed); warnings only a few per kind.
        if p["severity"] == "warning" and shown[p["kind"]] > SHOWN_PER_KIND:
            continue
        text = f"{where(p['path'], p['line'])}: {p['severity']}: {p['message']}"
        out.append(f"{text} ({p['action']})" if p["action"] else text)
    hidden = {k: n - SHOWN_PER_KIND for (s, k), n in counts.items() if s == "warning"}
    hidden = {k: n for k, n in hidden.items() if n > 0}
    if hidden:
        more = ", ".join(f"{n} more {k}" for k, n in sorted(hidden.items()))
        out.append(f"... {more} (all of them are in --json)")
    return out
