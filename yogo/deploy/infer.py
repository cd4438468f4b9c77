"""`yogo infer MODEL --path-to-images PATH` (or `--path-to-zarr STORE`): detect and count
in frames with a .pth or .onnx.

    summary = infer(InferConfig(model="best.onnx", path_to_images="frames", count=True))
    summary.totals            # {"healthy": 1203, "ring": 17, ...}

Both model kinds compute the same thing (yogo.deploy.predictor): uint8 frames resized to the model
size in, decoded predictions out; post-processing (thresholds, class-agnostic NMS) is
yogo.model.boxes.postprocess, shared with `yogo test`. Frames come from image files or a zarr store
(yogo.data.frames) and are named by their path in the folder or `<store>/<index>`.

Written under the output folder: predictions.json (every detection, always), and on request
labels/*.txt (YOLO: class xc yc w h confidence) with a ddf.yml that trains on them (and, for a
zarr store, the frames as images/*.png), boxes/* (frames with labelled boxes), counts.csv (one
row per frame), the YOGO 1.0.1 .npy array; and the Label Studio tasks file
(yogo.deploy.labelstudio).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch

from yogo import __version__
from yogo.config import InferConfig, require_tile
from yogo.data.frames import ImageFiles, ZarrFrames, open_frames
from yogo.data.images import ChannelMismatch, ImageError
from yogo.data.loader import Loaders, default_num_workers
from yogo.data.transforms import resize
from yogo.ddf import SplitFractions, ddf_text, parse_split_override
from yogo.deploy.ensemble import load_ensemble
from yogo.deploy.heatmap import Heatmap, heatmap_figure, load_mask, masked
from yogo.deploy.infer_files import Found, draw, record, write_npy, write_png, write_yolo
from yogo.deploy.labelstudio import frame_task, url_prefix
from yogo.deploy.predictor import Predictor
from yogo.errors import UserError, display_path
from yogo.evaluation.counting import Ratio, thresholds_for
from yogo.evaluation.plots import save_picture
from yogo.log import progress, speak_unless_configured
from yogo.model.tiles import uses_tiles
from yogo.outputs import Inputs, OutputSet, plan_file, write_atomic

log = logging.getLogger(__name__)
Frames = ImageFiles | ZarrFrames


@dataclass
class InferSummary:
    images: int = 0
    detections: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)  # in the heatmap mask, counted apart
    counts: dict[str, Any] = field(default_factory=dict)  # counts.json: corrected, per specimen
    thresholds: str = ""  # the objectness thresholds used, in words
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (frame name, reason)
    seconds: float = 0.0
    kind: str = ""  # the predictor that ran: "pytorch on cpu", "onnxruntime on CPU", ...
    written: list[Path] = field(default_factory=list)  # the files of the whole run, not per frame


class _Frames(torch.utils.data.Dataset[tuple[int, Any]]):
    """Frame i decoded and resized to the model size (with the decoded frame when `keep` asks
    for it), or the reason it cannot be read."""

    def __init__(
        self, frames: Frames, predictor: Predictor, keep: bool, tiles: bool | None = None
    ) -> None:
        self.frames, self.image_hw, self.keep = frames, predictor.image_hw, keep
        self.channels, self.bit_depth = predictor.channels, predictor.bit_depth
        self.tiles, self.tiled_model = tiles, predictor.tile_overlap is not None

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        try:
            pixels = self.frames.read(i, self.channels, self.bit_depth)
        except ImageError as e:
            return i, str(e)
        if uses_tiles(pixels.shape[1:], self.image_hw, self.tiled_model, self.tiles):
            # The whole frame goes to the model as tiles (`resized` is None).
            return i, (None, pixels, pixels.shape[1:])
        resized = resize(torch.from_numpy(pixels), self.image_hw).numpy()
        return i, (resized, pixels if self.keep else None, pixels.shape[1:])


def _as_list(items: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return items


@dataclass
class _Plan:
    """What this run writes, decided once from the config and the frames."""

    out: Path
    frames: Frames
    labels: bool  # labels/<stem>.txt
    boxes: str | None  # boxes/<stem>.<type>
    frame_images: bool  # images/<stem>.png: zarr frames as files for training and Label Studio
    npy: Path | None
    ddf: Path | None
    label_studio: Path | None
    drawing: tuple[int | None, bool, bool]  # --line-width, --hide-labels, --hide-conf

    @staticmethod
    def of(cfg: InferConfig, frames: Frames) -> _Plan:
        out = Path(cfg.output_dir)
        from_zarr = isinstance(frames, ZarrFrames)
        source = Path(cfg.path_to_zarr or cfg.path_to_images or ".")
        return _Plan(
            out=out,
            frames=frames,
            labels=cfg.save_preds,
            boxes=cfg.output_img_filetype.lstrip(".") if cfg.draw_boxes else None,
            frame_images=from_zarr and (cfg.save_preds or cfg.label_studio is not None),
            npy=out / f"{(source.stem if from_zarr else source.resolve().stem)}.npy"
            if cfg.save_npy
            else None,
            ddf=out / "ddf.yml" if cfg.save_preds else None,
            label_studio=Path(cfg.label_studio) if cfg.label_studio else None,
            drawing=(cfg.line_width, cfg.hide_labels, cfg.hide_conf),
        )

    def per_frame(self, stem: Path) -> list[Path]:
        paths = []
        if self.labels:
            paths.append(self.out / "labels" / f"{stem}.txt")
        if self.boxes:
            paths.append(self.out / "boxes" / f"{stem}.{self.boxes}")
        if self.frame_images:
            paths.append(self.out / "images" / f"{stem}.png")
        return paths

    def every_file(self, count: bool, heatmap: bool) -> list[Path]:
        """Every file this run will write under the output folder."""
        planned = [self.out / "predictions.json"]
        planned += [self.out / "heatmap_mask.npy", self.out / "heatmap.png"] if heatmap else []
        planned += [self.out / "counts.csv", self.out / "counts.json"] if count else []
        planned += [p for p in (self.npy, self.ddf) if p is not None]
        return planned + [p for stem in self.frames.stems for p in self.per_frame(stem)]


def infer(cfg: InferConfig) -> InferSummary:
    """Run over every frame of `cfg.path_to_images` or `cfg.path_to_zarr`; write the outputs;
    return the totals."""
    speak_unless_configured()
    cfg.require_valid()
    split = parse_split_override(cfg.split_fractions, "--split-fractions")
    model_paths = [Path(cfg.model), *map(Path, cfg.models or [])]
    predictor = load_ensemble(
        model_paths, cfg.device, cfg.crop_height, cfg.half, cfg.tta, precision=cfg.precision
    )
    if cfg.tile_overlap is not None:
        require_tile(list(predictor.image_hw), cfg.tile_overlap)  # the model's input is the tile
    frames = open_frames(cfg.path_to_images, cfg.path_to_zarr, cfg.recursive, cfg.zarr_layout)
    plan = _Plan.of(cfg, frames)
    _require_channels(frames, predictor, plan.frame_images)
    if plan.labels or plan.boxes or plan.frame_images:
        _require_distinct_stems(frames)
    # An OpenVINO IR's weights are an input too.
    model_files = [
        *model_paths,
        *(p.with_suffix(".bin") for p in model_paths if p.suffix == ".xml"),
    ]
    inputs = Inputs.of(*frames.inputs, *model_files, folders=[frames.folder])
    counts_wanted = bool(cfg.count or cfg.ratio or cfg.report)
    names = cfg.class_names or predictor.class_names
    ratios = [Ratio.parse(text, names) for text in cfg.ratio or []]
    masking = cfg.heatmap_mask is not None or cfg.heatmap_mask_path is not None
    if cfg.heatmap_mask is not None:
        _require_one_run(frames)
    files = plan.every_file(counts_wanted, masking)
    files += _plan_named_file(
        plan.label_studio, "--label-studio", plan.out, files, cfg.force, inputs
    )
    report = Path(cfg.report) if cfg.report else None
    files += _plan_named_file(report, "--report", plan.out, files, cfg.force, inputs)
    outputs = OutputSet(
        plan.out, "infer", files, force=cfg.force, inputs=inputs, option="--output-dir"
    )
    if cfg.class_names:
        if len(cfg.class_names) != len(predictor.class_names):
            raise UserError(
                f"--class-names has {len(cfg.class_names)} names for a model with "
                f"{len(predictor.class_names)} classes"
            )
        names = tuple(cfg.class_names)
        renamed = dataclasses.replace(predictor.counting, class_names=names)
        predictor = dataclasses.replace(predictor, class_names=names, counting=renamed)
    predictor = dataclasses.replace(
        predictor, counting=thresholds_for(predictor.counting, cfg.obj_thresh)
    )
    grid = _grid(predictor) if masking else (0, 0)
    given_mask = (
        load_mask(Path(cfg.heatmap_mask_path), len(names), grid, predictor.image_hw)
        if cfg.heatmap_mask_path is not None
        else None
    )
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    if isinstance(frames, ZarrFrames):
        # zarr 3 reads on an event-loop thread of this process; a loader worker forked while
        # that thread holds a lock inherits the lock held and no thread to release it, and
        # hangs for good. Zarr chunks decode quickly; image files are what workers are for.
        workers = 0
    keep = bool(plan.boxes or plan.frame_images)
    dataset = _Frames(frames, predictor, keep, cfg.tiles)
    start = time.perf_counter()
    with outputs:
        with Loaders() as loaders:
            workers = min(workers, max(0, len(frames) // cfg.batch_size))
            loader = loaders.make(dataset, cfg.batch_size, workers, collate_fn=_as_list)
            summary, found = _predict_all(predictor, loader, plan, cfg)
        if masking:
            found = _apply_mask(found, given_mask, grid, cfg, predictor, plan.out)
            n = len(predictor.class_names)
            summary.totals = dict(zip(predictor.class_names, _total(found, n), strict=True))
            inside = _total(found, n, masked=True)
            summary.masked = dict(zip(predictor.class_names, inside, strict=True))
        summary.seconds = time.perf_counter() - start
        summary.kind = predictor.kind
        summary.thresholds = predictor.counting.describe()
        if counts_wanted:
            summary.counts = specimen_counts(predictor, plan.frames, found, ratios)
        summary.written = _write_results(plan, predictor, cfg, summary, found, split)
        if report is not None:
            from yogo.evaluation.html_report import write_infer_report

            write_infer_report(report, summary.counts, predictor.counting)
            summary.written.append(report)
    return summary


def _require_channels(frames: Frames, predictor: Predictor, frame_images: bool) -> None:
    """Stop before any work when the first frame's channels are not the model's: every frame
    of a run comes from one instrument, so this is a mismatch of data and model, not one bad
    frame to skip. Zarr frames written as images/<stem>.png must fit a PNG: gray (8 or 16
    bits) or 8-bit RGB."""
    png = predictor.channels == 1 or (predictor.channels == 3 and predictor.bit_depth == 8)
    if frame_images and not png:
        raise UserError(
            f"--save-preds and --label-studio write zarr frames as PNG images, which cannot "
            f"hold this model's {predictor.channels} channel(s) of {predictor.bit_depth} bits",
            path=frames.inputs[0],
            fix="leave out --save-preds and --label-studio (counts, --save-npy and --draw-boxes "
            "work), or write the frames as TIFF stacks yourself",
        )
    try:
        frames.read(0, predictor.channels, predictor.bit_depth)
    except ChannelMismatch as e:
        raise UserError(str(e), path=frames.inputs[0]) from None
    except ImageError:  # a damaged frame: reported with the others
        pass


def _grid(predictor: Predictor) -> tuple[int, int]:
    """The model's output grid (Sy, Sx): its output on one blank frame."""
    blank = np.zeros((1, predictor.channels, *predictor.image_hw), predictor.pixel_type)
    sy, sx = predictor.run(blank).shape[-2:]
    return int(sy), int(sx)


