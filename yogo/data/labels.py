"""Parsing one YOLO label file, and the `--bad-labels error|drop|clip` policy.

    lookup = ClassLookup(("healthy", "ring"))
    parsed = parse_label_file(Path("labels/img_001.txt"), lookup)
    boxes, actions = apply_policy(parsed, "clip")   # boxes: (N, 5) float32 class, xc, yc, w, h

Accepted rows: `class xc yc w h`, separated by spaces or by commas; `class` an integer index or a
class name (or a Label Studio id, mapped through `notes.json`); numbers normalised to the image.
An optional sixth value is a confidence in [0, 1]: `yogo infer --save-preds` writes one, so
machine labels train as they are (`--min-label-confidence` filters them; a row without one is a
person's label and always kept).
A first row that is not a data row (`class x y w h`) is a header and skipped; blank lines are
skipped; an empty file is an image without objects.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yogo.config import BAD_LABELS_POLICIES, BadLabelsPolicy
from yogo.errors import UserError, where

# A box may stick out of the image by this much (normalised) before it is an error: exporters
# round, and 1e-3 of a 1032 px frame is one pixel. Such boxes are clipped silently.
EDGE_TOLERANCE = 1e-3

ERROR_KINDS = {
    "unreadable-label": "label file cannot be read as text",
    "columns": "wrong column count",
    "not-a-number": "value is not a number",
    "not-finite": "NaN or infinite value",
    "confidence": "confidence outside [0, 1]",
    "class": "class out of range or unknown",
    "size": "width or height <= 0",
    "centre": "box centre outside [0, 1]",
    "outside": "box extends outside the image",
    "no-image": "label file without image",
    "unreadable-image": "image header cannot be read",
    "corrupt-image": "image fails to decode",
}
WARNING_KINDS = {
    "collision": "objects sharing a grid cell (the grid keeps one)",
    "collision-loss": "a class losing over 5% of its objects to shared grid cells",
    "multi-page-image": "multi-page files (only page 1 is used)",
    "unlabelled-images": "images without label files (ignored)",
    "ambiguous-image": "several images with the same stem",
    "mixed-sizes": "images of different sizes (resized to --image-hw)",
    "thumbnail": "thumbnails --copy-paste cannot paste (unreadable, or not smaller than a frame)",
    "dataset-definition": "dataset definition notes",
    "missing-class": "a class with no object in a split",
    "empty-split": "a split without samples",
}
# Problems `clip` can repair; the rest are dropped under `clip`.
CLIPPABLE_KINDS = frozenset({"centre", "outside"})
# Problems that make a whole sample unusable (rather than one row).
SAMPLE_KINDS = frozenset({"unreadable-label", "no-image", "unreadable-image", "corrupt-image"})

_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Problem:
    """One finding about the data, with the place to fix it (`line` None: the whole file)."""

    path: Path
    line: int | None
    kind: str
    message: str
    action: str | None = None  # what the --bad-labels policy did: "dropped row", "clipped", ...

    @property
    def severity(self) -> str:
        return "error" if self.kind in ERROR_KINDS else "warning"

    def __str__(self) -> str:
        text = f"{where(self.path, self.line)}: {self.message}"
        return f"{text} ({self.action})" if self.action else text

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "line": self.line,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
            "action": self.action,
        }


class ClassLookup:
    """Maps a label's class token to a class index, per label folder.

    `label_studio_ids` (from `notes.json`) maps numeric ids to class names first.
    """

    def __init__(
        self, class_names: Sequence[str], label_studio_ids: dict[int, str] | None = None
    ) -> None:
        self.class_names = tuple(class_names)
        self.by_name = {name: i for i, name in enumerate(self.class_names)}
        self.label_studio_ids = label_studio_ids
        # Class tokens the fast path accepts as they are: "0", "1", ... (no sign, no padding).
        self.index_tokens = frozenset(str(i) for i in range(len(self.class_names)))

    def index(self, token: str) -> int | str:
        """The class index for `token`, or a message saying why there is none."""
        if _INTEGER.fullmatch(token) or _is_integral_float(token):
            number = int(float(token))
            if self.label_studio_ids is not None:
                name = self.label_studio_ids.get(number)
                if name is None:
                    return f"class id {number} is not in notes.json"
                if name not in self.by_name:
                    return f"class id {number} is '{name}' in notes.json, not one of class_names"
                return self.by_name[name]
            if 0 <= number < len(self.class_names):
                return number
            return f"class {number} out of range 0..{len(self.class_names) - 1}"
        if token in self.by_name:
            return self.by_name[token]
        if _is_number(token):
            return f"class '{token}' is not an integer"
        return f"unknown class name '{token}' (class_names: {', '.join(self.class_names)})"


def load_label_studio_ids(label_folder: Path) -> dict[int, str] | None:
    """`{id: name}` from a Label Studio `notes.json` next to `label_folder`, if there is one."""
    notes = label_folder.parent / "notes.json"
    if not notes.is_file():
        return None
    try:
        categories = json.loads(notes.read_text(encoding="utf-8"))["categories"]
        pairs = [(c["id"], str(c["name"])) for c in categories]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"not a Label Studio notes file ({type(e).__name__}: {e})",
            path=notes,
            fix='it needs "categories": [{"id": 0, "name": "..."}, ...], or remove the file',
        ) from None
    bad = [i for i, _ in pairs if not isinstance(i, int) or isinstance(i, bool) or i < 0]
    if bad:
        raise UserError(
            f"category ids must be whole numbers >= 0, got {', '.join(map(repr, bad))}",
            path=notes,
            fix="give each category an integer id, as Label Studio writes them",
        )
    ids = [i for i, _ in pairs]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        names = {i: sorted({n for j, n in pairs if j == i}) for i in twice}
        shown = "; ".join(f"{i}: {', '.join(names[i])}" for i in twice)
        raise UserError(
            f"category id(s) listed more than once ({shown}): every label with such an id "
            "would get one of the names",
            path=notes,
            fix="give each category its own id (export notes.json again from Label Studio)",
        )
    return dict(pairs)


@dataclass(frozen=True)
class ParsedLabels:
    """A label file's rows. `boxes` holds every row that parsed into a known class and five
    finite numbers, including rows with geometry problems (so `clip` can repair them);
    `lines` are their 1-based line numbers, `confidence` their sixth column (NaN: none)."""

    path: Path
    boxes: np.ndarray  # (N, 5) float64: class, xc, yc, w, h (normalised)
    lines: np.ndarray  # (N,) int64
    problems: tuple[Problem, ...]
    confidence: np.ndarray  # (N,) float64 in [0, 1], NaN for a row without one


def parse_label_file(path: Path, lookup: ClassLookup) -> ParsedLabels:
    """Parse `path`; every problem becomes a Problem with its line, nothing is raised."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        problem = Problem(path, None, "unreadable-label", f"label file cannot be read: {reason}")
        empty = np.zeros(0, np.float64)
        return ParsedLabels(path, np.zeros((0, 5)), np.zeros(0, np.int64), (problem,), empty)
    return parse_label_text(text, path, lookup)


