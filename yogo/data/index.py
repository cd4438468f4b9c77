"""The label index: what a dataset scan found per sample, kept in a cache folder that every run
of the same data finds, so that a requeued run, a second run, a fold or a fine-tune reads one
file per folder pair instead of every label file and image header (docs/design.md, "The label
index").

    cache = open_cache(cfg.cache_dir, inputs, Path(cfg.output_dir) / DEFAULT_NAME)
    scan = scan_dataset(ddf, policy, cache=cache)     # yogo.data.scan

The cache folder is `--cache-dir`, else `$YOGO_CACHE_DIR`, else OUTPUT_DIR/.yogo-cache; it is
never inside a folder a DDF reads data from. It holds `labels-v4/<key>.npz`, one shard per
folder pair (label folder, image folder) and the settings that change what a scan finds there
(class names, `--bad-labels` policy, that folder's Label Studio notes.json mapping), and
`<key>.lock` beside it: a process that must scan part of a folder pair holds that lock, so two
runs racing on new data parse it once, and the second reads what the first wrote.

Never trusted blindly: a sample's cached result is used only when its label file and image
have the size, modification time and change time they had when they were scanned (a content
hash would read every file at every start; the change time, which no tool can set back, catches
a file restored with its old modification time). A changed, added or removed file is scanned
alone. A shard is written atomically (a reader sees the old one or the new one), read without
pickle (arrays and JSON text, never code), and a damaged or foreign one is ignored and replaced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from yogo.data.labels import Problem
from yogo.ddf import Sample
from yogo.errors import UserError, display_path
from yogo.outputs import (
    Inputs,
    atomic_path,
    hold_lock,
    is_partial,
    plan_folder,
    release_lock,
)

log = logging.getLogger(__name__)

VERSION = 4  # 3: one shard per folder pair in a shared cache folder; 4: bit depth, planes
FOLDER = f"labels-v{VERSION}"  # in the cache folder; another version's folder is left alone
DEFAULT_NAME = ".yogo-cache"  # in the output folder
CACHE_ENV = "YOGO_CACHE_DIR"
LOCK_WAIT_S = 600.0  # a lock held longer than this (a hung scan) is given up on: scan anyway
STALE_PARTIAL_S = 3600.0  # a temporary file this old was left by a killed writer


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


class ScanResult(NamedTuple):
    """What scanning one sample found: usable or not, its boxes and header, its problems. A
    named tuple: a warm start makes one per label file, three times faster than a dataclass."""

    usable: bool
    boxes: np.ndarray  # (N, 5) float32 class, xc, yc, w, h
    lines: np.ndarray  # (N,) int32 line of each box
    hwc: tuple[int, int, int]  # image height, width, channels (0s when unusable)
    problems: tuple[Problem, ...]
    confidence: np.ndarray  # (N,) float32 confidence column of each box (NaN: none)
    depth_planes: tuple[int, int]  # image bit depth (8, 16) and planes (ImageHeader.planes)


@dataclass(frozen=True)
class Shard:
    """The cached scan results of one folder pair: its samples' file names, signatures and
    results, in the order they were scanned."""

    arrays: dict[str, np.ndarray]
    labels: list[str]
    images: list[str]
    problems: dict[int, tuple[Problem, ...]]  # by position in the shard

    def results(self, samples: Sequence[Sample], current: np.ndarray) -> list[ScanResult | None]:
        """Per sample, the cached result when its files' signature (`current`, from
        `signatures`) is the one recorded; None where it must be scanned."""
        labels, images = _names(samples)
        if labels == self.labels and images == self.images:
            positions = list(range(len(samples)))  # the usual case: the same files
        else:
            where = {key: i for i, key in enumerate(zip(self.labels, self.images, strict=True))}
            positions = [where.get(key, -1) for key in zip(labels, images, strict=True)]
        recorded = self.arrays["signatures"]
        if not len(recorded):
            return [None] * len(samples)
        found = np.array(positions, dtype=np.int64).reshape(-1)
        same = (found >= 0) & (recorded[found.clip(min=0)] == current).all(axis=1)
        # Python lists and tuples made in bulk: a warm start's per-sample cost is this loop.
        usable = self.arrays["usable"].tolist()
        hwc = list(zip(*self.arrays["hwc"].T.tolist(), strict=True))
        depth_planes = list(zip(*self.arrays["depth_planes"].T.tolist(), strict=True))
        offsets = self.arrays["offsets"].tolist()
        boxes, lines, confidence = (self.arrays[k] for k in ("boxes", "lines", "confidence"))
        problems = self.problems
        out: list[ScanResult | None] = []
        for position, keep in zip(positions, same.tolist(), strict=True):
            if not keep:
                out.append(None)
                continue
            start, end = offsets[position], offsets[position + 1]
            out.append(
                ScanResult(
                    usable[position],
                    boxes[start:end],
                    lines[start:end],
                    hwc[position],
                    problems.get(position, ()),
                    confidence[start:end],
                    depth_planes[position],
                )
            )
        return out

    @staticmethod
    def load(path: Path, meta: dict[str, Any]) -> Shard | None:
        """The shard at `path` if it exists, is intact and was made for `meta` (its folders
        and settings); None otherwise (the reason is logged)."""
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            log.warning(f"{display_path(path)} is damaged ({e}); scanning its folders again")
            return None
        try:
            if json.loads(arrays["meta"].tobytes().decode()) != _as_saved(meta):
                log.info(f"{display_path(path)} was made for other folders or settings")
                return None
            return Shard(arrays, *_checked(arrays))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            log.warning(f"{display_path(path)} is damaged ({e}); scanning its folders again")
            return None

    @staticmethod
    def save(
        path: Path,
        meta: dict[str, Any],
        samples: Sequence[Sample],
        current: np.ndarray,
        results: Sequence[ScanResult],
    ) -> None:
        """Write the shard atomically (OSError or WriteFailed when the disk refuses)."""
        boxes = [r.boxes.reshape(-1, 5) for r in results]
        offsets = np.cumsum([0, *(len(b) for b in boxes)], dtype=np.int64)
        problems = [
            [i, str(p.path), p.line, p.kind, p.message, p.action]
            for i, r in enumerate(results)
            for p in r.problems
        ]
        labels, images = _names(samples)
        arrays: dict[str, Any] = {
            "meta": _text(json.dumps(_as_saved(meta))),
            "labels": _text("\n".join(labels)),
            "images": _text("\n".join(images)),
            "signatures": current,
            "usable": np.array([r.usable for r in results], dtype=bool),
            "hwc": np.array([r.hwc for r in results], dtype=np.int32).reshape(-1, 3),
            "depth_planes": np.array([r.depth_planes for r in results], np.int32).reshape(-1, 2),
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
        with atomic_path(path) as partial, open(partial, "wb") as f:
            np.savez(f, **arrays)


def shard_meta(
    sample: Sample, class_names: Sequence[str], policy: str, notes: dict[int, str] | None
) -> dict[str, Any]:
    """What a shard is made for: the folder pair of `sample` (absolute), the class names, the
    policy and the label folder's notes.json mapping (Label Studio ids to class indices)."""
    return {
        "version": VERSION,
        "labels": os.path.abspath(os.path.dirname(str(sample.label))),
        "images": os.path.abspath(str(sample.image_folder)),
        "class_names": list(class_names),
        "policy": policy,
        "notes": sorted((notes or {}).items()),
    }


