"""`yogo check`: the whole-dataset scan (data/scan.py) and its report (dataset_check.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_pair, simple_ddf, write_image, write_yaml
from PIL import Image

from yogo import DatasetDefinition
from yogo.data.scan import require_trainable, scan_dataset
from yogo.dataset_check import check_report, format_report
from yogo.errors import UserError
from yogo.model import grid
from yogo.model.grid import grid_collisions, grid_losses, require_usable_image_hw

PAIR = "{image_path: set/images, label_path: set/labels}"


def dataset(tmp_path: Path, labels: dict[str, str], **kwargs: object) -> DatasetDefinition:
    make_folder_pair(tmp_path / "set", labels, **kwargs)
    path = write_yaml(tmp_path / "d.yml", f"class_names: [a, b]\ndataset_paths: {{x: {PAIR}}}\n")
    return DatasetDefinition.from_yaml(path)


GOOD = {"g0": "0 0.25 0.25 0.2 0.1\n1 0.75 0.75 0.4 0.3\n", "g1": "", "g2": "1 0.5 0.5 0.1 0.1"}


def test_clean_dataset(tmp_path: Path) -> None:
    ddf = dataset(tmp_path, GOOD, hw=(32, 40))
    scan = scan_dataset(ddf)
    require_trainable(scan)
    assert scan.problems == ()
    train = scan.splits["train"]
    assert [s.label.stem for s in train] == ["g0", "g1", "g2"]
    assert [len(s.boxes) for s in train] == [2, 0, 1]
    assert (train[0].height, train[0].width, train[0].channels) == (32, 40, 1)
    report = check_report(ddf, scan)
    assert report["trainable"] is True
    assert report["splits"]["train"] == {
        "images": 3,
        "objects": 3,
        "empty_images": 1,
        "objects_per_class": {"a": 1, "b": 2},
    }
    expected_anchor = {"w": (0.2 + 0.4 + 0.1) / 3, "h": (0.1 + 0.3 + 0.1) / 3}
    assert report["anchor"] == pytest.approx(expected_anchor, abs=1e-6)
    assert report["object_size_px"]["median_w"] == pytest.approx(8.0)  # widths 8, 16, 4 px
    assert report["object_size_px"]["per_class"]["b"]["median_h"] == pytest.approx(6.4)
    assert report["grid"]["image_hw"] == [32, 40] and report["grid"]["cells"] == [4, 5]
    text = format_report(report)
    assert [line.split() for line in text.splitlines()[1:3]] == [
        ["split", "images", "objects", "empty", "a", "b"],
        ["train", "3", "3", "1", "1", "2"],
    ]
    assert "trainable: yes" in text


BROKEN = {
    "ok": "0 0.5 0.5 0.1 0.1",
    "bad_rows": "0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n0 0.99 0.5 0.1 0.1\n",
    "no_image": "0 0.5 0.5 0.1 0.1\nx y\n",
}


SPLIT_KINDS = {"missing-class", "empty-split"}  # about the splits, not about a file


def file_problems(report: dict) -> dict[str, int]:
    """`problem_counts` without the findings about whole splits."""
    return {k: n for k, n in report["problem_counts"].items() if k not in SPLIT_KINDS}


def broken_dataset(tmp_path: Path) -> DatasetDefinition:
    ddf = dataset(tmp_path, BROKEN, images=["ok", "bad_rows", "not_an_image"])
    (tmp_path / "set/labels/not_an_image.txt").write_text("")
    (tmp_path / "set/images/not_an_image.png").write_bytes(b"")
    return DatasetDefinition.from_yaml(ddf.path)


def test_error_policy_lists_every_problem_with_file_and_line(tmp_path: Path) -> None:
    scan = scan_dataset(broken_dataset(tmp_path), "error")
    with pytest.raises(UserError) as info:
        require_trainable(scan)
    message = str(info.value)
    assert "5 problem(s)" in message
    for expected in (
        "set/labels/bad_rows.txt:2: class 5 out of range 0..1",
        "set/labels/bad_rows.txt:3: box extends 0.0400 outside the image",
        "set/labels/no_image.txt: no image named no_image.*",
        "set/labels/no_image.txt:2: expected 5 values",
        "set/images/not_an_image.png: file is empty",
    ):
        assert expected in message
    assert "--bad-labels drop" in message
    report = check_report(DatasetDefinition.from_yaml(tmp_path / "d.yml"), scan)
    assert report["trainable"] is False
    assert file_problems(report) == {
        "class": 1,
        "outside": 1,
        "no-image": 1,
        "columns": 1,
        "unreadable-image": 1,
    }


def test_drop_policy_drops_rows_and_samples(tmp_path: Path) -> None:
    ddf = broken_dataset(tmp_path)
    scan = scan_dataset(ddf, "drop")
    require_trainable(scan)
    kept = {s.label.stem: s.lines.tolist() for s in scan.splits["train"]}
    assert kept == {"ok": [1], "bad_rows": [1]}
    actions = {(p.path.name, p.line): p.action for p in scan.problems}
    assert actions[("bad_rows.txt", 2)] == "dropped row"
    assert actions[("no_image.txt", None)] == "dropped sample"
    assert actions[("no_image.txt", 2)] == "dropped sample"
    assert actions[("not_an_image.png", None)] == "dropped sample"
    report = check_report(ddf, scan)
    assert report["trainable"] is True
    assert "(dropped sample)" in format_report(report)


def test_clip_policy_repairs_boxes(tmp_path: Path) -> None:
    scan = scan_dataset(broken_dataset(tmp_path), "clip")
    kept = {s.label.stem: s.lines.tolist() for s in scan.splits["train"]}
    assert kept == {"ok": [1], "bad_rows": [1, 3]}


def test_inputs_are_never_modified(tmp_path: Path) -> None:
    ddf = broken_dataset(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for policy in ("error", "drop", "clip"):
        check_report(ddf, scan_dataset(ddf, policy, decode=True))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_decode_finds_truncated_images(tmp_path: Path) -> None:
    ddf = dataset(tmp_path, {"a": "", "b": ""}, hw=(64, 64))
    image = tmp_path / "set/images/b.png"
    image.write_bytes(image.read_bytes()[:200])
    assert scan_dataset(ddf).problems == ()  # the header alone looks fine
    scan = scan_dataset(ddf, decode=True)
    assert [(p.kind, p.path.name) for p in scan.problems] == [("corrupt-image", "b.png")]
    dropped = scan_dataset(ddf, "drop", decode=True)
    assert [s.label.stem for s in dropped.splits["train"]] == ["a"]


def test_grid_collisions_are_warnings_with_lines(tmp_path: Path) -> None:
    labels = {
        "c": "0 0.51 0.51 0.1 0.1\n0 0.2 0.2 0.1 0.1\n1 0.52 0.53 0.1 0.1\n0 0.53 0.52 0.1 0.1\n",
        "d": "0 0.1 0.1 0.1 0.1\n0 0.9 0.9 0.1 0.1\n",
    }
    ddf = dataset(tmp_path, labels, hw=(64, 64))
    scan = scan_dataset(ddf)
    report = check_report(ddf, scan)
    assert report["trainable"] is True
    collisions = [p for p in report["problems"] if p["kind"] == "collision"]
    assert len(collisions) == 1 and collisions[0]["severity"] == "warning"
    assert (
        "3 objects (lines 1, 3, 4) share grid cell row 4, column 4 of 8x8"
        in collisions[0]["message"]
    )
    assert report["grid"]["objects_lost"] == 2 and report["grid"]["images_with_collisions"] == 1
    coarse = check_report(ddf, scan, image_hw=(8, 8))  # one cell: everything collides
    assert coarse["grid"]["cells"] == [1, 1] and coarse["grid"]["objects_lost"] == 4


def test_check_names_the_object_training_keeps(tmp_path: Path) -> None:
    """`yogo check` and the training targets apply one rule (the first listed object of a
    cell stays): the line check names is the box `build_targets` puts in that cell."""
    import torch

    from yogo.model.boxes import build_targets

    text = "0 0.2 0.2 0.1 0.1\n1 0.53 0.52 0.1 0.1\n0 0.51 0.51 0.2 0.2\n"
    ddf = dataset(tmp_path, {"c": text}, hw=(64, 64))
    scan = scan_dataset(ddf)
    (collision,) = [p for p in check_report(ddf, scan)["problems"] if p["kind"] == "collision"]
    assert "lines 2, 3" in collision["message"] and "training keeps line 2" in collision["message"]
    boxes = torch.from_numpy(scan.splits["train"][0].boxes)
    labels = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    targets = build_targets(labels, 1, (8, 8))
    assert targets[0, 4, 4, 5] == 1 and torch.allclose(targets[0, 4, 4, 1:5], boxes[1, 1:])


def test_mixed_sizes_channels_and_unlabelled_images(tmp_path: Path) -> None:
    ddf = dataset(tmp_path, {"a": "", "b": ""}, images=["a", "b", "spare"], hw=(32, 40))
    write_image(tmp_path / "set/images/b.png", (48, 40), mode="RGB")
    ddf = DatasetDefinition.from_yaml(ddf.path)
    report = check_report(ddf, scan_dataset(ddf))
    assert report["trainable"] is True
    assert report["grid"]["image_hw"] == [32, 40]  # the first training image
    assert report["channels"] == {"1": 1, "3": 1}
    kinds = {p["kind"]: p["message"] for p in report["problems"]}
    assert "2 image sizes: " in kinds["mixed-sizes"]
    assert kinds["unlabelled-images"] == "1 image(s) without a label file (not used)"


def test_empty_train_split_is_not_trainable(tmp_path: Path) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    path = write_yaml(
        tmp_path / "d.yml",
        "class_names: [a]\ndataset_split_fractions: {train: 0, val: 1}\n"
        f"dataset_paths: {{x: {PAIR}}}\n",
    )
    ddf = DatasetDefinition.from_yaml(path)
    scan = scan_dataset(ddf)
    with pytest.raises(UserError, match="train split is empty"):
        require_trainable(scan)
    report = check_report(ddf, scan)
    assert report["trainable"] is False and report["anchor"] is None
    assert "the train split is empty" in format_report(report)


def test_boxes_are_float32_and_inside_the_image(tmp_path: Path) -> None:
    ddf = dataset(tmp_path, {"a": "0 0.9995 0.5 0.002 0.1"})
    boxes = scan_dataset(ddf).splits["train"][0].boxes
    assert boxes.dtype == np.float32 and boxes[0, 1] + boxes[0, 3] / 2 <= 1.0


def test_a_class_missing_from_class_names_is_one_diagnosis_never_drop_advice(
    tmp_path: Path, run_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = {f"s{i:02d}": "0 0.2 0.2 0.1 0.1\n2 0.7 0.7 0.1 0.1\n" for i in range(25)}
    ddf = dataset(tmp_path, labels)
    result = run_cli("check", ddf.path, "--json", tmp_path / "r.json")
    assert result.code == 2
    assert "class 2 out of range 0..1: 25 rows in 25 label file(s), first " in result.out
    assert "the labels use classes that class_names does not have" in result.out
    assert "--bad-labels drop" not in result.out
    assert result.out.count("error: class 2 out of range") == 10
    assert "... and 15 more like this (yogo check --json lists all)" in result.out
    report = json.loads((tmp_path / "r.json").read_text())
    assert file_problems(report) == {"class": 25}
    assert len([p for p in report["problems"] if p["kind"] == "class"]) == 25
    with pytest.raises(UserError) as info:
        require_trainable(scan_dataset(ddf))
    message = str(info.value)
    assert "class 2 out of range 0..1: 25 rows in 25 label file(s)" in message
    assert "--bad-labels drop" not in message and "add the missing class names" in message
    assert message.count("class 2 out of range") == 11  # the diagnosis and the first 10 rows
    # An explicit drop trains without class 2 and says so.
    drop = run_cli("check", ddf.path, "--bad-labels", "drop")
    assert drop.code == 0 and "(--bad-labels drop drops these rows" in drop.out
    require_trainable(scan_dataset(ddf, "drop"))  # as `yogo train` does, after the CLI's set-up
    warning = "warning: --bad-labels drop drops every row of a class that class_names"
    assert warning in capsys.readouterr().err


def test_a_policy_that_leaves_no_objects_is_not_trainable(tmp_path: Path, run_cli) -> None:
    ddf = dataset(tmp_path, {"a": "2 0.5 0.5 0.1 0.1\n", "b": "0 0.5 0.5 0 0.1\n"})
    result = run_cli("check", ddf.path, "--bad-labels", "drop")
    assert result.code == 2
    assert "trainable: no: no objects are left in the train split after --bad-labels drop" in (
        result.out
    )
    with pytest.raises(UserError, match="no objects are left in the train split"):
        require_trainable(scan_dataset(ddf, "drop"))
    # A dataset that has no objects to begin with is left to training to judge.
    empty = dataset(tmp_path / "empty", {"a": ""})
    require_trainable(scan_dataset(empty, "drop"))


def test_many_problems_print_a_few_per_kind_and_json_keeps_all(tmp_path: Path, run_cli) -> None:
    ddf = dataset(tmp_path, {"big": "0 0.5 0.5 0.1 0.1\n" + "0 0.5 0.5 0 0.1\n" * 500})
    result = run_cli("check", ddf.path, "--bad-labels", "drop", "--json", tmp_path / "r.json")
    assert result.code == 0
    assert result.out.count("error: width and height must be > 0") == 10
    assert "... and 490 more like this (yogo check --json lists all)" in result.out
    assert len(result.out.splitlines()) < 40  # not 500 (a line's length follows the tmp path)
    report = json.loads((tmp_path / "r.json").read_text())
    assert file_problems(report) == {"size": 500}
    with pytest.raises(UserError) as info:
        require_trainable(scan_dataset(ddf))
    assert str(info.value).count("\n") < 20 and "490 more like this" in str(info.value)


def test_missing_image_names_the_folder_looked_in(tmp_path: Path) -> None:
    ddf = dataset(tmp_path, {"a": "", "b": ""}, images=["a"])
    (problem,) = scan_dataset(ddf).problems
    assert problem.message.endswith(
        f"no image named b.* (png, jpg, jpeg, tif, tiff, bmp) in {tmp_path}/set/images"
    )


def test_images_too_small_for_the_grid_are_not_trainable(tmp_path: Path, run_cli) -> None:
    ddf = dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.5", "b": ""}, hw=(4, 4))
    result = run_cli("check", ddf.path)
    assert result.code == 2
    assert "trainable: no: a model input of 4x4 px (H x W) is too small" in result.out
    assert "1x1 grid" in result.out and "at least 16 px" in result.out
    assert run_cli("check", ddf.path, "--image-hw", "16", "16").code == 0
    with pytest.raises(UserError, match="--image-hw H W with both at least 16"):
        require_usable_image_hw((15, 1000))
    require_usable_image_hw((16, 16))


def test_grid_collisions_losing_many_objects_of_a_class_are_named(tmp_path: Path) -> None:
    crowded = "".join(f"0 0.5{i} 0.5{i} 0.05 0.05\n" for i in range(10))  # one cell at 4x5
    spread = "1 0.1 0.1 0.1 0.1\n1 0.9 0.9 0.1 0.1\n"
    ddf = dataset(tmp_path, {"a": crowded + spread, "b": "0 0.1 0.9 0.1 0.1\n"})
    report = check_report(ddf, scan_dataset(ddf))
    assert report["trainable"] is True
    (loss,) = [p for p in report["problems"] if p["kind"] == "collision-loss"]
    assert loss["severity"] == "warning"
    assert "class 'a' loses 9 of its 11 objects (82%)" in loss["message"]
    assert "a larger --image-hw" in loss["message"]
    assert "class 'a' loses" in format_report(report)
    roomy = check_report(ddf, scan_dataset(ddf), image_hw=(2048, 2048))
    assert [p for p in roomy["problems"] if p["kind"] == "collision-loss"] == []


def test_yogo_test_suggests_only_splits_that_hold_samples(tmp_path: Path, run_cli) -> None:
    import dataclasses

    from conftest import model_config

    from yogo.model.checkpoint import checkpoint_payload, save_checkpoint
    from yogo.model.network import build_model

    config = dataclasses.replace(model_config("quarter_filters", 2), class_names=("a", "b"))
    save_checkpoint(tmp_path / "m.pth", checkpoint_payload(build_model(config)))
    make_folder_pair(tmp_path / "set", {f"s{i}": "" for i in range(4)})
    ddf = write_yaml(
        tmp_path / "d.yml",
        "class_names: [a, b]\ndataset_split_fractions: {train: 0.5, val: 0, test: 0.5}\n"
        f"dataset_paths: {{x: {PAIR}}}\n",
    )
    result = run_cli("test", tmp_path / "m.pth", ddf, "--split", "val")
    assert result.code == 2 and "the val split of the DDF is empty" in result.err
    assert "use --split test" in result.err and "--split val" not in result.err
    assert "give val a fraction in dataset_split_fractions" in result.err
    only_train = simple_ddf(tmp_path / "only_train", n=2)
    result = run_cli("test", tmp_path / "m.pth", only_train, "--split", "test")
    assert result.code == 2 and "--split" not in result.err
    assert "--dataset-split-override" in result.err


def test_multi_page_images_are_a_warning(tmp_path: Path) -> None:
    ddf = dataset(tmp_path, {"a": "", "b": ""}, suffix=".tif")
    pages = [Image.fromarray(np.full((32, 40), value, dtype=np.uint8)) for value in (1, 2)]
    pages[0].save(tmp_path / "set/images/b.tif", save_all=True, append_images=pages[1:])
    report = check_report(ddf, scan_dataset(ddf))
    assert report["trainable"] is True
    problems = [p for p in report["problems"] if p["kind"] not in SPLIT_KINDS]
    assert [(p["kind"], p["severity"], Path(p["path"]).name) for p in problems] == [
        ("multi-page-image", "warning", "b.tif")
    ]
    assert "only page 1 is used" in format_report(report)


MACHINE = {
    "m0": "0 0.25 0.25 0.2 0.1 0.95\n1 0.75 0.75 0.4 0.3 0.35\n",
    "m1": "1 0.5 0.5 0.1 0.1 0.62\n0 0.2 0.2 0.1 0.1\n",  # the second row a person's
    "m2": "",
}


def test_machine_labels_train_and_min_label_confidence_filters_them(tmp_path: Path) -> None:
    """Label files with a confidence column (`yogo infer --save-preds`) are valid; rows below
    --min-label-confidence are left out, rows without a confidence are always kept; `yogo
    check` shows the distribution and what the threshold leaves out."""
    ddf = dataset(tmp_path, MACHINE)
    every = scan_dataset(ddf)
    require_trainable(every)
    assert every.problems == () and every.below_confidence == 0
    assert [len(s.boxes) for s in every.splits["train"]] == [2, 2, 0]
    np.testing.assert_allclose(sorted(every.confidence), [0.35, 0.62, 0.95], atol=1e-6)
    sure = scan_dataset(ddf, min_confidence=0.6)
    assert sure.below_confidence == 1
    assert [s.lines.tolist() for s in sure.splits["train"]] == [[1], [1, 2], []]
    report = check_report(ddf, sure)
    stats = report["label_confidence"]
    assert stats["rows"] == 3 and stats["left_out"] == 1 and stats["median"] == 0.62
    assert stats["histogram"]["0.3-0.4"] == 1 and stats["histogram"]["0.9-1.0"] == 1
    assert report["splits"]["train"]["objects"] == 3
    text = format_report(report)
    assert "label confidence (3 machine-labelled rows)" in text
    assert "--min-label-confidence 0.6 leaves out 1 row(s)" in text
    hand = dataset(tmp_path / "hand", GOOD)
    assert check_report(hand, scan_dataset(hand))["label_confidence"] is None


def test_a_threshold_that_leaves_nothing_is_not_trainable(tmp_path: Path) -> None:
    ddf = dataset(tmp_path, {"m0": "0 0.5 0.5 0.2 0.2 0.3\n", "m1": "1 0.5 0.5 0.2 0.2 0.2\n"})
    scan = scan_dataset(ddf, min_confidence=0.5)
    with pytest.raises(UserError, match=r"after --min-label-confidence 0\.5") as e:
        require_trainable(scan)
    assert "lower --min-label-confidence" in str(e.value)
    report = check_report(ddf, scan)
    assert not report["trainable"] and "2 row(s) below it" in report["not_trainable_because"][0]


def test_thumbnails_that_cannot_be_pasted_are_listed(tmp_path: Path, run_cli) -> None:
    """`--copy-paste` with such thumbnails did nothing, and `yogo check` said nothing."""
    ddf = simple_ddf(tmp_path)  # frames of 32 x 40
    write_image(tmp_path / "thumbs" / "good.png", (8, 8))
    write_image(tmp_path / "thumbs" / "whole-frame.png", (32, 40))
    (tmp_path / "thumbs" / "empty.png").write_bytes(b"")
    (tmp_path / "none").mkdir()
    ddf.write_text(ddf.read_text() + "thumbnail_augmentation:\n  a: thumbs\n  b: [none]\n")
    result = run_cli("check", ddf)
    assert result.code == 0, result.err
    assert (
        "whole-frame.png: warning: not pasted: 32 x 40 px, not smaller than the 32 x 40"
        in result.out
    )
    assert "empty.png: warning: not pasted:" in result.out
    assert "none: warning: not pasted: no image files in the 'b' thumbnail folder" in result.out
    assert "good.png" not in result.out


def test_a_class_or_a_split_without_objects_is_named(tmp_path: Path, run_cli) -> None:
    """A DDF whose train split had no object of a class trained without a word."""
    result = run_cli("check", simple_ddf(tmp_path))  # every object is class a
    assert result.code == 0
    assert "warning: no object of class 'b' in the train split" in result.out
    assert "--from-pretrained" in result.out
    assert "warning: no val split: a run cannot pick its best epoch" in result.out


@pytest.mark.parametrize("block_cells", [1 << 22, 100])  # one block; several, some empty
def test_the_start_up_warning_counts_what_the_collision_list_counts(
    monkeypatch: pytest.MonkeyPatch, block_cells: int
) -> None:
    """`grid_losses` (a run's start-up warning) skips the list of shared cells, not a count."""
    monkeypatch.setattr(grid, "LOSS_BLOCK_CELLS", block_cells)
    rng = np.random.default_rng(0)
    boxes = [
        np.column_stack([rng.integers(0, 3, n), rng.random((n, 4))]).astype(np.float32)
        for n in rng.integers(0, 40, 50) * (rng.random(50) > 0.2)
    ]
    _, lost, total = grid_collisions(boxes, (6, 8), 3)
    assert lost.sum() > 0
    for got, expected in zip(grid_losses(boxes, (6, 8), 3), (lost, total), strict=True):
        np.testing.assert_array_equal(got, expected)
