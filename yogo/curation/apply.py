"""`yogo audit --apply AUDIT_DIR --out NEW_DIR`: the thumbnails a person sorted, as a new label
set. A label thumbnail moved into another class's folder relabels its row, one moved into
delete/ deletes it, one left alone leaves it; an extra (a detection without a label) moved
into a class folder is added as a person's row, left in place it is added only with
`--accept-extras`, as a machine row (its confidence in the sixth column). The original label
files are never touched: NEW_DIR gets a copy of every label file (corrected where a decision
says so), laid out as they were around the DDF so the splits stay the same, and a ddf.yml
over them and the original images.

    summary = apply_audit(AuditConfig(apply="audit", out="labels-v2"))
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yogo.config import AuditConfig
from yogo.curation.audit import DELETE, FORMAT_VERSION, sha256
from yogo.data.labels import load_label_studio_ids
from yogo.ddf import DatasetDefinition, FolderPair, ddf_text
from yogo.errors import UserError, display_path
from yogo.log import speak_unless_configured
from yogo.outputs import Inputs, OutputSet, write_atomic

log = logging.getLogger("yogo")
NAME = re.compile(r"\d{5,}_.+_(L\d+|extra)\.png")  # thumbnail_name's


@dataclass(frozen=True)
class Change:
    """One row added, relabelled or deleted."""

    what: str  # relabelled, deleted, added
    label_file: Path  # the original label file
    line: int  # its line (0: an added row)
    before: str  # class before ("" for an added row)
    after: str  # class after ("" for a deleted row)
    machine: bool  # an added row that keeps the model's confidence
    thumbnail: str


@dataclass
class ApplySummary:
    out: Path
    class_names: tuple[str, ...]
    changes: list[Change] = field(default_factory=list)
    files: int = 0  # label files written
    left_alone: int = 0  # thumbnails not moved (labels kept, extras not accepted)
    missing: list[str] = field(default_factory=list)  # thumbnails no longer in the folder


def apply_audit(cfg: AuditConfig) -> ApplySummary:
    speak_unless_configured()
    cfg.require_valid()
    assert cfg.apply is not None and cfg.out is not None
    audit, out = Path(cfg.apply), Path(cfg.out)
    manifest = _manifest(audit)
    names = tuple(manifest["class_names"])
    rows = _thumbnail_rows(audit)
    now = _where_thumbnails_are(audit, rows, names)
    if cfg.ddf is not None and Path(cfg.ddf).resolve() != Path(manifest["ddf"]):
        raise UserError(
            f"was made from {manifest['ddf']}, not from {display_path(cfg.ddf)}",
            path=audit,
            fix=f"apply it without a DDF (it uses {manifest['ddf']}), or audit this DDF",
        )
    _require_unchanged(manifest)
    definition = DatasetDefinition.from_yaml(manifest["ddf"])
    definition.require_classes(names, "the audit's", "audit again with this DDF")
    summary = ApplySummary(out, names)
    edits: dict[Path, dict[int, str | None]] = {}  # label file -> line -> new class (None: delete)
    adds: dict[Path, list[tuple[str, list[str], str | None]]] = {}  # (class, box, confidence)
    for thumbnail, row in rows.items():
        before = thumbnail.split("/")[0]
        after = now.get(thumbnail)
        if after is None:
            summary.missing.append(thumbnail)
            continue
        label = Path(row["label_file"])
        if row["kind"] == "extra":
            if after == DELETE or (after == before and not cfg.accept_extras):
                summary.left_alone += after != DELETE
                continue
            machine = after == before  # accepted as the model gave it, not checked by a person
            box = [row[k] for k in ("x0", "y0", "x1", "y1")]
            adds.setdefault(label, []).append((after, box, row["score"] if machine else None))
            summary.changes.append(Change("added", label, 0, "", after, machine, thumbnail))
        elif after == before:
            summary.left_alone += 1
        else:
            line = int(row["line"])
            edits.setdefault(label, {})[line] = None if after == DELETE else after
            what = "deleted" if after == DELETE else "relabelled"
            to = "" if after == DELETE else after
            summary.changes.append(Change(what, label, line, before, to, False, thumbnail))

    layout = _layout(definition, out)
    samples = sorted({s.label: s for s in definition.samples}.values(), key=lambda s: s.label)
    targets = {s.label: _target(s.label, layout) for s in samples}
    notes = {pair.label_path: pair.label_path.parent / "notes.json" for pair in layout}
    planned = [out / "ddf.yml", out / "changes.csv", *targets.values()]
    planned += [layout[p].parent / "notes.json" for p in layout if notes[p.label_path].is_file()]
    inputs = definition.inputs() | Inputs.of(folders=[audit])
    with OutputSet(out, "audit-apply", planned, force=cfg.force, inputs=inputs, option="--out"):
        for pair, folder in layout.items():
            folder.mkdir(parents=True, exist_ok=True)
            if notes[pair.label_path].is_file():
                write_atomic(folder.parent / "notes.json", notes[pair.label_path].read_bytes())
        for sample in samples:
            text = sample.label.read_bytes()
            if sample.label in edits or sample.label in adds:
                lookup = load_label_studio_ids(sample.label.parent)
                text = _corrected(
                    text.decode("utf-8-sig"),
                    edits.get(sample.label, {}),
                    adds.get(sample.label, []),
                    names,
                    lookup,
                ).encode()
            write_atomic(targets[sample.label], text)
        summary.files = len(samples)
        write_atomic(out / "ddf.yml", _ddf(definition, layout, out))
        write_atomic(out / "changes.csv", _changes_csv(summary.changes, targets))
    return summary


def _manifest(audit: Path) -> dict[str, Any]:
    path = audit / "audit.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            "is not an audit folder (it has no audit.json)",
            path=audit,
            fix="give the folder `yogo audit CHECKPOINT DDF --output-dir` wrote",
        ) from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot be read: {e}", path=path, fix="audit again") from None
    if manifest.get("yogo_audit") != FORMAT_VERSION:
        raise UserError("was written by another version of yogo audit", path=path)
    return manifest


def _thumbnail_rows(audit: Path) -> dict[str, dict[str, str]]:
    """audit.csv's rows that have a thumbnail, by its path in the folder (`ring/00012_...`)."""
    with open(audit / "audit.csv", newline="") as f:
        return {row["thumbnail"]: row for row in csv.DictReader(f) if row["thumbnail"]}


