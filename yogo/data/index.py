"""The label index: what a dataset scan found per sample, saved so that the next start of a run
(resume, requeue, preemption) reads one file instead of every label file and image header.

    index = LabelIndex.load(run_dir / "label_index.npz", identity)  # identity: class names, ...
    current = signatures(samples)                # (N, 6) sizes and times of each file pair
    cached = index.results(samples, current)     # per sample: the result, or None: scan it
    LabelIndex.save(path, identity, samples, current, results)

Never trusted blindly: a sample's cached result is used only when its label file and image
have the size, modification time and change time they had when it was scanned, and the whole
index only when it was made with the same index version, class names, `--bad-labels` policy
and Label Studio `notes.json` mappings. A damaged or foreign file is ignored (and replaced).
The file is numpy's .npz, read without pickle: it holds arrays and JSON text, never code.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.data.labels import Problem
from yogo.ddf import Sample
from yogo.errors import display_path
from yogo.outputs import atomic_path

log = logging.getLogger(__name__)

VERSION = 2  # 2: the confidence column of machine labels
INDEX_NAME = "label_index.npz"  # in the run folder


def signatures(samples: Sequence[Sample]) -> np.ndarray:
    """(N, 6) int64: each sample's label file and image size, mtime_ns and ctime_ns (-1: no
    image; -2: the file is gone or unreadable, which matches nothing that was scanned)."""
    values: list[int] = []
    for sample in samples:
        for path in (sample.label, sample.image):
            if path is None:
                values += (-1, -1, -1)
                continue
            try:
                st = os.stat(str(path))  # str: Path's cached string, cheaper than __fspath__
            except OSError:
                values += (-2, -2, -2)
                continue
            values += (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return np.array(values, dtype=np.int64).reshape(-1, 6)


@dataclass(frozen=True)
class ScanResult:
    """What scanning one sample found: usable or not, its boxes and header, its problems."""

    usable: bool
    boxes: np.ndarray  # (N, 5) float32 class, xc, yc, w, h
    lines: np.ndarray  # (N,) int32 line of each box
    hwc: tuple[int, int, int]  # image height, width, channels (0s when unusable)
    problems: tuple[Problem, ...]
    confidence: np.ndarray  # (N,) float32 confidence column of each box (NaN: none)


@dataclass(frozen=True)
class LabelIndex:
    arrays: dict[str, np.ndarray]
    labels: list[str]
    images: list[str]
    problems: dict[int, list[Problem]]  # by position in the index

    def results(self, samples: Sequence[Sample], current: np.ndarray) -> list[ScanResult | None]:
        """Per sample, the cached result when its files' signature (`current`, from
        `signatures`) is the one recorded; None where it must be scanned."""
        labels = [str(s.label) for s in samples]
        images = [str(s.image or "") for s in samples]
        if labels == self.labels and images == self.images:
            positions = list(range(len(samples)))  # the usual case: the same sample list
        else:
            where = {key: i for i, key in enumerate(zip(self.labels, self.images, strict=True))}
            positions = [where.get(key, -1) for key in zip(labels, images, strict=True)]
        recorded = self.arrays["signatures"]
        if not len(recorded):
            return [None] * len(samples)
        found = np.array(positions, dtype=np.int64).reshape(-1)
        same = (found >= 0) & (recorded[found.clip(min=0)] == current).all(axis=1)
        usable, hwc, offsets = self.arrays["usable"], self.arrays["hwc"], self.arrays["offsets"]
        boxes, lines, confidence = (self.arrays[k] for k in ("boxes", "lines", "confidence"))
        usable_list, hwc_list, offset_list = usable.tolist(), hwc.tolist(), offsets.tolist()
        out: list[ScanResult | None] = []
        for position, keep in zip(positions, same.tolist(), strict=True):
            if not keep:
                out.append(None)
                continue
            start, end = offset_list[position], offset_list[position + 1]
            h, w, c = hwc_list[position]
            out.append(
                ScanResult(
                    usable_list[position],
                    boxes[start:end],
                    lines[start:end],
                    (h, w, c),
                    tuple(self.problems.get(position, ())),
                    confidence[start:end],
                )
            )
        return out

    @staticmethod
    def load(path: Path, identity: dict[str, Any]) -> LabelIndex | None:
        """The index at `path` if it exists, is intact and was made for `identity` (class
        names, policy, notes.json mappings); None otherwise (the reason is logged)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
            meta = json.loads(arrays["meta"].tobytes().decode())
            if meta != json.loads(json.dumps({"version": VERSION, **identity})):  # as saved
                log.info(f"{display_path(path)} was made for other settings; scanning again")
                return None
            return LabelIndex(arrays, *_checked(arrays))
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as e:
            log.warning(f"{display_path(path)} is damaged ({e}); scanning the labels again")
            return None

    @staticmethod
    def save(
        path: Path,
        identity: dict[str, Any],
        samples: Sequence[Sample],
        current: np.ndarray,
        results: Sequence[ScanResult],
    ) -> None:
        """Write the index atomically; a failure to write is logged, never fatal."""
        boxes = [r.boxes.reshape(-1, 5) for r in results]
        offsets = np.cumsum([0, *(len(b) for b in boxes)], dtype=np.int64)
        problems = [
            [i, str(p.path), p.line, p.kind, p.message, p.action]
            for i, r in enumerate(results)
            for p in r.problems
        ]
        arrays: dict[str, Any] = {
            "meta": _text(json.dumps({"version": VERSION, **identity})),
            "labels": _text("\n".join(str(s.label) for s in samples)),
            "images": _text("\n".join(str(s.image or "") for s in samples)),
            "signatures": current,
            "usable": np.array([r.usable for r in results], dtype=bool),
            "hwc": np.array([r.hwc for r in results], dtype=np.int32).reshape(-1, 3),
            "offsets": offsets,
            "boxes": np.concatenate(boxes) if boxes else np.zeros((0, 5), np.float32),
            "lines": np.concatenate([r.lines for r in results]).astype(np.int32)
            if results
            else np.zeros(0, np.int32),
            "confidence": np.concatenate([r.confidence for r in results]).astype(np.float32)
            if results
            else np.zeros(0, np.float32),
            "problems": _text(json.dumps(problems)),
        }
        try:
            with atomic_path(path) as partial, open(partial, "wb") as f:
                np.savez(f, **arrays)
        except OSError as e:
            log.warning(f"could not save the label index {display_path(path)}: {e}")


