"""The label index (data/index.py): a scan through it equals a fresh scan, only changed files
are read again, every run of the same data shares it (two racing processes parse each file
once), a cache folder that cannot be used is refused before any work, and a damaged, foreign
or malicious index is never trusted."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_pair, write_yaml
from PIL import Image

import yogo.data.scan as scan_module
from yogo import DatasetDefinition
from yogo.data.index import CACHE_ENV, LabelCache, open_cache
from yogo.data.scan import DatasetScan, scan_dataset
from yogo.errors import UserError
from yogo.outputs import Inputs

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


def cache_in(folder: Path) -> LabelCache:
    cache = open_cache(str(folder), Inputs(), None)
    assert cache is not None
    return cache


def shard_file(cache: LabelCache) -> Path:
    (path,) = cache.folder.glob("[!.]*.npz")  # not the temporary files of killed writes
    return path


def same(a: DatasetScan, b: DatasetScan) -> bool:
    for name in a.splits:
        for x, y in zip(a.splits[name], b.splits[name], strict=True):
            header = ("image", "label", "height", "width", "channels", "bit_depth", "planes")
            if [getattr(x, k) for k in header] != [getattr(y, k) for k in header]:
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
    index = cache_in(tmp_path / "cache")
    first = scan_dataset(ddf, policy, cache=index)  # type: ignore[arg-type]
    assert shard_file(index).is_file() and same(first, fresh)
    parsed.clear()
    again = scan_dataset(ddf, policy, cache=index)  # type: ignore[arg-type]
    assert parsed == [] and same(again, fresh)
    assert again.problems  # the unknown class and the box outside are remembered too


def test_only_changed_files_are_read_again(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = cache_in(tmp_path / "cache")
    scan_dataset(ddf, "drop", cache=index)
    label = tmp_path / "set" / "labels" / "b.txt"
    label.write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "set" / "images" / "a.png").unlink()
    parsed.clear()
    with caplog.at_level(logging.INFO):
        scan = scan_dataset(ddf, "drop", cache=index)
    assert sorted(p.name for p in parsed) == ["a.txt", "b.txt"]
    assert "2 of 4 sample(s) scanned" in caplog.text
    assert same(scan, scan_dataset(ddf, "drop"))
    (b,) = [s for s in scan.splits["train"] if s.label == label]
    np.testing.assert_allclose(b.boxes, [[1, 0.5, 0.5, 0.2, 0.2]])
    assert any(p.kind == "unreadable-image" for p in scan.problems)  # the DDF listed it


def test_a_file_rewritten_with_the_same_size_and_time_is_read_again(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path
) -> None:
    """The change time (which no tool can set back) catches what size and mtime miss."""
    index = cache_in(tmp_path / "cache")
    scan_dataset(ddf, cache=index)
    label = tmp_path / "set" / "labels" / "a.txt"
    before = label.stat()
    label.write_text(LABELS["a"].replace("0.25 0.25", "0.35 0.35"))
    os.utime(label, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert label.stat().st_size == before.st_size
    parsed.clear()
    scan = scan_dataset(ddf, cache=index)
    assert [p.name for p in parsed] == ["a.txt"]
    assert scan.splits["train"][0].boxes[0, 1] == pytest.approx(0.35)


def test_an_index_made_for_other_settings_is_not_used(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path
) -> None:
    index = cache_in(tmp_path / "cache")
    scan_dataset(ddf, "drop", cache=index)
    parsed.clear()
    scan_dataset(ddf, "clip", cache=index)  # another policy
    assert len(parsed) == 4
    renamed = DatasetDefinition.from_yaml(
        write_yaml(tmp_path / "e.yml", f"class_names: [a, c]\ndataset_paths: {{x: {PAIR}}}\n")
    )
    parsed.clear()
    scan_dataset(renamed, "clip", cache=index)  # other class names
    assert len(parsed) == 4


@pytest.mark.parametrize("kind", ["bytes", "arrays", "pickle"])
def test_a_damaged_or_malicious_index_is_ignored_and_replaced(
    ddf: DatasetDefinition, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    index = cache_in(tmp_path / "cache")
    scan_dataset(ddf, cache=index)
    shard = shard_file(index)
    if kind == "bytes":
        shard.write_bytes(os.urandom(300))
    else:
        with np.load(shard) as f:
            arrays = {name: f[name] for name in f.files}
        if kind == "arrays":
            arrays["offsets"] = arrays["offsets"][:-2]
        else:  # an object array needs pickle to load: it could run code
            arrays["problems"] = np.array([print], dtype=object)
        with shard.open("wb") as out:
            np.savez(out, **arrays)
    with caplog.at_level(logging.INFO):
        scan = scan_dataset(ddf, cache=index)
    assert "is damaged" in caplog.text and "scanning its folders again" in caplog.text
    assert same(scan, scan_dataset(ddf))
    with np.load(shard, allow_pickle=False) as f:  # replaced by a good one
        assert len(f["usable"]) == 4


def test_a_full_disk_only_costs_a_warning(
    ddf: DatasetDefinition, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stats = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - 1024))
    scan = scan_dataset(ddf, cache=cache_in(small_disk / "cache"))
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
    index = cache_in(tmp_path / "cache")
    first = scan_dataset(ddf, cache=index)
    assert [s.boxes[0, 0] for s in first.splits["train"]] == [1, 0]  # ids mapped by name
    parsed.clear()
    assert same(scan_dataset(ddf, cache=index), first) and parsed == []
    notes.write_text('{"categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]}')
    again = scan_dataset(ddf, cache=index)
    assert len(parsed) == 2 and [s.boxes[0, 0] for s in again.splits["train"]] == [0, 1]


def test_another_run_of_the_same_data_reads_no_label_and_new_folders_alone(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path
) -> None:
    """The index is keyed by folder pair, not by DDF: a second DDF (a fold, a fine-tune, a
    sweep member) over the same folders reads none of them, and one more folder pair is all
    it scans."""
    index = cache_in(tmp_path / "cache")
    scan_dataset(ddf, "drop", cache=index)
    make_folder_pair(tmp_path / "more", {"e": "0 0.5 0.5 0.1 0.1\n"})
    more = "{image_path: more/images, label_path: more/labels}"
    other = write_yaml(
        tmp_path / "other.yml", f"class_names: [a, b]\ndataset_paths: {{x: {PAIR}, y: {more}}}\n"
    )
    parsed.clear()
    scan = scan_dataset(DatasetDefinition.from_yaml(other), "drop", cache=index)
    assert [p.name for p in parsed] == ["e.txt"]
    assert same(scan, scan_dataset(DatasetDefinition.from_yaml(other), "drop"))
    assert len(list(index.folder.glob("[!.]*.npz"))) == 2


RACER = """
import sys, time
from pathlib import Path
import yogo.data.scan as scan_module
from yogo import DatasetDefinition
from yogo.data.index import open_cache
from yogo.outputs import Inputs

