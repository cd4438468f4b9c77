"""Every flag of YOGO 1.0.1's train, test, export and infer is accepted with its meaning:
sbatch lines written for YOGO keep working. Each command runs once for real with
YOGO's flags, and what each flag means is checked in what the command wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from ruamel.yaml import YAML

from yogo.cli import app

# YOGO 1.0.1's argparse flags (yogo/utils/argparsers.py), booleans with both forms.
YOGO_FLAGS = {
    "train": [
        "--from-pretrained", "--dataset-split-override", "-bs", "--batch-size", "-lr",
        "--learning-rate", "--lr", "--lr-decay-factor", "--label-smoothing", "-wd",
        "--weight-decay", "--epochs", "--no-obj-weight", "--iou-weight", "--classify-weight",
        "--normalize-images", "--no-normalize-images", "--image-hw", "--rgb-images",
        "--no-rgb-images", "--model", "--half", "--no-half", "--device", "--note", "--name",
        "--tags", "--wandb-entity", "--wandb-project",
    ],
    "test": [
        "--wandb", "--no-wandb", "--wandb-entity", "--wandb-project", "--wandb-resume-id",
        "--dump-to-disk", "--no-dump-to-disk", "--include-mAP", "--no-include-mAP",
        "--include-background", "--no-include-background", "--note", "--tags",
    ],
    "export": ["--crop-height", "--output-filename", "--simplify", "--no-simplify"],
    "infer": [
        "--path-to-images", "--path-to-image", "--path-to-zarr", "--draw-boxes",
        "--no-draw-boxes", "--save-preds", "--no-save-preds", "--save-npy", "--no-save-npy",
        "--count", "--no-count", "--output-dir", "--class-names", "--batch-size", "--device",
        "--half", "--no-half", "--crop-height", "--output-img-filetype", "--obj-thresh",
        "--iou-thresh", "--min-class-confidence-threshold", "--heatmap-mask-path", "--use-tqdm",
        "--no-use-tqdm",
    ],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(YOGO_FLAGS))
def test_every_yogo_flag_is_an_option(command: str) -> None:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    options = {
        name for param in click_command.params for name in (*param.opts, *param.secondary_opts)
    }
    assert sorted(set(YOGO_FLAGS[command]) - options) == []


def _config(run: Path) -> dict:
    return dict(YAML(typ="safe").load((run / "config.yaml").read_text())["config"])


@pytest.mark.slow
def test_a_yogo_train_line(trained_run, tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    line = [
        "train", trained_run.ddf, "--from-pretrained", trained_run.run / "best.pth",
        "--dataset-split-override", "0.6", "0.2", "0.2", "-bs", "4", "-lr", "0.002",
        "--lr-decay-factor", "5", "--label-smoothing", "0.02", "-wd", "0.01", "--epochs", "1",
        "--no-obj-weight", "0.4", "--iou-weight", "4", "--classify-weight", "2",
        "--normalize-images", "--image-hw", "96", "128", "--no-rgb-images", "--half",
        "--device", "cpu", "--note", "from sbatch", "--name", "yogo-line", "--tags", "a", "b",
        "--wandb-entity", "lab", "--wandb-project", "cells", "--output-dir", tmp_path,
        "--num-workers", "0",
    ]  # fmt: skip
    result = run_cli(*line)
    assert result.code == 0, result.err
    config = _config(tmp_path / "yogo-line")
    assert config["from_pretrained"] == str(trained_run.run / "best.pth")
    assert config["dataset_split_override"] == [0.6, 0.2, 0.2]
    expected = {
        "batch_size": 4,
        "learning_rate": 0.002,
        "lr_decay_factor": 5.0,
        "label_smoothing": 0.02,
        "weight_decay": 0.01,
        "epochs": 1,
        "no_obj_weight": 0.4,
        "iou_weight": 4.0,
        "classify_weight": 2.0,
        "precision": "fp16",  # --half
        "device": "cpu",
        "note": "from sbatch",
        "tags": ["a", "b"],
        "wandb_entity": "lab",
        "wandb_project": "cells",
    }
    assert {k: config[k] for k in expected} == expected
    assert list((tmp_path / "yogo-line" / "wandb").glob("offline-run-*"))
    # --model picks the architecture of a new run (with --from-pretrained it is the
    # checkpoint's, and a message says the flag is ignored).
    fresh = [
        "train", trained_run.ddf, "--model", "base_model", "--epochs", "1", "-bs", "4",
        "--no-wandb", "--output-dir", tmp_path, "--name", "fresh", "--num-workers", "0",
    ]  # fmt: skip
    assert run_cli(*fresh).code == 0
    assert _config(tmp_path / "fresh")["model"] == "base_model"


@pytest.mark.slow
def test_a_yogo_test_line(trained_run, tmp_path: Path, run_cli, monkeypatch) -> None:
    """--wandb-resume-id appends the results to that (training) run; --dump-to-disk writes
    test_metrics.json where YOGO wrote test_metrics.pkl (the working directory)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(trained_run.run, run, ignore=shutil.ignore_patterns("wandb"))
    line = [
        "test", run / "best.pth", trained_run.ddf, "--wandb", "--wandb-entity", "lab",
        "--wandb-project", "cells", "--wandb-resume-id", "trainrun1", "--dump-to-disk",
        "--include-mAP", "--no-include-background", "--note", "after fine-tuning", "--tags",
        "test", "v2",
    ]  # fmt: skip
    result = run_cli(*line)
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "test_metrics.json").read_text())
    assert report["mAP50"] is not None and report["note"] == "after fine-tuning"
    assert report["tags"] == ["test", "v2"]
    assert "background" not in result.out  # --no-include-background: the printed matrix
    assert len(report["confusion_matrix"]) == 4  # the JSON keeps the background row
    (logged,) = (run / "wandb").glob("offline-run-*-trainrun1/run-*.wandb")
    data = logged.read_bytes()
    assert b"test/mAP50" in data and b"test/ring/AP50" in data and b"after fine-tuning" in data
    again = run_cli(*line)  # test_metrics.json exists now
    assert again.code == 2 and "--force" in again.err