def shard_key(meta: dict[str, Any]) -> str:
    """The file name (without suffix) of the shard made for `meta`."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LabelCache:
    """The shards in `folder` (CACHE/labels-v4, made when the first shard is written)."""

    folder: Path

    def path(self, meta: dict[str, Any]) -> Path:
        return self.folder / f"{shard_key(meta)}.npz"

    def read(self, meta: dict[str, Any]) -> Shard | None:
        return Shard.load(self.path(meta), meta)

    def write(
        self,
        meta: dict[str, Any],
        samples: Sequence[Sample],
        current: np.ndarray,
        results: Sequence[ScanResult],
    ) -> None:
        """Save a shard; a disk that refuses costs a warning (the next run scans again)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            Shard.save(self.path(meta), meta, samples, current, results)
        except (OSError, UserError) as e:  # UserError: WriteFailed, a full disk say
            log.warning(f"could not save the label index in {display_path(self.folder)}: {e}")

    @contextlib.contextmanager
    def locked(self, metas: Sequence[dict[str, Any]]) -> Iterator[None]:
        """Hold the locks of these shards (in key order: two processes never deadlock), waiting
        while another process scans them. Without locks (a file system without them, a folder
        that cannot be made, a hung holder) the work goes on: shards are written atomically, so
        the worst case is a folder pair scanned twice."""
        held: list[int] = []
        try:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                log.warning(f"cannot make the label index folder {display_path(self.folder)}: {e}")
            else:
                for key in sorted({shard_key(meta) for meta in metas}):
                    fd = _wait_for_lock(self.folder / f"{key}.lock")
                    if fd is not None:
                        held.append(fd)
            yield
        finally:
            for fd in held:
                release_lock(fd)

    def remove_stale_partials(self) -> None:
        """Remove the temporary files of writers killed over STALE_PARTIAL_S ago (a younger one
        may be another process's write in progress)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.folder):
                if is_partial(entry.name) and time.time() - entry.stat().st_mtime > STALE_PARTIAL_S:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _wait_for_lock(path: Path) -> int | None:
    """An exclusive `flock` on `path` (created if needed), waiting up to LOCK_WAIT_S for the
    process that holds it; None when it cannot be had."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        log.warning(f"cannot lock {display_path(path)}: {e.strerror or e}")
        return None
    started, said = time.monotonic(), False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return hold_lock(fd)
        except BlockingIOError:
            waited = time.monotonic() - started
            if not said:
                log.info(f"waiting for another yogo process indexing the same folders ({path})")
                said = True
            if waited > LOCK_WAIT_S:
                log.warning(
                    f"{display_path(path)} is still locked after {LOCK_WAIT_S:.0f} s; "
                    "scanning without waiting for the other process"
                )
                os.close(fd)
                return None
            time.sleep(0.05)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF):
                raise
            return None