def _where_thumbnails_are(
    audit: Path, rows: dict[str, dict[str, str]], names: tuple[str, ...]
) -> dict[str, str]:
    """Each thumbnail's folder now (by its name, which yogo gave it): a class or delete/."""
    by_name = {Path(t).name: t for t in rows}
    now: dict[str, str] = {}
    for folder in sorted(p for p in audit.iterdir() if p.is_dir()):
        pictures = sorted(folder.glob("*.png"))
        if pictures and folder.name not in (*names, DELETE):
            raise UserError(
                f"holds thumbnails, and is not a class of this audit ({', '.join(names)}) "
                f"or {DELETE}/",
                path=folder,
                fix="move its thumbnails into a class folder (or delete/)",
            )
        for picture in pictures:
            thumbnail = by_name.get(picture.name)
            if thumbnail is None:
                hint = "" if NAME.fullmatch(picture.name) else " (renamed by hand?)"
                raise UserError(
                    f"is not a thumbnail this audit wrote{hint}: the names say which label "
                    "each one is",
                    path=picture,
                    fix="give it back its name (RANK_FRAME_LLINE.png, as audit.csv lists "
                    "them), or move it out of the audit folder",
                )
            if thumbnail in now:
                raise UserError(
                    f"is in two folders ({now[thumbnail]}/ and {folder.name}/): a thumbnail "
                    "goes in one",
                    path=picture,
                    fix="move it rather than copy it; delete one of the two",
                )
            now[thumbnail] = folder.name
    return now


def _require_unchanged(manifest: dict[str, Any]) -> None:
    """The label files the audit may correct are as they were: lines still mean the same."""
    for label, digest in manifest["label_files"].items():
        path = Path(label)
        if not path.is_file() or sha256(path) != digest:
            state = "is gone" if not path.is_file() else "changed"
            raise UserError(
                f"{state} since the audit: its line numbers may no longer be the audit's",
                path=path,
                fix="audit again (`yogo audit CHECKPOINT DDF`) and sort the new thumbnails",
            )


def _layout(definition: DatasetDefinition, out: Path) -> dict[FolderPair, Path]:
    """Each entry's new label folder: where it was relative to the DDF (the split hashes the
    label paths relative to the DDF, so the splits stay the same), or, for a folder outside
    the DDF's, `NEW_DIR/outside/<entry>` (and a note that those frames may change split)."""
    home = definition.path.parent.resolve()
    layout = {}
    outside = []
    for i, pair in enumerate((*definition.dataset_paths, *definition.test_paths)):
        relative = Path(os.path.relpath(pair.label_path.resolve(), home))
        if relative.parts and relative.parts[0] == "..":
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", pair.name)
            layout[pair] = out / "outside" / f"{i:03d}_{slug}" / "labels"
            outside.append(pair.name)
        else:
            layout[pair] = out / relative
    if outside:
        log.warning(
            f"{len(outside)} label folder(s) are outside the DDF's folder ({', '.join(outside)}):"
            " their frames may fall in other splits of the new DDF than of the old one"
        )
    return layout