def _apply_mask(
    found: list[Found],
    given: np.ndarray | None,
    grid: tuple[int, int],
    cfg: InferConfig,
    predictor: Predictor,
    out: Path,
) -> list[Found]:
    """Flag the detections in the heatmap mask (the given one, or with --heatmap-mask auto
    the cells where a class sits in most frames); write the mask and its picture."""
    names = predictor.class_names
    heatmap = None
    if given is None:
        heatmap = Heatmap.of([f.rows for f in found], len(names), grid)
        mask = heatmap.mask(cfg.heatmap_min_fraction)
    else:
        mask = given
    buffer = io.BytesIO()
    np.save(buffer, mask)
    write_atomic(out / "heatmap_mask.npy", buffer.getvalue())
    figure = heatmap_figure(heatmap, mask, names, cfg.heatmap_min_fraction)
    save_picture(figure, out / "heatmap.png")
    log.info(
        f"heatmap mask: {int(mask.sum())} grid cell(s) of {mask.shape[1]}x{mask.shape[2]} "
        f"masked; their detections are counted apart ({display_path(out / 'heatmap.png')})"
    )
    flagged = []
    for f in found:
        flags = masked(f.rows, mask)
        kept = np.bincount(f.rows[~flags, 6].astype(np.int64), minlength=len(names))
        flagged.append(dataclasses.replace(f, per_class=kept, masked=flags))
    return flagged