def _text(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _checked(
    arrays: dict[str, np.ndarray],
) -> tuple[list[str], list[str], dict[int, list[Problem]]]:
    """The label and image paths and the problems by position of an index whose arrays agree
    with each other (ValueError otherwise)."""
    labels = arrays["labels"].tobytes().decode().split("\n")
    images = arrays["images"].tobytes().decode().split("\n")
    n = len(arrays["usable"])
    boxes, offsets = arrays["boxes"], arrays["offsets"]
    if not (len(labels) == len(images) == n == len(offsets) - 1 == len(arrays["hwc"])):
        raise ValueError("arrays of different lengths")
    if arrays["signatures"].shape != (n, 6) or boxes.dtype != np.float32:
        raise ValueError("signatures or boxes of the wrong shape or type")
    if (
        offsets[-1] != len(boxes)
        or len(arrays["lines"]) != len(boxes)
        or arrays["confidence"].shape != (len(boxes),)
        or boxes.shape[1:] != (5,)
    ):
        raise ValueError("box arrays do not match their offsets")
    if n and (np.diff(offsets).min() < 0 or offsets[0] != 0):
        raise ValueError("offsets out of order")
    problems: dict[int, list[Problem]] = {}
    for i, path, line, kind, message, action in json.loads(arrays["problems"].tobytes()):
        if not 0 <= i < n:
            raise ValueError("a problem of a sample that is not there")
        problems.setdefault(i, []).append(Problem(Path(path), line, kind, message, action))
    return labels, images, problems
