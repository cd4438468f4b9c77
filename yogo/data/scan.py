"""Scanning a whole dataset: every label file and image header once, under the `--bad-labels`
policy: what a run would use, split by split, and every problem found.

    ddf = DatasetDefinition.from_yaml("ddf.yml")
    scan = scan_dataset(ddf, policy="error")
    require_trainable(scan)                       # UserError naming the errors
    scan.splits["train"][0].boxes                 # (N, 5) class, xc, yc, w, h

Training, `yogo test` and `yogo check` (yogo.dataset_check) all start here, so they never
disagree about what is usable.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yogo.config import BadLabelsPolicy
from yogo.data.images import ImageError, decode_image, read_header
from yogo.data.index import LabelCache, ScanResult, shard_meta, signatures
from yogo.data.labels import (
    SAMPLE_KINDS,
    ClassLookup,
    Problem,
    apply_policy,
    load_label_studio_ids,
    parse_label_file,
)
from yogo.ddf import SPLITS, DatasetDefinition, Sample
from yogo.errors import UserError, display_path, where

log = logging.getLogger(__name__)

SHOWN_PER_KIND = 10  # problems of one kind printed; `yogo check --json` lists every one
# A class problem in this many rows or more is a class the labels use and class_names lacks,
# not a typo: dropping its rows would silently remove that class from training.
SYSTEMATIC_ROWS = 2
UNNAMED_CLASSES = "the labels use classes that class_names does not have"
UNNAMED_CLASSES_FIX = (
    "add the missing class names to class_names (label id i is class_names[i]), or correct "
    "the label files"
)


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
    bit_depth: int = 8  # of the image file: 8 or 16
    planes: int = 1  # the channels an N-channel model reads from it (ImageHeader.planes)


@dataclass(frozen=True)
class DatasetScan:
    """What a run would use under `policy` and `min_confidence`, per split, and every problem
    found. `confidence` holds the confidence column of every row that has one (machine labels,
    before `min_confidence`); `below_confidence` counts the rows `min_confidence` left out."""

    policy: BadLabelsPolicy
    splits: dict[str, tuple[LabelledSample, ...]]
    problems: tuple[Problem, ...]
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    min_confidence: float = 0.0
    below_confidence: int = 0

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")


def scan_dataset(
    ddf: DatasetDefinition,
    policy: BadLabelsPolicy = "error",
    decode: bool = False,
    cache: LabelCache | None = None,
    min_confidence: float = 0.0,
) -> DatasetScan:
    """Parse every label file and read every image header once (`decode`: every image fully,
    on all cores); apply `policy` to bad rows and samples; leave out rows whose confidence
    column is below `min_confidence` (rows without one are kept).

    With a label `cache` (yogo.data.index), samples whose files have not changed since they
    were indexed come from it, the rest are scanned, and the cache is brought up to date."""
    ordered = [sample for name in SPLITS for sample in ddf.splits[name]]
    lookups: dict[str, ClassLookup] = {}  # by label folder
    for folder in sorted({folder_of(sample.label) for sample in ordered}):
        lookups[folder] = ClassLookup(ddf.class_names, load_label_studio_ids(Path(folder)))
    if cache is None:
        done = _scan_samples(ordered, lookups, policy)
    else:
        done = _scan_through(cache, ordered, lookups, ddf.class_names, policy)

    problems: list[Problem] = []
    usable: dict[str, list[tuple[Sample, ScanResult]]] = {}
    position = 0
    for name in SPLITS:
        usable[name] = []
        for sample in ddf.splits[name]:
            result = done[position]
            position += 1
            problems += result.problems
            if result.usable:
                usable[name].append((sample, result))
    every = [r.confidence for name in SPLITS for _, r in usable[name]]
    confidence = np.concatenate(every) if every else np.zeros(0, np.float32)
    scores = confidence[~np.isnan(confidence)]
    # Rows below min_confidence are rare; only then is each sample's column looked at.
    unsure = min_confidence > 0 and bool((scores < min_confidence).any())
    below = int((scores < min_confidence).sum()) if unsure else 0
    splits = {
        name: tuple(_labelled(s, r, min_confidence if unsure else None) for s, r in pairs)
        for name, pairs in usable.items()
    }
    if decode:
        splits, decode_problems = _decode_all(splits, policy)
        problems += decode_problems
    problems += _unlabelled_and_ambiguous(ddf)
    return DatasetScan(policy, splits, tuple(problems), scores, min_confidence, below)


def _labelled(sample: Sample, result: ScanResult, min_confidence: float | None) -> LabelledSample:
    """A usable sample as a run uses it: with `min_confidence`, without its rows below it (a
    row without a confidence column is kept)."""
    assert sample.image is not None
    boxes, lines = result.boxes, result.lines
    if min_confidence is not None:
        keep = ~(result.confidence < min_confidence)  # NaN (no column): kept
        boxes, lines = boxes[keep], lines[keep]
    return LabelledSample(
        sample.image, sample.label, boxes, lines, *result.hwc, *result.depth_planes
    )


def _scan_through(
    cache: LabelCache,
    ordered: Sequence[Sample],
    lookups: dict[str, ClassLookup],
    class_names: Sequence[str],
    policy: BadLabelsPolicy,
) -> list[ScanResult]:
    """`_scan_samples` of `ordered`, taking each unchanged sample's result from the cache and
    scanning the rest (all folder pairs at once, on all cores) under the locks of their
    shards, then saving those shards."""
    groups: dict[tuple[str, str], list[int]] = {}  # folder pair -> positions in `ordered`
    for i, sample in enumerate(ordered):
        pair = (folder_of(sample.label), str(sample.image_folder))
        groups.setdefault(pair, []).append(i)
    metas = {
        pair: shard_meta(ordered[where[0]], class_names, policy, lookups[pair[0]].label_studio_ids)
        for pair, where in groups.items()
    }
    current = signatures(ordered)
    results: list[ScanResult | None] = [None] * len(ordered)

    def fill(pairs: Iterable[tuple[str, str]]) -> None:
        for pair in pairs:
            shard = cache.read(metas[pair])
            if shard is None:
                continue
            where = groups[pair]
            found = shard.results([ordered[i] for i in where], current[where])
            for i, result in zip(where, found, strict=True):
                results[i] = result

    fill(groups)
    stale = [pair for pair, where in groups.items() if any(results[i] is None for i in where)]
    if not stale:
        return [r for r in results if r is not None]
    with cache.locked([metas[pair] for pair in stale]):
        fill(stale)  # another process may have indexed them while this one waited
        missing = [i for pair in stale for i in groups[pair] if results[i] is None]
        scanned = _scan_samples([ordered[i] for i in missing], lookups, policy)
        for i, result in zip(missing, scanned, strict=True):
            results[i] = result
        done = [r for r in results if r is not None]
        assert len(done) == len(ordered)
        for pair in stale:
            where = groups[pair]
            samples = [ordered[i] for i in where]
            cache.write(metas[pair], samples, current[where], [done[i] for i in where])
    log.info(
        f"label index: {len(missing):,} of {len(ordered):,} sample(s) scanned "
        f"({len(stale)} of {len(groups)} folder pair(s) updated in {display_path(cache.folder)})"
    )
    return done


def require_trainable(scan: DatasetScan) -> None:
    """Raise a UserError naming the errors (the first SHOWN_PER_KIND of each kind) when the
    scan's policy is `error`, or when nothing is left to train on."""
    diagnoses = class_diagnoses(scan.problems)
    if scan.policy == "error" and scan.errors:
        details = capped((p.kind, str(p)) for p in scan.errors)
        if diagnoses:
            # Never suggest --bad-labels drop here: it would drop a whole class.
            raise UserError(
                f"{len(scan.errors)} problem(s) in the labels and images; {UNNAMED_CLASSES}",
                details=[*diagnoses, *details],
                fix=UNNAMED_CLASSES_FIX,
            )
        raise UserError(
            f"{len(scan.errors)} problem(s) in the labels and images",
            details=details,
            fix="correct the files above, or use --bad-labels drop (or clip) to skip "
            "(or repair) them",
        )
    for diagnosis in diagnoses:
        log.warning(
            f"--bad-labels {scan.policy} drops every row of a class that class_names does not "
            f"have ({diagnosis}); to train on it, {UNNAMED_CLASSES_FIX}"
        )
    if not scan.splits["train"]:
        raise UserError("the train split is empty: there is nothing to train on")
    nothing_left = no_objects_left(scan)
    if nothing_left is not None:
        fix = "correct the label files (yogo check lists every problem)"
        if scan.below_confidence:
            fix = "lower --min-label-confidence (yogo check shows the confidences)"
        raise UserError(nothing_left, fix=UNNAMED_CLASSES_FIX if diagnoses else fix)