ddf_path, cache_dir, log_path, start_at = sys.argv[1:]
real = scan_module.parse_label_file

def slow(path, lookup):
    with open(log_path, "a") as log:
        log.write(path.name + "\\n")
    time.sleep(0.02)
    return real(path, lookup)

scan_module.parse_label_file = slow
ddf = DatasetDefinition.from_yaml(ddf_path)
cache = open_cache(cache_dir, Inputs(), None)
while time.time() < float(start_at):
    time.sleep(0.001)
scan = scan_module.scan_dataset(ddf, "drop", cache=cache)
print(sum(len(s.boxes) for s in scan.splits["train"]))
"""


def test_two_runs_racing_on_new_data_parse_each_label_file_once(tmp_path: Path) -> None:
    labels = {f"f{i:03d}": f"{i % 2} 0.5 0.5 0.1 0.1\n" for i in range(40)}
    make_folder_pair(tmp_path / "set", labels, hw=(16, 16))
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a, b]\ndataset_paths: {{x: {PAIR}}}\n")
    log = tmp_path / "parsed.txt"
    start_at = str(time.time() + 3)  # both processes imported and waiting by then
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path), str(tmp_path / "cache"), str(log), start_at],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    assert outputs[0] == outputs[1] != "0"  # both found every box
    parsed = log.read_text().split()
    assert sorted(parsed) == sorted(f"{name}.txt" for name in labels)  # each once, in all


def test_stale_temporary_files_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    folder = cache_in(tmp_path / "cache").folder
    folder.mkdir(parents=True)
    old, young = folder / ".abc.123.partial.npz", folder / ".abc.456.partial.npz"
    for file in (old, young):
        file.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cache_in(tmp_path / "cache")
    assert not old.exists() and young.exists()


def test_the_cache_folder_comes_from_the_option_then_the_environment_then_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    given = open_cache(str(tmp_path / "given"), Inputs(), tmp_path / "default")
    from_env = open_cache(None, Inputs(), tmp_path / "default")
    monkeypatch.delenv(CACHE_ENV)
    default = open_cache(None, Inputs(), tmp_path / "default")
    assert open_cache(None, Inputs(), None) is None
    folders = [c.folder.parent for c in (given, from_env, default) if c is not None]
    assert folders == [tmp_path / "given", tmp_path / "env", tmp_path / "default"]
    assert not any(f.exists() for f in folders)  # made when the first shard is written


def test_a_cache_folder_that_cannot_be_used_is_refused_before_any_work(
    ddf: DatasetDefinition, tmp_path: Path, read_only: Path
) -> None:
    inputs = ddf.inputs()
    (tmp_path / "a-file").write_text("x")
    cases = {
        tmp_path / "set" / "images" / "cache": "a folder this command reads data from",
        tmp_path / "a-file": "is a file, not a folder",
        read_only / "cache": "cannot write here",
    }
    for folder, reason in cases.items():
        with pytest.raises(UserError, match=reason) as refused:
            open_cache(str(folder), inputs, None)
        assert "--cache-dir" in str(refused.value)
    assert sorted(p.name for p in (tmp_path / "set" / "images").iterdir()) == [
        f"{stem}.png" for stem in sorted(LABELS)
    ]


def test_yogo_check_reads_and_fills_the_index_a_run_uses(
    ddf: DatasetDefinition, parsed: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`yogo check --cache-dir` (or the variable) warms the index; without either it uses the
    default one of `yogo train` when there is one here, and makes none itself."""
    from yogo.config import CheckConfig
    from yogo.dataset_check import check

    monkeypatch.chdir(tmp_path)
    check(CheckConfig(ddf=str(ddf.path)))
    assert not (tmp_path / "trained_models").exists()
    check(CheckConfig(ddf=str(ddf.path), cache_dir=str(tmp_path / "trained_models/.yogo-cache")))
    parsed.clear()
    report = check(CheckConfig(ddf=str(ddf.path)))  # the default folder, now that it exists
    assert parsed == [] and report["trainable"] is False  # the bad rows are remembered