def parse_label_text(text: str, path: Path, lookup: ClassLookup) -> ParsedLabels:
    clean = _parse_clean(text, lookup)
    if clean is not None:
        boxes, confidence = clean
        lines = np.arange(1, len(boxes) + 1, dtype=np.int64)
        return ParsedLabels(path, boxes, lines, (), confidence)
    return _parse_rows(text, path, lookup)


def _parse_clean(text: str, lookup: ClassLookup) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path for the common file: space-separated rows of one width (5, or 6 with a
    confidence), plain integer classes, no blank line, no problem. Returns None whenever
    anything differs, and `_parse_rows` then gives the exact per-row account; both accept
    exactly the same clean files."""
    if lookup.label_studio_ids is not None or "," in text:
        return None
    rows = [line.split() for line in text.splitlines()]
    width = len(rows[0]) if rows else 5
    if width not in (5, 6) or any(
        len(row) != width or row[0] not in lookup.index_tokens for row in rows
    ):
        return None
    try:
        values = np.array(rows, dtype=np.float64).reshape(-1, width)
    except ValueError:
        return None
    if not np.isfinite(values).all():
        return None
    boxes = values[:, :5]
    confidence = values[:, 5] if width == 6 else np.full(len(values), np.nan)
    xc, yc, w, h = boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    overhang = np.maximum.reduce([w / 2 - xc, xc + w / 2 - 1, h / 2 - yc, yc + h / 2 - 1])
    clean = (
        (w > 0).all()
        and (h > 0).all()
        and ((xc >= 0) & (xc <= 1) & (yc >= 0) & (yc <= 1)).all()
        and (overhang <= EDGE_TOLERANCE).all()
        and not ((confidence < 0) | (confidence > 1)).any()
    )
    return (np.ascontiguousarray(boxes), confidence) if clean else None


def _parse_rows(text: str, path: Path, lookup: ClassLookup) -> ParsedLabels:
    rows: list[list[float]] = []
    lines: list[int] = []
    confidence: list[float] = []
    problems: list[Problem] = []
    first = True
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        tokens = [t.strip() for t in stripped.split(",")] if "," in stripped else stripped.split()
        if first:
            first = False
            if _is_header(tokens, lookup):
                continue
        parsed = _parse_row(tokens, lookup)
        if isinstance(parsed[0], str):
            problems.append(Problem(path, number, *parsed))
            continue
        row, score = parsed
        rows.append(row)
        lines.append(number)
        confidence.append(score)
        geometry = _geometry_problem(row)
        if geometry is not None:
            problems.append(Problem(path, number, *geometry))
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 5)
    scores = np.array(confidence, dtype=np.float64)
    return ParsedLabels(path, boxes, np.array(lines, dtype=np.int64), tuple(problems), scores)


@dataclass(frozen=True)
class PolicyResult:
    boxes: np.ndarray  # (N, 5) float32 class, xc, yc, w, h, inside [0, 1]
    lines: np.ndarray  # (N,) their 1-based line numbers
    problems: tuple[Problem, ...]  # with the action taken, unless the policy is `error`
    confidence: np.ndarray  # (N,) float32, NaN where the row has no confidence column


def apply_policy(parsed: ParsedLabels, policy: BadLabelsPolicy) -> PolicyResult:
    """The boxes a run trains on under `policy`, and the problems with what was done to each.

    Bad rows never reach the returned boxes. `error` reports problems without an action (the
    caller refuses to train when any is an error); `drop` drops each bad row; `clip` clips
    centre/extent problems into the image and drops the rest.
    """
    if policy not in BAD_LABELS_POLICIES:
        raise ValueError(f"unknown bad-labels policy {policy!r}")
    keep = np.ones(len(parsed.boxes), dtype=bool)
    row_of = {int(line): i for i, line in enumerate(parsed.lines)} if parsed.problems else {}
    done: list[Problem] = []
    for problem in parsed.problems:
        row = row_of.get(problem.line) if problem.line is not None else None
        if policy == "clip" and problem.kind in CLIPPABLE_KINDS:
            action = "clipped"
        else:
            action = "dropped row"
            if row is not None:
                keep[row] = False
        done.append(problem if policy == "error" else _with_action(problem, action))
    boxes, lines = _clip_to_image(parsed.boxes[keep]), parsed.lines[keep]
    confidence = parsed.confidence[keep]
    # A clipped box that lay entirely outside the image has nothing left to train on.
    empty = (boxes[:, 3] <= 0) | (boxes[:, 4] <= 0)
    if empty.any():
        lost = set(lines[empty].tolist())
        done = [
            _with_action(p, "dropped row: nothing left inside the image") if p.line in lost else p
            for p in done
        ]
        boxes, lines, confidence = boxes[~empty], lines[~empty], confidence[~empty]
    return PolicyResult(boxes.astype(np.float32), lines, tuple(done), confidence.astype(np.float32))


def _with_action(problem: Problem, action: str) -> Problem:
    return Problem(problem.path, problem.line, problem.kind, problem.message, action)


def _clip_to_image(boxes: np.ndarray) -> np.ndarray:
    """Clip `(N, 5)` class, xc, yc, w, h boxes to [0, 1] in corner form."""
    x0 = np.clip(boxes[:, 1] - boxes[:, 3] / 2, 0, 1)
    x1 = np.clip(boxes[:, 1] + boxes[:, 3] / 2, 0, 1)
    y0 = np.clip(boxes[:, 2] - boxes[:, 4] / 2, 0, 1)
    y1 = np.clip(boxes[:, 2] + boxes[:, 4] / 2, 0, 1)
    return np.stack([boxes[:, 0], (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_integral_float(token: str) -> bool:
    try:
        value = float(token)
    except ValueError:
        return False
    return math.isfinite(value) and value == int(value) and "." in token


def _is_header(tokens: list[str], lookup: ClassLookup) -> bool:
    """A first row is a header when its first token is not a number and the row is not a data
    row that names its class (`healthy 0.5 0.5 0.1 0.1`, or a misspelt class name)."""
    if _is_number(tokens[0]):
        return False
    rest_numeric = len(tokens) > 1 and all(_is_number(t) for t in tokens[1:])
    return not (tokens[0] in lookup.by_name or rest_numeric)


def _parse_row(
    tokens: list[str], lookup: ClassLookup
) -> tuple[list[float], float] | tuple[str, str]:
    """`([class, xc, yc, w, h], confidence or NaN)`, or `(kind, message)` saying what is wrong
    with the row."""
    if len(tokens) not in (5, 6):
        return (
            "columns",
            f"expected 5 values (class xc yc w h) or 6 (... confidence), found {len(tokens)}",
        )
    numbers = []
    for name, token in zip(("xc", "yc", "w", "h", "confidence"), tokens[1:], strict=False):
        try:
            value = float(token)
        except ValueError:
            return "not-a-number", f"{name} '{token}' is not a number"
        if not math.isfinite(value):
            return "not-finite", f"{name} is {token}"
        numbers.append(value)
    if _is_number(tokens[0]) and not math.isfinite(float(tokens[0])):
        return "not-finite", f"class is {tokens[0]}"
    index = lookup.index(tokens[0])
    if isinstance(index, str):
        return "class", index
    confidence = numbers[4] if len(numbers) == 5 else math.nan
    if not math.isnan(confidence) and not 0 <= confidence <= 1:
        return "confidence", f"confidence {confidence:g} is outside [0, 1]"
    return [float(index), *numbers[:4]], confidence


def _geometry_problem(row: list[float]) -> tuple[str, str] | None:
    _, xc, yc, w, h = row
    if w <= 0 or h <= 0:
        return "size", f"width and height must be > 0, got w={w:g} h={h:g}"
    if not (0 <= xc <= 1 and 0 <= yc <= 1):
        return "centre", f"box centre ({xc:g}, {yc:g}) is outside the image [0, 1]"
    overhang = max(w / 2 - xc, xc + w / 2 - 1, h / 2 - yc, yc + h / 2 - 1)
    if overhang > EDGE_TOLERANCE:
        return "outside", f"box extends {overhang:.4f} outside the image (limit {EDGE_TOLERANCE:g})"
    return None