def open_cache(given: str | None, inputs: Inputs, default: Path | None) -> LabelCache | None:
    """The label cache of a command: `given` (--cache-dir), else $YOGO_CACHE_DIR, else
    `default` (None: no cache). Checked now, before any work: a folder inside one the command
    reads data from, a file, or a folder that cannot be written is a UserError."""
    if given:
        folder, option = Path(given), "--cache-dir"
    elif os.environ.get(CACHE_ENV):
        folder, option = Path(os.environ[CACHE_ENV]), f"${CACHE_ENV}"
    elif default is not None:
        folder, option = default, "the label cache folder (--cache-dir)"
    else:
        return None
    plan_folder(folder, replace=True, inputs=inputs, option=option, create=True)
    cache = LabelCache(folder / FOLDER)
    cache.remove_stale_partials()
    return cache


def _names(samples: Sequence[Sample]) -> tuple[list[str], list[str]]:
    """The label and image file names of `samples` (a shard's folders are in its meta)."""
    labels = [s.label.name for s in samples]
    images = [s.image.name if s.image is not None else "" for s in samples]
    return labels, images


def _as_saved(meta: dict[str, Any]) -> Any:
    """`meta` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(meta))


def _text(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _checked(
    arrays: dict[str, np.ndarray],
) -> tuple[list[str], list[str], dict[int, tuple[Problem, ...]]]:
    """The label and image paths and the problems by position of an index whose arrays agree
    with each other (ValueError otherwise)."""
    labels = arrays["labels"].tobytes().decode().split("\n")
    images = arrays["images"].tobytes().decode().split("\n")
    n = len(arrays["usable"])
    boxes, offsets = arrays["boxes"], arrays["offsets"]
    if not (len(labels) == len(images) == n == len(offsets) - 1 == len(arrays["hwc"])):
        raise ValueError("arrays of different lengths")
    if arrays["hwc"].shape != (n, 3) or arrays["depth_planes"].shape != (n, 2):
        raise ValueError("image headers of the wrong shape")
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
    return labels, images, {i: tuple(found) for i, found in problems.items()}
