"""`yogo infer MODEL --path-to-images PATH`: detect and count in images with a .pth or .onnx.

    summary = infer(InferConfig(model="best.onnx", path_to_images="frames", count=True))
    summary.totals            # {"healthy": 1203, "ring": 17, ...}

Both model kinds compute the same thing (yogo.predictor): uint8 frames resized to the model
size in, decoded predictions out; post-processing (thresholds, class-agnostic NMS) is
yogo.boxes.postprocess, shared with `yogo test`.

Written under the output folder: predictions.json (every detection, always), and on request
labels/*.txt (YOLO: class xc yc w h confidence), boxes/* (images with labelled boxes) and
counts.csv (one row per image).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yogo.boxes import postprocess
from yogo.config import InferConfig
from yogo.data.images import IMAGE_EXTENSIONS, ImageError, decode_image
from yogo.data.loader import Loaders, default_num_workers
from yogo.data.transforms import resize
from yogo.errors import UserError, display_path
from yogo.log import progress
from yogo.outputs import require_output_folder, write_atomic
from yogo.predictor import Predictor, load_predictor


@dataclass
class InferSummary:
    images: int = 0
    detections: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    kind: str = ""  # the predictor that ran: "pytorch on cpu", "onnxruntime on CPU", ...


def find_images(path: Path, recursive: bool) -> tuple[Path, list[Path]]:
    """(the folder output names are relative to, the images in name order)."""
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise UserError("does not exist", path=path, fix="give an image or a folder of images")
    pattern = "**/*" if recursive else "*"
    images = sorted(
        p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        deeper = "" if recursive else " (add --recursive to look in sub-folders)"
        raise UserError(f"no PNG, JPEG, TIFF or BMP images here{deeper}", path=path)
    return path, images


class _Frames(torch.utils.data.Dataset[tuple[int, Any]]):
    """Image i decoded and resized to the model size, or the reason it cannot be read."""

    def __init__(self, paths: Sequence[Path], image_hw: tuple[int, int], channels: int) -> None:
        self.paths, self.image_hw, self.channels = paths, image_hw, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        try:
            pixels = decode_image(self.paths[i], self.channels)
        except ImageError as e:
            return i, str(e)
        return i, (resize(torch.from_numpy(pixels), self.image_hw).numpy(), pixels.shape[1:])


def _as_list(items: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return items


def infer(cfg: InferConfig) -> InferSummary:
    """Run over every image under `cfg.path_to_images`; write the outputs; return the totals."""
    cfg.require_valid()
    predictor = load_predictor(Path(cfg.model), cfg.device)
    root, paths = find_images(Path(cfg.path_to_images), cfg.recursive)
    out = Path(cfg.output_dir)
    if cfg.save_preds or cfg.draw_boxes:
        _require_distinct_stems(paths, root)
    require_output_folder(out, option="--output-dir")
    _require_new_outputs(out, planned_outputs(out, paths, root, cfg), cfg, paths)
    if cfg.class_names:
        if len(cfg.class_names) != len(predictor.class_names):
            raise UserError(
                f"--class-names has {len(cfg.class_names)} names for a model with "
                f"{len(predictor.class_names)} classes"
            )
        predictor = dataclasses.replace(predictor, class_names=tuple(cfg.class_names))
    out.mkdir(parents=True, exist_ok=True)
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    frames = _Frames(paths, predictor.image_hw, predictor.channels)
    start = time.perf_counter()
    with Loaders() as loaders:
        workers = min(workers, max(0, len(paths) // cfg.batch_size))
        loader = loaders.make(frames, cfg.batch_size, workers, collate_fn=_as_list)
        summary, records, count_rows = _predict_all(predictor, loader, paths, root, cfg)
    summary.seconds = time.perf_counter() - start
    summary.kind = predictor.kind
    _write_results(out, predictor, cfg, summary, records, count_rows)
    return summary


def _predict_all(
    predictor: Predictor, loader: Any, paths: list[Path], root: Path, cfg: InferConfig
) -> tuple[InferSummary, list[dict[str, Any]], list[list[Any]]]:
    """Every batch through the model and post-processing; labels/ and boxes/ as it goes."""
    out = Path(cfg.output_dir)
    names = predictor.class_names
    summary = InferSummary(totals=dict.fromkeys(names, 0))
    records: list[dict[str, Any]] = []
    count_rows: list[list[Any]] = []
    for batch in _progress(loader, len(paths)):
        good = [(i, item) for i, item in batch if not isinstance(item, str)]
        summary.unreadable += [(paths[i], item) for i, item in batch if isinstance(item, str)]
        if not good:
            continue
        decoded = predictor.run(np.stack([pixels for _, (pixels, _) in good]))
        detections = postprocess(
            decoded, cfg.obj_thresh, cfg.iou_thresh, cfg.min_class_confidence_threshold
        )
        for (i, (_, original_hw)), found in zip(good, detections, strict=True):
            relative = paths[i].relative_to(root)
            rows = found.numpy().astype(np.float64)
            per_class = np.bincount(rows[:, 6].astype(np.int64), minlength=len(names))
            for name, n in zip(names, per_class, strict=True):
                summary.totals[name] += int(n)
            summary.images += 1
            summary.detections += len(rows)
            records.append(_record(relative, original_hw, rows, names))
            count_rows.append([str(relative), len(rows), *per_class.tolist()])
            if cfg.save_preds:
                _write_yolo(out / "labels" / relative.with_suffix(".txt"), rows)
            if cfg.draw_boxes:
                _draw(paths[i], out / "boxes" / relative.with_suffix(".png"), rows, names)
    return summary, records, count_rows


def _write_results(
    out: Path,
    predictor: Predictor,
    cfg: InferConfig,
    summary: InferSummary,
    records: list[dict[str, Any]],
    count_rows: list[list[Any]],
) -> None:
    names = predictor.class_names
    document = {
        "model": predictor.kind,
        "class_names": list(names),
        "thresholds": {
            "obj_thresh": cfg.obj_thresh,
            "iou_thresh": cfg.iou_thresh,
            "min_class_confidence_threshold": cfg.min_class_confidence_threshold,
        },
        "boxes": "x0, y0, x1, y1 and xc, yc, w, h normalised to the image (0..1); "
        "confidence = objectness x class probability",
        "images": records,
        "unreadable": [{"path": str(p), "reason": why} for p, why in summary.unreadable],
    }
    write_atomic(out / "predictions.json", json.dumps(document, separators=(",", ":")))
    if cfg.count:
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(["image", "total", *names])
        writer.writerows(count_rows)
        write_atomic(out / "counts.csv", table.getvalue())


def planned_outputs(out: Path, paths: Sequence[Path], root: Path, cfg: InferConfig) -> list[Path]:
    """Every file this run will write under `out`."""
    planned = [out / "predictions.json"]
    if cfg.count:
        planned.append(out / "counts.csv")
    for path in paths:
        relative = path.relative_to(root)
        if cfg.save_preds:
            planned.append(out / "labels" / relative.with_suffix(".txt"))
        if cfg.draw_boxes:
            planned.append(out / "boxes" / relative.with_suffix(".png"))
    return planned


def _require_new_outputs(
    out: Path, planned: Sequence[Path], cfg: InferConfig, paths: Sequence[Path]
) -> None:
    """No file of `planned` exists (unless --force), and none is an input, ever."""
    existing = [p for p in planned if p.exists()]
    if not existing:
        return
    inputs = {os.path.realpath(p) for p in [*paths, Path(cfg.model)]}
    for path in existing:
        if os.path.realpath(path) in inputs:
            raise UserError(
                "--output-dir would write over an input of this command, even with --force",
                path=path,
                fix="choose another --output-dir",
            )
    if cfg.force:
        return
    shown = ", ".join(display_path(p) for p in existing[:3])
    more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
    raise UserError(
        f"--output-dir already holds {len(existing)} file(s) this run would write ({shown}{more})",
        path=out,
        fix="choose another --output-dir, or --force to replace them",
    )


def _require_distinct_stems(paths: Sequence[Path], root: Path) -> None:
    """labels/NAME.txt and boxes/NAME.png drop the image suffix: `a.png` and `a.tif` in one
    folder would write the same files."""
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.relative_to(root).with_suffix("")
        if key in seen:
            raise UserError(
                f"{display_path(seen[key])} and {display_path(path)} would write the same "
                "labels/ and boxes/ files",
                fix="rename one of them, or infer on them separately",
            )
        seen[key] = path


def _record(
    relative: Path, original_hw: tuple[int, int], rows: np.ndarray, names: Sequence[str]
) -> dict[str, Any]:
    x0, y0, x1, y1, objectness, class_prob, classes = rows.T
    columns = (
        np.stack(
            [
                objectness * class_prob,
                objectness,
                class_prob,
                x0,
                y0,
                x1,
                y1,
                (x0 + x1) / 2,
                (y0 + y1) / 2,
                x1 - x0,
                y1 - y0,
            ]
        )
        .T.round(6)
        .tolist()
    )  # one conversion for the whole image: frames hold thousands
    detections = [
        {
            "class": cls,
            "class_name": names[cls],
            "confidence": v[0],
            "objectness": v[1],
            "class_probability": v[2],
            "xyxy": v[3:7],
            "cxcywh": v[7:11],
        }
        for cls, v in zip(classes.astype(np.int64).tolist(), columns, strict=True)
    ]
    height, width = original_hw
    return {
        "image": str(relative),
        "height": int(height),
        "width": int(width),
        "detections": detections,
    }


def _cxcywh(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0


def _write_yolo(path: Path, rows: np.ndarray) -> None:
    """YOLO label format plus a confidence column: class xc yc w h confidence."""
    lines = [
        f"{int(cls)} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f} {obj * prob:.6f}"
        for x0, y0, x1, y1, obj, prob, cls in rows
        for xc, yc, w, h in [_cxcywh(x0, y0, x1, y1)]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(line + "\n" for line in lines))


# One colour per class (Okabe-Ito, readable for colour-blind users), cycling.
COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")


def _draw(image_path: Path, target: Path, rows: np.ndarray, names: Sequence[str]) -> None:
    """The original image (full resolution, RGB) with a labelled box per detection."""
    from PIL import Image, ImageDraw

    pixels = decode_image(image_path, 3).transpose(1, 2, 0)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for x0, y0, x1, y1, obj, prob, cls in rows:
        colour = COLOURS[int(cls) % len(COLOURS)]
        box = (x0 * width, y0 * height, x1 * width, y1 * height)
        draw.rectangle(box, outline=colour, width=max(1, round(min(width, height) / 400)))
        draw.text((box[0] + 2, box[1] + 1), f"{names[int(cls)]} {obj * prob:.2f}", fill=colour)
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, encoded.getvalue())


def _progress(loader: Any, total: int) -> Iterator[Any]:
    bar = progress(total=total, unit="img", leave=True)
    try:
        for batch in loader:
            yield batch
            bar.update(len(batch))
    finally:
        bar.close()


def format_counts(summary: InferSummary) -> str:
    width = max([len(n) for n in summary.totals] + [5])
    lines = [f"{'class':<{width}}  count"]
    lines += [f"{name:<{width}}  {n:>5}" for name, n in summary.totals.items()]
    lines.append(f"{'total':<{width}}  {summary.detections:>5}")
    return "\n".join(lines)