def no_objects_left(scan: DatasetScan) -> str | None:
    """Why the train split is not trainable when the policy has dropped every object in it
    (None when some object is left, or when the policy dropped nothing)."""
    if any(len(s.boxes) for s in scan.splits["train"]):
        return None
    if scan.below_confidence:
        return (
            f"no objects are left in the train split after --min-label-confidence "
            f"{scan.min_confidence:g} ({scan.below_confidence} row(s) below it)"
        )
    handled = Counter(p.action.split(":")[0] for p in scan.problems if p.action is not None)
    if not handled:
        return None
    summary = ", ".join(f"{n} {action}" for action, n in sorted(handled.items()))
    return f"no objects are left in the train split after --bad-labels {scan.policy} ({summary})"


def class_diagnoses(problems: Sequence[Problem]) -> list[str]:
    """One line for each class problem found in SYSTEMATIC_ROWS rows or more, such as
    "class 2 out of range 0..1: 340 rows in 120 label file(s), first labels/a.txt:2"."""
    rows: Counter[str] = Counter()
    first: dict[str, Problem] = {}
    files: dict[str, set[Path]] = {}
    for p in problems:
        if p.kind == "class":
            rows[p.message] += 1
            first.setdefault(p.message, p)
            files.setdefault(p.message, set()).add(p.path)
    return [
        f"{message}: {n} rows in {len(files[message])} label file(s), first "
        f"{where(first[message].path, first[message].line)}"
        for message, n in rows.items()
        if n >= SYSTEMATIC_ROWS
    ]