def _total(found: list[Found], num_classes: int, masked: bool = False) -> list[int]:
    """Per class, the detections outside the mask (or with `masked`, inside it)."""
    total = np.zeros(num_classes, dtype=np.int64)
    for f in found:
        total += f.masked_per_class() if masked else f.per_class
    return [int(n) for n in total]


def _specimens(frames: Frames) -> list[str]:
    """The specimen each frame belongs to: the folder holding it (or the zarr store)."""
    parents = [str(Path(name).parent) for name in frames.names]
    return [frames.folder.name if parent == "." else parent for parent in parents]


def _require_one_run(frames: Frames) -> None:
    """--heatmap-mask auto finds what stays put during one run; over several specimens a stuck
    object of one run would sit in a fraction of the frames only, and go unmasked."""
    specimens = sorted(set(_specimens(frames)))
    if len(specimens) > 1:
        shown = ", ".join(specimens[:3]) + (", ..." if len(specimens) > 3 else "")
        raise UserError(
            f"--heatmap-mask auto finds the objects that stay put during one run, and these "
            f"frames are {len(specimens)} specimens ({shown})",
            path=frames.folder,
            fix="run yogo infer once per specimen's folder or store (its heatmap_mask.npy "
            "can then be given to other runs with --heatmap-mask-path)",
        )