@pytest.mark.parametrize("path", ["/a/b.txt", "b.txt", "/b.txt", "a/b/c.txt", "./x.txt"])
def test_folder_of_is_dirname(path: str) -> None:
    assert scan_module.folder_of(Path(path)) == os.path.dirname(str(Path(path)))


@pytest.mark.slow
def test_yogo_test_reads_the_index_named_by_the_variable(
    trained_run, tmp_path: Path, parsed: list[Path], monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    model = trained_run.run / "best.pth"
    assert run_cli("test", model, trained_run.ddf).code == 0
    assert parsed  # the first reads every label file and fills the index
    parsed.clear()
    assert run_cli("test", model, trained_run.ddf).code == 0
    assert parsed == []


def test_the_bit_depth_and_planes_of_each_frame_are_indexed(
    tmp_path: Path, parsed: list[Path]
) -> None:
    """A run's start checks them on every training frame (--channels, 16-bit models): from the
    index, without opening a frame."""
    make_folder_pair(tmp_path / "set", {"a": "0 0.5 0.5 0.1 0.1\n"}, images=[])
    pages = [Image.fromarray(np.full((16, 20), v, np.uint16)) for v in (300, 40000)]
    pages[0].save(tmp_path / "set" / "images" / "a.tif", save_all=True, append_images=pages[1:])
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a]\ndataset_paths: {{x: {PAIR}}}\n")
    ddf = DatasetDefinition.from_yaml(path)
    index = cache_in(tmp_path / "cache")
    first = scan_dataset(ddf, cache=index)
    parsed.clear()
    again = scan_dataset(ddf, cache=index)
    (sample,) = again.splits["train"]
    assert parsed == [] and same(again, first) and (sample.bit_depth, sample.planes) == (16, 2)