@pytest.mark.slow
def test_a_yogo_export_line(trained_run, tmp_path: Path, run_cli) -> None:
    import onnx

    checkpoint = tmp_path / "best.pth"
    shutil.copy(trained_run.run / "best.pth", checkpoint)
    out = tmp_path / "band.onnx"
    line = ["export", checkpoint, "--crop-height", "0.5", "--output-filename", out, "--simplify"]
    result = run_cli(*line)
    assert result.code == 0, result.err
    assert "graph nodes" in result.out
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["crop_height"]) == 0.5
    plain = run_cli("export", checkpoint, "--output-filename", tmp_path / "p.onnx", "--no-simplify")
    assert plain.code == 0 and "graph nodes" not in plain.out


@pytest.mark.slow
def test_a_yogo_infer_line(trained_run, tmp_path: Path, run_cli) -> None:
    images = trained_run.ddf.parent / "images"
    out = tmp_path / "out"
    line = [
        "infer", trained_run.run / "best.pth", "--path-to-image", images, "--draw-boxes",
        "--save-preds", "--save-npy", "--count", "--output-dir", out, "--class-names", "A", "B",
        "C", "--batch-size", "8", "--device", "cpu", "--crop-height", "1", "--output-img-filetype",
        ".tif", "--obj-thresh", "0.4", "--iou-thresh", "0.5", "--min-class-confidence-threshold",
        "0.1", "--heatmap-mask-path", tmp_path / "mask.npy", "--no-use-tqdm", "--no-half",
    ]  # fmt: skip
    np.save(tmp_path / "mask.npy", np.zeros((96, 128), bool))  # frame-sized, nothing masked
    result = run_cli(*line)
    assert result.code == 0, result.err
    assert "heatmap mask: 0 grid cell(s)" in result.err  # applied: an empty mask
    frames = sorted(images.glob("*.png"))
    assert len(list((out / "boxes").glob("*.tif"))) == len(frames)
    assert len(list((out / "labels").glob("*.txt"))) == len(frames)
    document = json.loads((out / "predictions.json").read_text())
    assert document["class_names"] == ["A", "B", "C"]
    detections = [d for image in document["images"] for d in image["detections"]]
    assert detections and min(d["objectness"] for d in detections) >= 0.4
    assert min(d["class_probability"] for d in detections) >= 0.1
    array = np.load(out / "images.npy")  # named after the folder, as YOGO did
    assert array.shape == (8 + 3, len(detections))
    assert set(array[0].astype(int)) <= set(range(len(frames)))
    assert (array[5] >= 0.4).all() and (array[7] >= 0.1).all()
    np.testing.assert_allclose(array[8:].max(axis=0), array[7], rtol=1e-6)
    assert result.out.splitlines()[0] == "counts at objectness >= 0.4"
    assert result.out.splitlines()[2].split()[0] == "A"  # the names given, in the counts too
