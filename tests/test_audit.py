"""`yogo audit` (yogo.curation): planted label errors rank near the top, a simulated sort
written back with --apply restores them, the original labels stay byte-identical, and bad
audit folders get one message each."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from yogo.curation.audit import AGREES, EXTRA, MISSED, OTHER, POOR, frame_rows

FRAMES = 48


@dataclass
class Planted:
    kind: str  # swapped, deleted, shifted
    label: str  # label file name
    line: int  # the row's line (in the original file)
    cls: int  # its true class
    box: np.ndarray  # its true box, x0 y0 x1 y1


def xyxy(row: np.ndarray) -> np.ndarray:
    _, xc, yc, w, h = row
    return np.array([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2])


def plant_errors(labels: Path, per_kind: int) -> list[Planted]:
    """Swap the class of, delete, or shift by a box width one healthy cell (away from the
    edges) in each of 3 x `per_kind` label files."""
    planted = []
    files = sorted(labels.glob("*.txt"))
    kinds = ["swapped", "deleted", "shifted"] * per_kind
    for kind, path in zip(kinds, files[:: len(files) // len(kinds)], strict=False):
        rows = np.loadtxt(path, ndmin=2)
        inside = (
            (rows[:, 0] == 0)
            & (rows[:, 1] - rows[:, 3] > 0.1)
            & (rows[:, 1] + rows[:, 3] < 0.9)
            & (rows[:, 2] - rows[:, 4] > 0.1)
            & (rows[:, 2] + rows[:, 4] < 0.9)
        )
        i = int(np.flatnonzero(inside)[0])
        planted.append(Planted(kind, path.name, i + 1, 0, xyxy(rows[i])))
        lines = path.read_text().splitlines()
        if kind == "swapped":
            lines[i] = "1 " + lines[i].split(" ", 1)[1]
        elif kind == "deleted":
            del lines[i]
        else:
            _, xc, yc, w, h = rows[i]
            lines[i] = f"0 {xc + w:.6f} {yc:.6f} {w:.6f} {h:.6f}"
        path.write_text("\n".join(lines) + "\n")
    return planted


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


@pytest.mark.slow
def test_planted_errors_rank_first_and_a_sort_restores_them(run_cli, tmp_path: Path) -> None:
    import csv

    import yogo
    from yogo.data.synth import write_dataset

    ddf = write_dataset(
        tmp_path / "data", FRAMES, (96, 128), seed=11, split_fractions=(0.75, 0.25, 0)
    )
    planted = plant_errors(ddf.parent / "labels", per_kind=4)
    run = yogo.train(
        yogo.TrainConfig(
            ddf=str(ddf), epochs=24, batch_size=4, num_workers=0, wandb=False,
            output_dir=str(tmp_path / "runs"), name="r",
        )
    )  # fmt: skip
    before = tree_digest(ddf.parent)
    audit = tmp_path / "audit"
    result = run_cli("audit", run / "best.pth", ddf, "--output-dir", audit, "--num-workers", 0,
                     "--max-thumbnails", 100_000)  # fmt: skip
    assert result.code == 0, result.err
    assert "audited 48 frame(s)" in result.out
    with open(audit / "audit.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    def found(p: Planted, row: dict[str, str]) -> bool:
        if Path(row["label_file"]).name != p.label:
            return False
        if p.kind in ("swapped", "shifted") and row["line"] == str(p.line):
            return True  # the wrong row itself
        box = np.array([float(row[k]) for k in ("x0", "y0", "x1", "y1")])
        return p.kind != "swapped" and row["kind"] == "extra" and iou(box, p.box) > 0.5

    top = rows[: 2 * len(planted)]
    caught = [p for p in planted if any(found(p, row) for row in top)]
    ranks = {p.kind + p.label: min(int(r["rank"]) for r in rows if found(p, r)) for p in planted}
    print(f"\nplanted errors' best ranks among {len(rows)} rows: {sorted(ranks.values())}")
    assert len(caught) >= 0.8 * len(planted), ranks

    # A careful person's sort: each planted error's thumbnails go where they belong, every
    # other extra is rejected (delete/), the rest is left alone; then --accept-extras.
    for row in rows:
        if not row["thumbnail"]:
            continue
        picture = audit / row["thumbnail"]
        mine = [p for p in planted if found(p, row)]
        if mine and mine[0].kind == "swapped":
            target = "healthy"  # back to its class
        elif mine and mine[0].kind == "shifted" and row["kind"] != "extra":
            target = "delete"  # the shifted box goes, the model's box at the cell comes in
        elif mine:
            continue  # a deleted (or shifted) cell's extra: accepted as it is
        elif row["kind"] == "extra":
            target = "delete"
        else:
            continue
        if target != picture.parent.name:
            shutil.move(picture, audit / target / picture.name)
    new = tmp_path / "labels-v2"
    applied = run_cli("audit", "--apply", audit, "--out", new, "--accept-extras")
    assert applied.code == 0, applied.err
    assert "relabelled to it" in applied.out and "changes.csv" in applied.out
    assert tree_digest(ddf.parent) == before  # the user's files, byte for byte

    original = write_dataset(tmp_path / "clean", FRAMES, (96, 128), seed=11,
                             split_fractions=(0.75, 0.25, 0)).parent / "labels"  # fmt: skip
    for p in planted:
        truth = np.loadtxt(original / p.label, ndmin=2)
        rows_now = [line.split() for line in (new / "labels" / p.label).read_text().splitlines()]
        fixed = np.array([[float(v) for v in row[:5]] for row in rows_now])
        assert len(fixed) == len(truth), p
        matches = [r for r in fixed if r[0] == p.cls and iou(xyxy(r), p.box) > 0.7]
        assert matches, p  # the true row is back (a person's, or the model's box)
        machine = [row for row in rows_now if len(row) == 6]  # accepted extras: confidence
        assert len(machine) == (p.kind != "swapped"), (p, machine)
    # the new DDF: the same frames in the same splits, over the corrected labels
    from yogo.ddf import DatasetDefinition

    old_splits, new_splits = (DatasetDefinition.from_yaml(d).splits for d in (ddf, new / "ddf.yml"))
    for split in ("train", "val", "test"):
        assert [s.image for s in new_splits[split]] == [s.image for s in old_splits[split]]
    checked = run_cli("check", new / "ddf.yml")
    assert checked.code == 0, checked.err


def test_frame_rows_name_each_kind_of_disagreement() -> None:
    """One frame, one case of each kind: which row is what, and how suspect."""
    truth = np.array(
        [
            [0, 0.2, 0.2, 0.1, 0.1],  # found, same class: agrees
            [0, 0.5, 0.5, 0.1, 0.1],  # found as class 1: other class
            [0, 0.8, 0.2, 0.1, 0.1],  # nothing there: missed
            [1, 0.8, 0.8, 0.1, 0.1],  # found, box shifted by 0.02: poor box
        ]
    )
    detections = np.array(  # x0 y0 x1 y1, objectness, class prob, class, the class probs
        [
            [0.15, 0.15, 0.25, 0.25, 0.9, 1.0, 0, 1.0, 0.0],
            [0.45, 0.45, 0.55, 0.55, 0.9, 0.8, 1, 0.2, 0.8],
            [0.77, 0.77, 0.87, 0.87, 0.8, 1.0, 1, 0.0, 1.0],
            [0.1, 0.8, 0.2, 0.9, 0.95, 0.7, 0, 0.7, 0.3],  # no label: extra
        ]
    )
    decoded = np.zeros((7, 10, 10))
    decoded[4] = 0.2  # objectness everywhere
    decoded[5:] = 0.5
    rows = frame_rows(3, truth, np.array([1, 2, 3, 4]), detections, decoded)
    assert rows.kind.tolist() == [AGREES, OTHER, MISSED, POOR, EXTRA]
    assert rows.line.tolist() == [1, 2, 3, 4, 0] and (rows.sample == 3).all()
    assert rows.predicted_class.tolist() == [0, 1, -1, 1, 0]
    # the model's chance that the row is wrong: 1 - objectness x p(label class) for a label
    # (at the detection, or at its cell when none), the objectness for an extra
    expected = [1 - 0.9 * 1.0, 1 - 0.9 * 0.2, 1 - 0.2 * 0.5, 0.95]
    np.testing.assert_allclose(rows.disagreement[[0, 1, 2, 4]], expected, atol=1e-6)
    overlap = 0.08**2 / (2 * 0.1**2 - 0.08**2)  # IoU 0.47: a poor box, scaled by IoU / 0.5
    assert rows.disagreement[3] == pytest.approx(1 - 0.8 * 1.0 * overlap / 0.5, abs=1e-6)
    order = rows.ranking()
    assert order[0] == 4 and order[-1] == 0  # the confident extra first, the agreement last


@pytest.mark.slow
def test_bad_audit_folders_and_requests_get_one_message_each(
    trained_run, run_cli, tmp_path: Path
) -> None:
    import csv

    data = tmp_path / "data"
    shutil.copytree(trained_run.ddf.parent, data)
    ddf, audit = data / "ddf.yml", tmp_path / "audit"
    made = run_cli("audit", trained_run.run / "best.pth", ddf, "--output-dir", audit,
                   "--num-workers", 0, "--max-thumbnails", 20)  # fmt: skip
    assert made.code == 0, made.err
    first = sorted(audit.glob("*/*.png"))[0]
    attempts = iter(range(100))

    def refused(*args: object) -> str:
        """`yogo audit ARGS` (and a new --out with --apply) exits 2 and writes nothing."""
        out = tmp_path / f"new{next(attempts)}"
        result = run_cli("audit", *args, *(["--out", out] if "--apply" in args else []))
        assert result.code == 2, result.err
        assert not out.exists() or not any(out.iterdir())  # nothing written
        return result.err

    renamed = first.with_name("cell.png")
    first.rename(renamed)
    err = refused("--apply", audit)
    assert "cell.png" in err and "renamed by hand" in err and "audit.csv" in err
    renamed.rename(first)
    shutil.copy(first, audit / "delete" / first.name)
    assert "is in two folders" in refused("--apply", audit)
    (audit / "delete" / first.name).unlink()
    (audit / "maybe").mkdir()
    first.rename(audit / "maybe" / first.name)
    assert "is not a class of this audit" in refused("--apply", audit)
    (audit / "maybe" / first.name).rename(first)
    other = tmp_path / "other.yml"
    other.write_text(ddf.read_text().replace("images", str(data / "images")))
    assert "was made from" in refused(other, "--apply", audit)
    assert "is not an audit folder" in refused("--apply", data)
    with open(audit / "audit.csv", newline="") as f:
        label = Path(next(r for r in csv.DictReader(f) if r["thumbnail"])["label_file"])
    kept = label.read_bytes()
    label.write_bytes(kept + b"0 0.5 0.5 0.1 0.1\n")
    err = refused("--apply", audit)
    assert "changed since the audit" in err and label.name in err and "audit again" in err
    label.write_bytes(kept)
    no_out = run_cli("audit", "--apply", audit)
    assert no_out.code == 2 and "--apply needs --out" in no_out.err
    model = trained_run.run / "best.pth"
    assert "go with --apply" in refused(model, ddf, "--accept-extras")
    assert "needs a CHECKPOINT and a DDF" in refused(ddf)
    renamed_classes = tmp_path / "renamed.yml"
    renamed_classes.write_text(
        ddf.read_text().replace("healthy", "normal").replace("images", str(data / "images"))
        .replace("labels", str(data / "labels"))
    )  # fmt: skip
    err = refused(model, renamed_classes, "--output-dir", tmp_path / "x")
    assert "differ from the DDF's" in err and not (tmp_path / "x").exists()
    again = refused(model, ddf, "--output-dir", audit)
    assert "already holds" in again and "--force" in again
    fine = run_cli("audit", "--apply", audit, "--out", tmp_path / "fine")
    assert fine.code == 0 and "no thumbnail was moved" in fine.out, fine.err


def test_corrections_keep_each_files_spelling_and_mark_machine_rows() -> None:
    """A relabelled row becomes a person's (its confidence dropped), a deleted one goes, an
    accepted extra keeps the model's confidence; classes are spelt as the folder spells them
    (indices, or Label Studio ids through notes.json)."""
    from yogo.curation.apply import _corrected

    names = ("healthy", "ring")
    text = "0,0.5,0.5,0.1,0.1,0.93\n1 0.2 0.2 0.1 0.1\n0 0.8 0.8 0.1 0.1\n"
    edits: dict[int, str | None] = {1: "ring", 3: None}
    adds = [("healthy", ["0.1", "0.1", "0.3", "0.2"], "0.8800")]
    assert _corrected(text, edits, adds, names, None).splitlines() == [
        "1 0.5 0.5 0.1 0.1",
        "1 0.2 0.2 0.1 0.1",
        "0 0.200000 0.150000 0.200000 0.100000 0.8800",
    ]
    studio = {7: "healthy", 9: "ring"}
    assert _corrected("7 0.5 0.5 0.1 0.1\n", {1: "ring"}, [], names, studio) == (
        "9 0.5 0.5 0.1 0.1\n"
    )
    assert _corrected("7 0.5 0.5 0.1 0.1\n", {1: None}, [], names, None) == ""