def capped(lines: Iterable[tuple[str, str]], limit: int = SHOWN_PER_KIND) -> list[str]:
    """`(kind, line)` pairs as lines grouped by kind (in order of first appearance): the first
    `limit` of each kind, then one line saying how many more there are."""
    by_kind: dict[str, list[str]] = {}
    for kind, line in lines:
        by_kind.setdefault(kind, []).append(line)
    out: list[str] = []
    for group in by_kind.values():
        out += group[:limit]
        if len(group) > limit:
            out.append(f"... and {len(group) - limit} more like this (yogo check --json lists all)")
    return out


# Below this many samples a pool of processes costs more than it saves.
PARALLEL_SCAN_MIN = 2000


def _scan_samples(
    samples: Sequence[Sample], lookups: dict[str, ClassLookup], policy: BadLabelsPolicy
) -> list[ScanResult]:
    """`_scan_sample` of each sample, in order; on all usable cores when there are many."""
    workers = min(usable_cores(), len(samples) // PARALLEL_SCAN_MIN)
    if workers <= 1:
        return _scan_chunk(samples, lookups, policy)
    size = max(1, len(samples) // (workers * 8))
    chunks = [samples[i : i + size] for i in range(0, len(samples), size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = pool.map(_scan_chunk, chunks, [lookups] * len(chunks), [policy] * len(chunks))
        return [result for part in parts for result in part]


def _scan_chunk(
    samples: Sequence[Sample], lookups: dict[str, ClassLookup], policy: BadLabelsPolicy
) -> list[ScanResult]:
    return [_scan_sample(s, lookups[folder_of(s.label)], policy) for s in samples]


def folder_of(path: Path) -> str:
    """`os.path.dirname(str(path))`, at a third of its cost (once per label file per start)."""
    text = str(path)
    folder = text.rpartition(os.sep)[0]
    return folder or (os.sep if text.startswith(os.sep) else "")


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity: what SLURM or taskset granted)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _scan_sample(sample: Sample, lookup: ClassLookup, policy: BadLabelsPolicy) -> ScanResult:
    """Whether the sample is usable, its boxes after the policy, and every problem in it."""
    image, label = sample.image, sample.label
    parsed = parse_label_file(label, lookup)
    result = apply_policy(parsed, policy)
    unusable = [p for p in parsed.problems if p.kind in SAMPLE_KINDS]
    notes: list[Problem] = []
    if image is None:
        message = (
            f"no image named {label.stem}.* (png, jpg, jpeg, tif, tiff, bmp) in "
            f"{display_path(sample.image_folder)}"
        )
        unusable.insert(0, Problem(label, None, "no-image", message))
    else:
        try:
            header = read_header(image)
        except ImageError as e:
            unusable.insert(0, Problem(image, None, "unreadable-image", str(e)))
        else:
            if header.pages > 1:
                message = (
                    "a multi-page file (a stack); only page 1 is used unless --channels "
                    f"{header.pages} reads its pages as channels"
                )
                notes.append(Problem(image, None, "multi-page-image", message))
    if image is not None and not unusable:
        hwc = (header.height, header.width, header.channels)
        found = (*result.problems, *notes)
        depth_planes = (header.bit_depth, header.planes)
        return ScanResult(
            True, result.boxes, result.lines, hwc, found, result.confidence, depth_planes
        )
    # The whole sample goes; its row problems are still listed so one pass fixes everything.
    action = "dropped sample" if policy != "error" else None
    every = unusable + [p for p in parsed.problems if p.kind not in SAMPLE_KINDS]
    problems = tuple(Problem(p.path, p.line, p.kind, p.message, action) for p in every)
    none = np.zeros(0, np.float32)
    return ScanResult(
        False, np.zeros((0, 5), np.float32), none.astype(np.int32), (0, 0, 0), problems, none,
        (0, 0),
    )  # fmt: skip


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
    workers = usable_cores()
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


def missing_classes(
    splits: dict[str, tuple[LabelledSample, ...]], class_names: Sequence[str]
) -> list[str]:
    """A sentence for each class that has no object in a split that has samples. In train,
    the model never learns it (its class probability is pushed to 0, and a fine-tune from
    this model that has it starts from a huge class loss); in val or test, its AP is
    unmeasured."""
    found = []
    for split in SPLITS:
        samples = splits[split]
        if not samples:
            continue
        present = set(
            np.unique(np.concatenate([s.boxes[:, 0] for s in samples])).astype(int).tolist()
        )
        for i, name in enumerate(class_names):
            if i in present:
                continue
            if split == "train":
                found.append(
                    f"no object of class '{name}' in the train split: the model will never "
                    f"predict it, and a fine-tune (--from-pretrained) on data with '{name}' "
                    "starts from a very large class loss; add frames with it, or drop it "
                    "from class_names"
                )
            else:
                found.append(
                    f"no object of class '{name}' in the {split} split: its AP and recall "
                    "there cannot be measured"
                )
    return found
