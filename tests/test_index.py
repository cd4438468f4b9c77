"""The label index (data/index.py): a scan through it equals a fresh scan, only changed files
are read again, and a damaged, foreign or malicious index is never trusted."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_pair, write_yaml

import yogo.data.scan as scan_module
from yogo import DatasetDefinition
from yogo.data.scan import DatasetScan, scan_dataset

PAIR = "{image_path: set/images, label_path: set/labels}"
LABELS = {
    "a": "0 0.25 0.25 0.2 0.1\n1 0.75 0.75 0.4 0.3\n",
    "b": "",
    "c": "1 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n",  # a row with an unknown class
    "d": "0 0.5 0.5 0.1 0.1\n0 0.98 0.5 0.1 0.1\n",  # a row sticking out of the image
}


@pytest.fixture
def ddf(tmp_path: Path) -> DatasetDefinition:
    make_folder_pair(tmp_path / "set", LABELS, hw=(32, 40))
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a, b]\ndataset_paths: {{x: {PAIR}}}\n")
    return DatasetDefinition.from_yaml(path)


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The label files the scan actually reads (the real parser runs)."""
    seen: list[Path] = []
    real = scan_module.parse_label_file

    def counting(path: Path, lookup: object) -> object:
        seen.append(path)
        return real(path, lookup)  # type: ignore[arg-type]

    monkeypatch.setattr(scan_module, "parse_label_file", counting)
    return seen


def same(a: DatasetScan, b: DatasetScan) -> bool:
    for name in a.splits:
        for x, y in zip(a.splits[name], b.splits[name], strict=True):
            if (x.image, x.label, x.height, x.width, x.channels) != (
                y.image,
                y.label,
                y.height,
                y.width,
                y.channels,
            ):
                return False
            if not (np.array_equal(x.boxes, y.boxes) and np.array_equal(x.lines, y.lines)):
                return False
            if x.boxes.dtype != y.boxes.dtype:
                return False
    return a.problems == b.problems and a.policy == b.policy


@pytest.mark.parametrize("policy", ["error", "drop", "clip"])
def test_a_scan_through_the_index_equals_a_fresh_scan_and_reads_no_label(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path, policy: str
) -> None:
    fresh = scan_dataset(ddf, policy)  # type: ignore[arg-type]
    index = tmp_path / "run" / "label_index.npz"
    index.parent.mkdir()
    first = scan_dataset(ddf, policy, index=index)  # type: ignore[arg-type]
    assert index.is_file() and same(first, fresh)
    parsed.clear()
    again = scan_dataset(ddf, policy, index=index)  # type: ignore[arg-type]
    assert parsed == [] and same(again, fresh)
    assert again.problems  # the unknown class and the box outside are remembered too


def test_only_changed_files_are_read_again(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = tmp_path / "label_index.npz"
    scan_dataset(ddf, "drop", index=index)
    label = tmp_path / "set" / "labels" / "b.txt"
    label.write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "set" / "images" / "a.png").unlink()
    parsed.clear()
    with caplog.at_level(logging.INFO):
        scan = scan_dataset(ddf, "drop", index=index)
    assert sorted(p.name for p in parsed) == ["a.txt", "b.txt"]
    assert "2 of 4 sample(s) scanned again" in caplog.text
    assert same(scan, scan_dataset(ddf, "drop"))
    (b,) = [s for s in scan.splits["train"] if s.label == label]
    np.testing.assert_allclose(b.boxes, [[1, 0.5, 0.5, 0.2, 0.2]])
    assert any(p.kind == "unreadable-image" for p in scan.problems)  # the DDF listed it