def _target(label: Path, layout: dict[FolderPair, Path]) -> Path:
    for pair, folder in layout.items():
        if label.parent.resolve() == pair.label_path.resolve():
            return folder / label.name
    raise AssertionError(f"{label} is in no label folder of its DDF")


def _corrected(
    text: str,
    edits: dict[int, str | None],
    adds: list[tuple[str, list[str], str | None]],
    names: tuple[str, ...],
    label_studio_ids: dict[int, str] | None,
) -> str:
    """The label file with its rows relabelled (a person's row: no confidence), deleted, and
    the added rows at the end (machine rows keep the model's confidence)."""
    lines = text.splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        if number not in edits:
            kept.append(line)
            continue
        after = edits[number]
        if after is not None:
            values = re.split(r"[,\s]+", line.strip())
            kept.append(" ".join([_token(after, names, label_studio_ids), *values[1:5]]))
    for cls, box, confidence in adds:
        x0, y0, x1, y1 = (float(v) for v in box)
        values = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        row = [_token(cls, names, label_studio_ids), *(f"{v:.6f}" for v in values)]
        kept.append(" ".join(row + ([confidence] if confidence is not None else [])))
    return "\n".join(kept) + "\n" if kept else ""


def _token(name: str, names: tuple[str, ...], label_studio_ids: dict[int, str] | None) -> str:
    """How a label file of this folder spells a class: its index, or its Label Studio id
    where notes.json maps ids to names."""
    if label_studio_ids is None:
        return str(names.index(name))
    return str(next(i for i, n in label_studio_ids.items() if n == name))


def _ddf(definition: DatasetDefinition, layout: dict[FolderPair, Path], out: Path) -> str:
    """The new DDF: the same entries (names, images, test_paths) over the new label folders."""

    def entries(pairs: tuple[FolderPair, ...]) -> list[tuple[str, str, str]]:
        return [
            (
                pair.name.split(".", 1)[-1],  # "dataset_paths.run1" -> "run1"
                str(pair.image_path.resolve()),
                os.path.relpath(layout[pair], out),
            )
            for pair in pairs
        ]

    comment = f"yogo audit --apply: the labels of {definition.path.resolve()}, corrected"
    return ddf_text(
        comment,
        definition.class_names,
        definition.split_fractions,
        entries(definition.dataset_paths),
        entries(definition.test_paths),
    )


def _changes_csv(changes: list[Change], targets: dict[Path, Path]) -> str:
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(
        ["change", "new_label_file", "label_file", "line", "before", "after", "machine_row",
         "thumbnail"]
    )  # fmt: skip
    for c in changes:
        writer.writerow(
            [c.what, targets.get(c.label_file, ""), c.label_file, c.line or "", c.before,
             c.after, "yes" if c.machine else "", c.thumbnail]
        )  # fmt: skip
    return table.getvalue()


def format_changes(summary: ApplySummary) -> str:
    counts: Counter[tuple[str, str]] = Counter()
    for c in summary.changes:
        if c.what == "relabelled":
            counts[("from", c.before)] += 1
        counts[(c.what, c.after or c.before)] += 1
    lines = [f"wrote {summary.files} label file(s) and {display_path(summary.out / 'ddf.yml')}"]
    for name in summary.class_names:
        to, away = counts[("relabelled", name)], counts[("from", name)]
        deleted, added = counts[("deleted", name)], counts[("added", name)]
        if to or away or deleted or added:
            lines.append(
                f"  {name}: {to} relabelled to it, {away} away from it, {deleted} deleted, "
                f"{added} added"
            )
    if not summary.changes:
        lines.append("  no thumbnail was moved: the new label files are copies of the old")
    lines.append(f"{summary.left_alone} thumbnail(s) left where they were (no change)")
    if summary.missing:
        lines.append(
            f"{len(summary.missing)} thumbnail(s) are no longer in the audit folder, and "
            f"changed nothing (first: {summary.missing[0]})"
        )
    lines.append(f"every change: {display_path(summary.out / 'changes.csv')}")
    return "\n".join(lines)