def specimen_counts(
    predictor: Predictor, frames: Frames, found: list[Found], ratios: list[Ratio]
) -> dict[str, Any]:
    """counts.json: per class the raw count, the corrected one and its 95% interval, for all
    frames and per specimen (the folder holding the frames, or the zarr store), with the
    ratios (docs/counting.md)."""
    counting = predictor.counting
    specimen = _specimens(frames)
    groups: dict[str, list[Found]] = {}
    for f in found:
        groups.setdefault(specimen[f.index], []).append(f)

    def counted(part: list[Found]) -> dict[str, Any]:
        n = len(predictor.class_names)
        raw = np.array(_total(part, n))
        out = {"frames": len(part), **counting.correct(raw, len(part), ratios).to_plain()}
        if any(f.masked is not None for f in part):  # --heatmap-mask: counted apart
            inside = _total(part, n, masked=True)
            out["masked"] = dict(zip(predictor.class_names, inside, strict=True))
        return out

    return {
        "class_names": list(predictor.class_names),
        "thresholds": counting.describe(),
        "fitted_on": counting.source or None,
        "corrected": counting.fitted,
        "all": counted(found),
        "specimens": {name: counted(part) for name, part in sorted(groups.items())},
    }


def _predict_all(
    predictor: Predictor, loader: Any, plan: _Plan, cfg: InferConfig
) -> tuple[InferSummary, list[Found]]:
    """Every batch through the model and post-processing; per-frame files as it goes."""
    names = predictor.class_names
    summary = InferSummary(totals=dict.fromkeys(names, 0))
    found: list[Found] = []
    frame_names, stems = plan.frames.names, plan.frames.stems
    for batch in _progress(loader, len(plan.frames), cfg.use_tqdm):
        good = [(i, item) for i, item in batch if not isinstance(item, str)]
        summary.unreadable += [(frame_names[i], item) for i, item in batch if isinstance(item, str)]
        if not good:
            continue
        detections = _detect(predictor, [item for _, item in good], cfg)
        for (i, (_, pixels, original_hw)), rows in zip(good, detections, strict=True):
            rows_np = rows.numpy().astype(np.float64)
            # Boxes inside the frame: labels/ must train as they are, and Label Studio too.
            rows_np[:, :4] = rows_np[:, :4].clip(0, 1)
            per_class = np.bincount(rows_np[:, 6].astype(np.int64), minlength=len(names))
            for name, n in zip(names, per_class, strict=True):
                summary.totals[name] += int(n)
            summary.images += 1
            summary.detections += len(rows_np)
            hw = (int(original_hw[0]), int(original_hw[1]))
            found.append(Found(i, rows_np, hw, per_class))
            stem = stems[i]
            if plan.labels:
                write_yolo(plan.out / "labels" / f"{stem}.txt", rows_np)
            if plan.boxes:
                target = plan.out / "boxes" / f"{stem}.{plan.boxes}"
                draw(pixels, target, rows_np, names, *plan.drawing)
            if plan.frame_images:
                write_png(plan.out / "images" / f"{stem}.png", pixels)
    return summary, found


