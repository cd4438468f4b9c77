"""`yogo audit CKPT DDF`: every label box, and every confident detection without a label,
ranked by how much the model disagrees with it, with a thumbnail per suspect to sort by hand.

    rows = audit_rows(predictor, samples, batch_size=16, num_workers=2)   # one pass, streamed
    order = rows.ranking()                                               # most suspect first

Each label box is matched one to one with the detections of its frame (greedy by IoU, as
`yogo test` matches), at the model's own thresholds, and given a kind:
  - missed: no detection overlaps it (IoU < NEAR_IOU);
  - other class: the matched detection is of another class;
  - poor box: the matched detection is of its class but IoU < MATCH_IOU;
  - agrees: matched at MATCH_IOU or more, same class;
  - extra: a detection no label matched.
The disagreement is the model's chance that the row is wrong, in [0, 1]: for a label,
1 - objectness x p(label class) (x IoU / MATCH_IOU for a poor box), read at the matched
detection, or at the grid cell of the label's centre when nothing matched; for an extra, its
objectness (the chance that an object sits where the labels have none). One scale for every
kind: a label of a rare class that the model half believes ranks above one it fully does.
Ties (every row that agrees, for a start) are broken by the box's loss, the cross-entropy of
the model's output at the box's grid cell: -log(objectness) - log(p(label class)) for a label,
-log(1 - objectness) for an extra. docs/labelling-loop.md shows the whole loop.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yogo.config import AuditConfig
from yogo.data.channels import display_planes
from yogo.data.images import ImageError, decode_image
from yogo.data.index import open_cache
from yogo.data.loader import Loaders, default_num_workers
from yogo.data.scan import LabelledSample, require_trainable, scan_dataset
from yogo.data.transforms import resize
from yogo.ddf import DatasetDefinition
from yogo.deploy.predictor import Predictor, load_predictor
from yogo.errors import UserError, display_path
from yogo.evaluation.draw import caption, draw_boxes, mosaic
from yogo.evaluation.metrics import box_iou
from yogo.evaluation.plots import save_picture
from yogo.log import progress, speak_unless_configured
from yogo.model.boxes import postprocess
from yogo.outputs import Inputs, OutputSet, atomic_path, write_atomic

log = logging.getLogger("yogo")

KINDS = ("missed", "other class", "poor box", "extra", "agrees")
MISSED, OTHER, POOR, EXTRA, AGREES = range(len(KINDS))
MATCH_IOU = 0.5  # a label and a detection are the same object, well boxed (mAP@0.5's rule)
NEAR_IOU = 0.2  # below this a detection is not about the label at all
DELETE = "delete"  # the folder a person moves a thumbnail into to delete the label
SHEET_SIZE = 48  # thumbnails on a class's contact sheet
THUMB_SIDE = 160  # a thumbnail's shorter side, in pixels
FORMAT_VERSION = 1


@dataclass
class AuditRows:
    """One row per label box and per unlabelled detection, as columns: 57 bytes a row (100k
    frames of 34 objects: 190 MB; the audit's peak there was 1.5 GB, docs/benchmarks.md)."""

    sample: np.ndarray  # (R,) int32: index into the audited samples
    line: np.ndarray  # (R,) int32: the label's line in its file, 0 for an extra
    kind: np.ndarray  # (R,) int8: index into KINDS
    label_class: np.ndarray  # (R,) int16, -1 for an extra
    predicted_class: np.ndarray  # (R,) int16, -1 when nothing was detected there
    score: np.ndarray  # (R,) float32: the detection's confidence (objectness x class prob)
    disagreement: np.ndarray  # (R,) float32 in [0, 1]
    loss: np.ndarray  # (R,) float32
    box: np.ndarray  # (R, 4) float32: x0, y0, x1, y1 normalised, the label's (an extra's own)
    detected: np.ndarray  # (R, 4) float32: the matched detection's box (NaN: none)

    def __len__(self) -> int:
        return len(self.sample)

    def ranking(self) -> np.ndarray:
        """Row indices, the strongest disagreement first, then the highest loss."""
        order: np.ndarray = np.lexsort((-self.loss, -self.disagreement))
        return order

    @staticmethod
    def concatenate(parts: Sequence[AuditRows]) -> AuditRows:
        names = AuditRows.__dataclass_fields__
        return AuditRows(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def frame_rows(
    index: int,
    truth: np.ndarray,
    lines: np.ndarray,
    detections: np.ndarray,
    decoded: np.ndarray,
) -> AuditRows:
    """The rows of one frame: `truth` (N, 5) class, xc, yc, w, h of its labels (their `lines`),
    `detections` (K, 7 + C) as postprocess gives them at the model's thresholds with the
    class probabilities, `decoded` the model's output (5 + C, Sy, Sx) for the frame."""
    n, k = len(truth), len(detections)
    label_boxes = np.concatenate(
        [truth[:, 1:3] - truth[:, 3:5] / 2, truth[:, 1:3] + truth[:, 3:5] / 2], axis=1
    ).astype(np.float32)
    det_boxes = detections[:, :4].astype(np.float32)
    iou = box_iou(label_boxes, det_boxes) if n and k else np.zeros((n, k))
    match = np.full(n, -1)
    taken = np.zeros(k, bool)
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        label, det = divmod(int(flat), k)
        if iou[label, det] < NEAR_IOU:
            break
        if match[label] < 0 and not taken[det]:
            match[label], taken[det] = det, True
    classes = truth[:, 0].astype(np.int64)
    cell_obj, cell_probs = _at_cells(decoded, truth[:, 1], truth[:, 2])
    p_label = cell_probs[np.arange(n), classes] if n else np.zeros(0)
    label_loss = -np.log(np.clip(cell_obj, 1e-6, 1)) - np.log(np.clip(p_label, 1e-6, 1))

    kind = np.full(n, MISSED, np.int8)
    disagreement = 1 - cell_obj * p_label
    predicted = np.full(n, -1, np.int16)
    score = np.zeros(n, np.float32)
    detected = np.full((n, 4), np.nan, np.float32)
    has = match >= 0
    j = match[has]
    objectness = detections[:, 4]
    confidence = objectness * detections[:, 5]
    predicted[has] = detections[j, 6]
    score[has] = confidence[j]
    detected[has] = det_boxes[j]
    overlap = iou[np.flatnonzero(has), j]
    same = predicted[has] == classes[has]
    kind[has] = np.where(~same, OTHER, np.where(overlap < MATCH_IOU, POOR, AGREES))
    believed = objectness[j] * detections[j, 7 + classes[has]]  # the label, as the model sees it
    disagreement[has] = 1 - believed * np.minimum(1, overlap / MATCH_IOU)

    extra = np.flatnonzero(~taken)
    extra_loss = -np.log(np.clip(1 - detections[extra, 4], 1e-6, 1))
    return AuditRows(
        sample=np.full(n + len(extra), index, np.int32),
        line=np.concatenate([lines, np.zeros(len(extra))]).astype(np.int32),
        kind=np.concatenate([kind, np.full(len(extra), EXTRA, np.int8)]),
        label_class=np.concatenate([classes, np.full(len(extra), -1)]).astype(np.int16),
        predicted_class=np.concatenate([predicted, detections[extra, 6]]).astype(np.int16),
        score=np.concatenate([score, confidence[extra]]).astype(np.float32),
        disagreement=np.concatenate([disagreement, objectness[extra]]).astype(np.float32),
        loss=np.concatenate([label_loss, extra_loss]).astype(np.float32),
        box=np.concatenate([label_boxes, det_boxes[extra]]).astype(np.float32),
        detected=np.concatenate([detected, det_boxes[extra]]).astype(np.float32),
    )


def _at_cells(decoded: np.ndarray, xc: np.ndarray, yc: np.ndarray) -> tuple[np.ndarray, ...]:
    """The objectness (N,) and class probabilities (N, C) at the grid cells of points."""
    sy, sx = decoded.shape[1:]
    y = np.clip((yc * sy).astype(np.int64), 0, sy - 1)
    x = np.clip((xc * sx).astype(np.int64), 0, sx - 1)
    return decoded[4, y, x], decoded[5:, y, x].T


class _Frames(torch.utils.data.Dataset[tuple[int, Any]]):
    """Each sample's frame at the model's size (or the reason it cannot be read)."""

    def __init__(self, samples: Sequence[LabelledSample], predictor: Predictor) -> None:
        self.samples = samples
        self.image_hw = predictor.image_hw
        self.channels = predictor.channels
        self.bit_depth = predictor.bit_depth

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        try:
            pixels = decode_image(self.samples[index].image, self.channels, self.bit_depth)
        except ImageError as e:
            return index, str(e)
        return index, resize(torch.from_numpy(pixels), self.image_hw).numpy()


def audit_rows(
    predictor: Predictor,
    samples: Sequence[LabelledSample],
    batch_size: int,
    num_workers: int | None,
    iou_thresh: float = 0.5,
) -> tuple[AuditRows, list[tuple[int, str]]]:
    """The rows of every sample, streamed in batches; and the frames that could not be read."""
    thresholds = predictor.counting.thresholds
    workers = default_num_workers() if num_workers is None else num_workers
    workers = min(workers, max(0, len(samples) // batch_size))
    parts, unreadable = [], []
    with Loaders() as loaders:
        loader = loaders.make(_Frames(samples, predictor), batch_size, workers, collate_fn=list)
        for batch in progress(loader, "audit", total=len(loader), unit="batch"):
            good = [(i, frame) for i, frame in batch if not isinstance(frame, str)]
            unreadable += [(i, frame) for i, frame in batch if isinstance(frame, str)]
            if not good:
                continue
            decoded = predictor.run(np.stack([frame for _, frame in good]))
            found = postprocess(decoded, thresholds, iou_thresh, class_probs=True)
            per_frame = [
                frame_rows(i, samples[i].boxes, samples[i].lines, det.numpy(), out)
                for (i, _), det, out in zip(good, found, decoded.numpy(), strict=True)
            ]
            parts.append(AuditRows.concatenate(per_frame))  # a batch's rows: one set of columns
    if not parts:
        empty = np.zeros((0, 7 + len(predictor.class_names)))
        parts.append(frame_rows(0, np.zeros((0, 5)), np.zeros(0), empty, np.zeros((5, 1, 1))))
    return AuditRows.concatenate(parts), unreadable


def class_folder(rows: AuditRows, row: int, class_names: Sequence[str]) -> str:
    """The folder a row's thumbnail starts in: its label's class (an extra's predicted one)."""
    cls = rows.label_class[row] if rows.kind[row] != EXTRA else rows.predicted_class[row]
    return class_names[int(cls)]


def thumbnail_name(rank: int, sample: LabelledSample, line: int) -> str:
    """`00012_frame_0031_L4.png`: rank, frame and label line (`_extra` for a detection)."""
    where = f"L{line}" if line else "extra"
    return f"{rank:05d}_{sample.label.stem}_{where}.png"


def thumbnail(pixels: np.ndarray, rows: AuditRows, row: int, class_names: Sequence[str]) -> Any:
    """The object with its surroundings (three times its size, at least 48 px of the frame),
    its label box drawn in its class's colour and the model's box with its score, captioned."""
    _, h, w = pixels.shape
    box = rows.box[row] * np.array([w, h, w, h])
    side = max(48.0, 3 * float(max(box[2] - box[0], box[3] - box[1])))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(np.clip(cx - side / 2, 0, max(w - side, 0)))
    y0 = int(np.clip(cy - side / 2, 0, max(h - side, 0)))
    x1, y1 = min(w, x0 + int(side)), min(h, y0 + int(side))
    crop = pixels[:, y0:y1, x0:x1]
    scale = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], np.float64)
    offset = np.array([x0, y0, x0, y0], np.float64)
    boxes, classes, scores = [], [], []
    kind = int(rows.kind[row])
    if kind != EXTRA:
        boxes.append((box - offset) / scale)
        classes.append(int(rows.label_class[row]))
        scores.append(np.nan)
    if not np.isnan(rows.detected[row]).any():
        boxes.append((rows.detected[row] * np.array([w, h, w, h]) - offset) / scale)
        classes.append(int(rows.predicted_class[row]))
        scores.append(float(rows.score[row]))
    image = draw_boxes(
        crop, np.clip(np.array(boxes), 0, 1), np.array(classes), class_names,
        scores=np.array(scores), min_side=THUMB_SIDE,
    )  # fmt: skip
    return caption(image, describe(rows, row, class_names))


def describe(rows: AuditRows, row: int, class_names: Sequence[str]) -> str:
    """The thumbnail's caption: what the label says and what the model says."""
    kind = int(rows.kind[row])
    predicted = int(rows.predicted_class[row])
    model = f"{class_names[predicted]} {rows.score[row]:.2f}" if predicted >= 0 else ""
    if kind == EXTRA:
        return f"extra\nno label; model {model}"
    label = class_names[int(rows.label_class[row])]
    if kind == MISSED:
        return f"missed\nlabel {label}; model nothing"
    return f"{KINDS[kind]}\nlabel {label}; model {model}"


CSV_COLUMNS = (
    "rank", "kind", "disagreement", "loss", "label_class", "predicted_class", "score", "frame",
    "label_file", "line", "x0", "y0", "x1", "y1", "thumbnail",
)  # fmt: skip


def csv_rows(
    rows: AuditRows,
    order: np.ndarray,
    samples: Sequence[LabelledSample],
    class_names: Sequence[str],
    thumbnails: dict[int, str],
) -> Iterator[list[Any]]:
    """audit.csv's rows in rank order (rank 1 first)."""
    for rank, row in enumerate(order.tolist(), start=1):
        sample = samples[int(rows.sample[row])]
        predicted = int(rows.predicted_class[row])
        yield [
            rank,
            KINDS[int(rows.kind[row])],
            f"{rows.disagreement[row]:.4f}",
            f"{rows.loss[row]:.4f}",
            class_names[int(rows.label_class[row])] if rows.label_class[row] >= 0 else "",
            class_names[predicted] if predicted >= 0 else "",
            f"{rows.score[row]:.4f}",
            str(sample.image),
            str(sample.label),
            int(rows.line[row]) or "",
            *(f"{v:.6f}" for v in rows.box[row]),
            thumbnails.get(row, ""),
        ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(
    checkpoint: Path,
    ddf: Path,
    class_names: Sequence[str],
    split: str,
    hashes: dict[str, str],
    counts: dict[str, int],
) -> str:
    """audit.json: what `--apply` checks (the label files' hashes) and rebuilds from."""
    return json.dumps(
        {
            "yogo_audit": FORMAT_VERSION,
            "checkpoint": str(checkpoint.resolve()),
            "ddf": str(ddf.resolve()),
            "class_names": list(class_names),
            "split": split,
            "rows": counts,
            "label_files": hashes,
        },
        indent=2,
    )


@dataclass
class AuditSummary:
    """What `yogo audit` found and wrote."""

    folder: Path
    frames: int
    rows: dict[str, int]  # per kind
    suspects: dict[str, int]  # per class folder: thumbnails written
    unreadable: list[tuple[str, str]]
    seconds: float


def run_audit(cfg: AuditConfig) -> AuditSummary:
    """Rank every label of the DDF's split against the model and write the audit folder."""
    speak_unless_configured()
    cfg.require_valid()
    start = time.perf_counter()
    assert cfg.checkpoint is not None and cfg.ddf is not None  # require_valid
    checkpoint, ddf_path, out = Path(cfg.checkpoint), Path(cfg.ddf), Path(cfg.output_dir)
    definition = DatasetDefinition.from_yaml(ddf_path)
    inputs = definition.inputs() | Inputs.of(checkpoint)
    names = definition.class_names
    planned = [out / "audit.csv", out / "audit.json", *(out / f"sheet_{n}.png" for n in names)]
    folders = [out / n for n in (*names, DELETE)]
    predictor = load_predictor(checkpoint, cfg.device)
    definition.require_classes(
        predictor.class_names, "the model's", "audit with a model trained on this DDF's classes"
    )
    cache = open_cache(None, inputs, None)  # $YOGO_CACHE_DIR: the label index runs share
    with OutputSet(
        out, "audit", planned, force=cfg.force, inputs=inputs, option="--output-dir",
        subfolders=folders,
    ) as files:  # fmt: skip
        scan = scan_dataset(definition, cfg.bad_labels, cache=cache)
        if scan.policy == "error" and scan.errors:
            require_trainable(scan)  # names every problem
        splits = ("train", "val", "test") if cfg.split == "all" else (cfg.split,)
        samples = [s for split in splits for s in scan.splits[split]]
        if not samples:
            raise UserError(f"has no labelled frames in {cfg.split}", path=ddf_path)
        dropped = len([p for p in scan.problems if p.action])
        if dropped:
            log.warning(
                f"{dropped} label row(s) with problems are left out of the audit "
                f"(`yogo check {display_path(ddf_path)}` lists them)"
            )
        rows, unreadable = audit_rows(predictor, samples, cfg.batch_size, cfg.num_workers)
        order = rows.ranking()
        thumbnails = {}  # row -> its thumbnail, relative to the audit folder
        for position in np.flatnonzero(rows.kind[order] != AGREES)[: cfg.max_thumbnails]:
            row = int(order[position])
            name = thumbnail_name(
                int(position) + 1, samples[int(rows.sample[row])], int(rows.line[row])
            )
            thumbnails[row] = f"{class_folder(rows, row, names)}/{name}"
        files.extend([out / name for name in thumbnails.values()])
        for folder in folders:
            folder.mkdir(exist_ok=True)
        sheets = _write_thumbnails(rows, samples, thumbnails, names, predictor, out)
        for name, tiles in sheets.items():
            title = f"{name}: the {len(tiles)} most suspect, in rank order (audit.csv)"
            save_picture(caption(mosaic(tiles, columns=min(8, len(tiles))), title),
                         out / f"sheet_{name}.png")  # fmt: skip
        with atomic_path(out / "audit.csv") as partial, open(partial, "w", newline="") as f:
            writer = csv.writer(f)  # streamed: millions of rows are never one string
            writer.writerow(CSV_COLUMNS)
            writer.writerows(csv_rows(rows, order, samples, names, thumbnails))
        labels = sorted({samples[int(rows.sample[row])].label for row in thumbnails})
        hashes = {str(label): sha256(label) for label in labels}  # what --apply may change
        kinds = {kind: int((rows.kind == i).sum()) for i, kind in enumerate(KINDS)}
        write_atomic(
            out / "audit.json",
            manifest(checkpoint, ddf_path, names, cfg.split, hashes, kinds) + "\n",
        )
    per_folder = {n: sum(t.startswith(f"{n}/") for t in thumbnails.values()) for n in names}
    return AuditSummary(
        out,
        len(samples),
        kinds,
        per_folder,
        [(str(samples[i].image), why) for i, why in unreadable],
        time.perf_counter() - start,
    )


def _write_thumbnails(
    rows: AuditRows,
    samples: Sequence[LabelledSample],
    thumbnails: dict[int, str],
    names: Sequence[str],
    predictor: Predictor,
    out: Path,
) -> dict[str, list[Any]]:
    """Each suspect's thumbnail, cut from its full-size frame (each frame decoded once); the
    first SHEET_SIZE of each folder kept for its contact sheet."""
    by_sample: dict[int, list[int]] = {}
    for row in thumbnails:
        by_sample.setdefault(int(rows.sample[row]), []).append(row)
    ranked = sorted(thumbnails, key=lambda row: thumbnails[row])  # names start with the rank
    firsts: dict[str, list[int]] = {}
    for row in ranked:
        folder = thumbnails[row].split("/")[0]
        if len(firsts.setdefault(folder, [])) < SHEET_SIZE:
            firsts[folder].append(row)
    on_sheet = {row for first in firsts.values() for row in first}
    tiles: dict[int, Any] = {}
    for index in progress(sorted(by_sample), "thumbnails", total=len(by_sample), unit="frame"):
        frame = decode_image(samples[index].image, predictor.channels, predictor.bit_depth)
        pixels = (
            frame if frame.dtype == np.uint8 and len(frame) in (1, 3) else display_planes(frame)
        )
        for row in by_sample[index]:
            image = thumbnail(pixels, rows, row, names)
            save_picture(image, out / thumbnails[row])
            if row in on_sheet:
                tiles[row] = image
    return {folder: [tiles[row] for row in firsts[folder]] for folder in names if folder in firsts}


def format_audit(summary: AuditSummary) -> str:
    """What the audit found, and what to do next."""
    rows = ", ".join(f"{n} {kind}" for kind, n in summary.rows.items())
    folders = ", ".join(f"{name} {n}" for name, n in summary.suspects.items() if n)
    lines = [
        f"audited {summary.frames} frame(s) in {summary.seconds:.1f} s: {rows}",
        f"wrote {display_path(summary.folder / 'audit.csv')} (every row, most suspect first) "
        f"and {sum(summary.suspects.values())} thumbnail(s): {folders or 'none'}",
        "next: look at the sheet_<class>.png pictures, move each wrong thumbnail into its "
        f"class's folder or into {DELETE}/, then `yogo audit --apply "
        f"{display_path(summary.folder)} --out NEW_DIR`",
    ]
    lines += [f"could not read {path}: {why}" for path, why in summary.unreadable]
    return "\n".join(lines)