def test_a_file_rewritten_with_the_same_size_and_time_is_read_again(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path
) -> None:
    """The change time (which no tool can set back) catches what size and mtime miss."""
    index = tmp_path / "label_index.npz"
    scan_dataset(ddf, index=index)
    label = tmp_path / "set" / "labels" / "a.txt"
    before = label.stat()
    label.write_text(LABELS["a"].replace("0.25 0.25", "0.35 0.35"))
    os.utime(label, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert label.stat().st_size == before.st_size
    parsed.clear()
    scan = scan_dataset(ddf, index=index)
    assert [p.name for p in parsed] == ["a.txt"]
    assert scan.splits["train"][0].boxes[0, 1] == pytest.approx(0.35)


def test_an_index_made_for_other_settings_is_not_used(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path
) -> None:
    index = tmp_path / "label_index.npz"
    scan_dataset(ddf, "drop", index=index)
    parsed.clear()
    scan_dataset(ddf, "clip", index=index)  # another policy
    assert len(parsed) == 4
    renamed = DatasetDefinition.from_yaml(
        write_yaml(tmp_path / "e.yml", f"class_names: [a, c]\ndataset_paths: {{x: {PAIR}}}\n")
    )
    parsed.clear()
    scan_dataset(renamed, "clip", index=index)  # other class names
    assert len(parsed) == 4


@pytest.mark.parametrize("kind", ["bytes", "arrays", "pickle"])
def test_a_damaged_or_malicious_index_is_ignored_and_replaced(
    ddf: DatasetDefinition, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    index = tmp_path / "label_index.npz"
    scan_dataset(ddf, index=index)
    if kind == "bytes":
        index.write_bytes(os.urandom(300))
    else:
        with np.load(index) as f:
            arrays = {name: f[name] for name in f.files}
        if kind == "arrays":
            arrays["offsets"] = arrays["offsets"][:-2]
        else:  # an object array needs pickle to load: it could run code
            arrays["problems"] = np.array([print], dtype=object)
        with index.open("wb") as out:
            np.savez(out, **arrays)
    with caplog.at_level(logging.INFO):
        scan = scan_dataset(ddf, index=index)
    assert "is damaged" in caplog.text and "scanning the labels again" in caplog.text
    assert same(scan, scan_dataset(ddf))
    with np.load(index, allow_pickle=False) as f:  # replaced by a good one
        assert len(f["usable"]) == 4


def test_a_folder_that_cannot_hold_the_index_only_costs_a_warning(
    ddf: DatasetDefinition, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "gone" / "label_index.npz"
    scan = scan_dataset(ddf, index=missing)
    assert "could not save the label index" in caplog.text
    assert same(scan, scan_dataset(ddf))


def test_many_samples_are_scanned_in_parallel_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = {f"f{i:03d}": f"{i % 2} 0.5 0.5 0.{1 + i % 8} 0.1\n" for i in range(60)}
    make_folder_pair(tmp_path / "set", labels, hw=(16, 16))
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a, b]\ndataset_paths: {{x: {PAIR}}}\n")
    ddf = DatasetDefinition.from_yaml(path)
    serial = scan_dataset(ddf)
    monkeypatch.setattr(scan_module, "PARALLEL_SCAN_MIN", 10)
    monkeypatch.setattr(scan_module, "usable_cores", lambda: 3)
    assert same(scan_dataset(ddf), serial)


def test_label_studio_folders_are_indexed_and_a_changed_notes_file_is_noticed(
    tmp_path: Path, parsed: list[Path]
) -> None:
    make_folder_pair(tmp_path / "set", {"a": "0 0.5 0.5 0.1 0.1\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    notes = tmp_path / "set" / "notes.json"
    notes.write_text('{"categories": [{"id": 0, "name": "b"}, {"id": 1, "name": "a"}]}')
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a, b]\ndataset_paths: {{x: {PAIR}}}\n")
    ddf = DatasetDefinition.from_yaml(path)
    index = tmp_path / "label_index.npz"
    first = scan_dataset(ddf, index=index)
    assert [s.boxes[0, 0] for s in first.splits["train"]] == [1, 0]  # ids mapped by name
    parsed.clear()
    assert same(scan_dataset(ddf, index=index), first) and parsed == []
    notes.write_text('{"categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]}')
    again = scan_dataset(ddf, index=index)
    assert len(parsed) == 2 and [s.boxes[0, 0] for s in again.splits["train"]] == [0, 1]