def _detect(predictor: Predictor, items: list[Any], cfg: InferConfig) -> list[torch.Tensor]:
    """Per frame of a batch its rows (N, 7 + C): the resized frames in one pass, each frame
    to be tiled (`resized` None) through `Predictor.detect_tiled`."""
    args = (predictor.counting.thresholds, cfg.iou_thresh, cfg.min_class_confidence_threshold)
    resized = [r for r, _, _ in items if r is not None]
    direct = iter(predictor.detect(np.stack(resized), *args, class_probs=True) if resized else [])
    overlap = predictor.overlap(cfg.tile_overlap)
    return [
        next(direct)
        if r is not None
        else predictor.detect_tiled(pixels, overlap, *args, True, cfg.batch_size)
        for r, pixels, _ in items
    ]


def _write_results(
    plan: _Plan,
    predictor: Predictor,
    cfg: InferConfig,
    summary: InferSummary,
    found: list[Found],
    split: SplitFractions,
) -> list[Path]:
    """The files of the whole run: predictions.json, and on request counts.csv, the .npy,
    ddf.yml and the Label Studio tasks. Returns their paths."""
    names = predictor.class_names
    frame_names = plan.frames.names
    document = {
        "model": predictor.kind,
        "model_files": [cfg.model, *(cfg.models or [])],
        "tta": cfg.tta,
        "class_names": list(names),
        "thresholds": {
            "obj_thresh": dict(zip(names, predictor.counting.thresholds, strict=True)),
            "iou_thresh": cfg.iou_thresh,
            "min_class_confidence_threshold": cfg.min_class_confidence_threshold,
        },
        "boxes": "x0, y0, x1, y1 and xc, yc, w, h normalised to the image (0..1); "
        "confidence = objectness x class probability; calibrated_confidence = the chance "
        "that the detection is right, from the model's calibration (docs/counting.md)",
        "images": [
            record(
                frame_names[f.index],
                f.height_width,
                f.rows,
                names,
                calibrated(predictor, f),
                f.masked,
            )
            for f in found
        ],
        "unreadable": [{"path": name, "reason": why} for name, why in summary.unreadable],
    }
    written = [plan.out / "predictions.json"]
    write_atomic(written[0], json.dumps(document, separators=(",", ":")))
    if summary.counts:
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        masking = bool(summary.masked)
        apart = [f"masked_{n}" for n in names] if masking else []
        writer.writerow(["image", "total", *names, *apart])
        for f in found:
            inside = f.masked_per_class().tolist() if masking else []
            total = int(f.per_class.sum())
            writer.writerow([frame_names[f.index], total, *f.per_class.tolist(), *inside])
        written.append(plan.out / "counts.csv")
        write_atomic(written[-1], table.getvalue())
        written.append(plan.out / "counts.json")
        write_atomic(written[-1], json.dumps(summary.counts, indent=2) + "\n")
    if plan.npy is not None:
        written.append(plan.npy)
        write_npy(plan.npy, found, len(names))
    if plan.ddf is not None:
        written.append(plan.ddf)
        ddf = _pseudo_label_ddf(plan, cfg, names, split, predictor.counting.describe())
        write_atomic(plan.ddf, ddf)
    if plan.label_studio is not None:
        written.append(plan.label_studio)
        write_atomic(plan.label_studio, _label_studio_tasks(plan, cfg, names, found))
    return written


def calibrated(predictor: Predictor, f: Found) -> np.ndarray:
    """The calibrated confidence of each detection of a frame."""
    return predictor.counting.calibrate(f.rows[:, 4] * f.rows[:, 5], f.rows[:, 6].astype(np.int64))


def _pseudo_label_ddf(
    plan: _Plan, cfg: InferConfig, names: Sequence[str], split: SplitFractions, thresholds: str
) -> str:
    """A DDF that trains on the labels/ this run wrote: the frames' folders (or, for a zarr
    store, the images/ written beside the labels) with the matching labels/ folders."""
    if plan.frame_images:
        roots = {stem.parent for stem in plan.frames.stems}
        folders = [(str(r), f"images/{r}", f"labels/{r}") for r in sorted(roots)]
    else:
        assert isinstance(plan.frames, ImageFiles)
        root = plan.frames.root.resolve()
        parents = sorted({stem.parent for stem in plan.frames.stems})
        folders = [
            ("frames" if p == Path(".") else str(p), str(root / p), str(Path("labels") / p))
            for p in parents
        ]
    comment = (
        f"Machine labels (pseudo-labels) by yogo infer {_model_names(cfg)}, {thresholds}; "
        "the 6th label column is the confidence (--min-label-confidence)."
    )
    return ddf_text(comment, names, split, folders)


