"""The label index: what a dataset scan found per sample, saved so that the next start of a run
(resume, requeue, preemption) reads one file instead of every label file and image header.

    index = LabelIndex.load(run_dir / "label_index.npz", class_names, policy, notes)
    known = index.lookup(sample, signature(sample))   # the cached result, or None: scan it
    LabelIndex.save(path, class_names, policy, notes, results)

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
from yogo.outputs import open_new, partial_path

log = logging.getLogger(__name__)

VERSION = 1
INDEX_NAME = "label_index.npz"  # in the run folder
# Per sample: label size, mtime_ns, ctime_ns, then the same for the image (-1: no image).
Signature = tuple[int, int, int, int, int, int]


def _stat(path: Path | None) -> tuple[int, int, int]:
    if path is None:
        return (-1, -1, -1)
    try:
        st = os.stat(path)
    except OSError:
        return (-2, -2, -2)  # gone or unreadable: never matches a file that was scanned
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def signature(sample: Sample) -> Signature:
    return (*_stat(sample.label), *_stat(sample.image))


@dataclass(frozen=True)
class ScanResult:
    """What scanning one sample found: usable or not, its boxes and header, its problems."""

    usable: bool
    boxes: np.ndarray  # (N, 5) float32 class, xc, yc, w, h
    lines: np.ndarray  # (N,) int32 line of each box
    hwc: tuple[int, int, int]  # image height, width, channels (0s when unusable)
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class LabelIndex:
    path: Path
    entries: dict[tuple[str, str], tuple[Signature, ScanResult]]

    def lookup(self, sample: Sample, sig: Signature) -> ScanResult | None:
        entry = self.entries.get((str(sample.label), str(sample.image or "")))
        if entry is None or entry[0] != sig:
            return None
        return entry[1]

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
            if meta != {"version": VERSION, **identity}:
                log.info(f"{display_path(path)} was made for other settings; scanning again")
                return None
            return LabelIndex(path, _entries(arrays))
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as e:
            log.warning(f"{display_path(path)} is damaged ({e}); scanning the labels again")
            return None

    @staticmethod
    def save(
        path: Path,
        identity: dict[str, Any],
        samples: Sequence[tuple[Sample, Signature, ScanResult]],
    ) -> None:
        """Write the index atomically; a failure to write is logged, never fatal."""
        results = [r for _, _, r in samples]
        boxes = [r.boxes.reshape(-1, 5) for r in results]
        offsets = np.cumsum([0, *(len(b) for b in boxes)], dtype=np.int64)
        problems = [
            [i, str(p.path), p.line, p.kind, p.message, p.action]
            for i, r in enumerate(results)
            for p in r.problems
        ]
        arrays: dict[str, Any] = {
            "meta": _text(json.dumps({"version": VERSION, **identity})),
            "labels": _text("\n".join(str(s.label) for s, _, _ in samples)),
            "images": _text("\n".join(str(s.image or "") for s, _, _ in samples)),
            "signatures": np.array([sig for _, sig, _ in samples], dtype=np.int64).reshape(-1, 6),
            "usable": np.array([r.usable for r in results], dtype=bool),
            "hwc": np.array([r.hwc for r in results], dtype=np.int32).reshape(-1, 3),
            "offsets": offsets,
            "boxes": np.concatenate(boxes) if boxes else np.zeros((0, 5), np.float32),
            "lines": np.concatenate([r.lines for r in results]).astype(np.int32)
            if results
            else np.zeros(0, np.int32),
            "problems": _text(json.dumps(problems)),
        }
        partial = partial_path(path)
        try:
            with os.fdopen(open_new(partial), "wb") as f:
                np.savez(f, **arrays)
            os.replace(partial, path)
        except OSError as e:
            log.warning(f"could not save the label index {display_path(path)}: {e}")
        finally:
            partial.unlink(missing_ok=True)


def _text(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _entries(arrays: dict[str, np.ndarray]) -> dict[tuple[str, str], tuple[Signature, ScanResult]]:
    labels = arrays["labels"].tobytes().decode().split("\n")
    images = arrays["images"].tobytes().decode().split("\n")
    signatures = arrays["signatures"].tolist()
    usable, hwc, offsets = arrays["usable"], arrays["hwc"].tolist(), arrays["offsets"]
    boxes, lines = arrays["boxes"].astype(np.float32), arrays["lines"].astype(np.int32)
    n = len(usable)
    if not (len(labels) == len(images) == len(signatures) == len(hwc) == n == len(offsets) - 1):
        raise ValueError("arrays of different lengths")
    if n and (offsets[-1] != len(boxes) or len(lines) != len(boxes) or boxes.shape[1:] != (5,)):
        raise ValueError("box arrays do not match their offsets")
    found: list[list[Problem]] = [[] for _ in range(n)]
    for i, path, line, kind, message, action in json.loads(arrays["problems"].tobytes()):
        found[i].append(Problem(Path(path), line, kind, message, action))
    entries = {}
    for i in range(n):
        start, end = int(offsets[i]), int(offsets[i + 1])
        result = ScanResult(
            bool(usable[i]),
            boxes[start:end],
            lines[start:end],
            (hwc[i][0], hwc[i][1], hwc[i][2]),
            tuple(found[i]),
        )
        entries[(labels[i], images[i])] = (tuple(signatures[i]), result)
    return entries