def _model_names(cfg: InferConfig) -> str:
    """The model file names, and the flips, of a run: what machine labels came from."""
    names = " + ".join(Path(p).name for p in [cfg.model, *(cfg.models or [])])
    return names + (" with flips (--tta)" if cfg.tta else "")


def _label_studio_tasks(
    plan: _Plan, cfg: InferConfig, names: Sequence[str], found: list[Found]
) -> str:
    if plan.frame_images:
        root = plan.out / "images"
        relative = [f"{stem}.png" for stem in plan.frames.stems]
    else:
        assert isinstance(plan.frames, ImageFiles)
        root, relative = plan.frames.root, plan.frames.names
    prefix = url_prefix(root, cfg.label_studio_url_prefix)
    version = f"yogo {__version__} {_model_names(cfg)}"
    tasks = [
        frame_task(
            plan.frames.names[f.index],
            prefix + quote(relative[f.index]),
            f.height_width,
            f.rows[:, :7],
            names,
            version,
        )
        for f in found
    ]
    return json.dumps(tasks, indent=1)


def _plan_named_file(
    path: Path | None, option: str, out: Path, files: list[Path], force: bool, inputs: Inputs
) -> list[Path]:
    """--label-studio or --report: never one of this run's other files; inside --output-dir
    it is one file of the set (returned), elsewhere a file of its own, planned here."""
    if path is None:
        return []
    own = {os.path.realpath(p) for p in files}
    if os.path.realpath(path) in own:
        raise UserError(
            f"{option} names a file this run writes itself",
            path=path,
            fix=f"give another file name, e.g. OUTPUT_DIR/{option.strip('-')}-file",
        )
    if os.path.realpath(path.parent) == os.path.realpath(out):
        return [path]
    plan_file(path, force=force, inputs=inputs, option=option)
    return []


def _require_distinct_stems(frames: Frames) -> None:
    """labels/NAME.txt and boxes/NAME.png drop the image suffix: `a.png` and `a.tif` in one
    folder would write the same files."""
    seen: dict[Path, str] = {}
    for stem, name in zip(frames.stems, frames.names, strict=True):
        if stem in seen:
            raise UserError(
                f"{seen[stem]} and {name} would write the same labels/ and boxes/ files",
                fix="rename one of them, or infer on them separately",
            )
        seen[stem] = name


def _progress(loader: Any, total: int, show: bool) -> Iterator[Any]:
    bar = progress(total=total, unit="img", leave=True, show=show)
    try:
        for batch in loader:
            yield batch
            bar.update(len(batch))
    finally:
        bar.close()


def format_counts(summary: InferSummary) -> str:
    """The counts per class (corrected, with 95% intervals, when the model has a fitted
    correction), per specimen when there are several, and the ratios."""
    counts = summary.counts
    if not counts:
        return ""
    parts = [("all frames", counts["all"])]
    if len(counts["specimens"]) > 1:
        parts += list(counts["specimens"].items())
    width = max([len(n) for n in counts["class_names"]] + [5])
    lines = [f"counts at {counts['thresholds']}"]
    for title, part in parts:
        lines.append(f"{title} ({part['frames']} frames):")
        for name, c in part["per_class"].items():
            line = f"  {name:<{width}}  {c['count']:>6}"
            if c["count_corrected"] is not None:
                low, high = c["count_ci95"]
                line += f"  corrected {c['count_corrected']:>9.1f}  95% CI [{low:.1f}, {high:.1f}]"
            elif counts["corrected"]:
                line += "  (not corrected: the model counts too few of them right on validation)"
            lines.append(line)
        lines.append(
            f"  {'total':<{width}}  {sum(c['count'] for c in part['per_class'].values()):>6}"
        )
        if "masked" in part:
            inside = ", ".join(f"{n} {k}" for n, k in part["masked"].items())
            lines.append(f"  in the heatmap mask, counted apart: {inside}")
        for text, r in part["ratios"].items():
            value = "-" if r["value"] is None else f"{r['value']:.4g}"
            ci = r["ci95"]
            bounds = "" if ci is None or None in ci else f"  95% CI [{ci[0]:.4g}, {ci[1]:.4g}]"
            lines.append(f"  {text}: {value}{bounds}")
    if not counts["corrected"]:
        lines.append("(raw counts: this model has no fitted count correction; docs/counting.md)")
    return "\n".join(lines)
