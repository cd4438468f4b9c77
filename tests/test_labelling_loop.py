"""The labelling loop end to end (docs/labelling-loop.md): frames off the microscope as a zarr
array -> pseudo-labels by a trained model -> pre-training on them as they are -> Label Studio
tasks -> Label Studio's YOLO export of the corrected labels -> fine-tuning -> test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yogo.data.synth import write_dataset
from yogo.deploy.labelstudio import read_predictions

zarr = pytest.importorskip("zarr")

TRAIN = ["--epochs", "2", "-bs", "4", "--num-workers", "0", "--no-wandb"]


def predictions(folder: Path) -> dict[str, list[dict]]:
    document = json.loads((folder / "predictions.json").read_text())
    return {record["image"]: record["detections"] for record in document["images"]}


@pytest.mark.slow
def test_the_labelling_loop(trained_run, tmp_path: Path, run_cli) -> None:
    model = trained_run.run / "best.pth"
    class_names = ["healthy", "ring", "trophozoite"]
    # New, unlabelled frames from the scope: a (H, W, N) uint8 array, as YOGO 1.0.1 read them,
    # and the same frames as PNG files.
    new = write_dataset(tmp_path / "new", 20, (96, 128), seed=9).parent
    pngs = sorted((new / "images").glob("*.png"))
    frames = np.stack([np.asarray(Image.open(p)) for p in pngs], axis=-1)
    scope = zarr.create_array(
        str(tmp_path / "scope.zarr"), shape=frames.shape, chunks=(96, 128, 1), dtype="uint8"
    )
    scope[...] = frames

    # 1. Pseudo-labels from the zarr store; the same predictions as from the PNG files.
    tasks = tmp_path / "tasks.json"
    from_zarr = run_cli(
        "infer", model, "--path-to-zarr", tmp_path / "scope.zarr", "--output-dir",
        tmp_path / "pseudo", "--save-preds", "--label-studio", tasks,
        "--label-studio-url-prefix", "/data/local-files/?d=pseudo/images",
    )  # fmt: skip
    assert from_zarr.code == 0, from_zarr.err
    assert "pre-train on these labels: yogo train" in from_zarr.out
    from_png = run_cli(
        "infer", model, "--path-to-images", new / "images", "--output-dir", tmp_path / "png"
    )
    assert from_png.code == 0, from_png.err
    by_zarr, by_png = predictions(tmp_path / "pseudo"), predictions(tmp_path / "png")
    assert list(by_zarr) == [f"scope.zarr/{i:02d}" for i in range(20)]
    assert list(by_png) == [p.name for p in pngs]
    assert list(by_zarr.values()) == list(by_png.values())
    found = sum(len(d) for d in by_zarr.values())
    assert found > 100  # the model finds the cells: the rest of the loop has labels to use

    # 2. The pseudo-labels pre-train as they are (6 columns: class xc yc w h confidence).
    rows = (tmp_path / "pseudo" / "labels" / "scope" / "00.txt").read_text().splitlines()
    assert len(rows[0].split()) == 6
    # the confidence is the objectness --obj-thresh kept each row by, not the score
    objectness = [d["objectness"] for d in by_zarr["scope.zarr/00"]]
    assert [float(row.split()[5]) for row in rows] == pytest.approx(objectness, abs=1e-6)
    checked = run_cli("check", tmp_path / "pseudo" / "ddf.yml", "--min-label-confidence", "0.5")
    assert checked.code == 0 and "machine-labelled rows" in checked.out, checked.out
    pre = run_cli(
        "train", tmp_path / "pseudo" / "ddf.yml", *TRAIN, "--min-label-confidence", "0.5",
        "--output-dir", tmp_path / "runs", "--name", "pre",
    )  # fmt: skip
    assert pre.code == 0, pre.err

    # 3. Label Studio tasks: yogo's reader recovers exactly the predictions, and every image
    # URL points at a frame written beside the labels.
    read = read_predictions(tasks)
    assert list(read) == list(by_zarr)
    for name, detections in by_zarr.items():
        assert len(read[name]) == len(detections)
        for (label, *xyxy, score), d in zip(read[name], detections, strict=True):
            assert label == d["class_name"]
            np.testing.assert_allclose(xyxy, d["xyxy"], atol=1e-6)  # JSON keeps 6 decimals
            assert score == pytest.approx(d["confidence"], abs=1e-6)
    task = json.loads(tasks.read_text())[3]
    assert task["data"]["image"] == "/data/local-files/?d=pseudo/images/scope/03.png"
    assert (tmp_path / "pseudo" / "images" / "scope" / "03.png").is_file()
    result = task["predictions"][0]["result"][0]
    assert result["type"] == "rectanglelabels" and result["value"]["rectanglelabels"][0] in (
        class_names
    )

    # 4. People correct the boxes; Label Studio's YOLO export (ids in its own order, with
    # notes.json and classes.txt) trains as it is: here the corrections are the true labels.
    export = tmp_path / "ls-export"
    (export / "images").mkdir(parents=True)
    (export / "labels").mkdir()
    by_label_studio = sorted(class_names)  # Label Studio numbers classes its own way
    notes = {"categories": [{"id": i, "name": n} for i, n in enumerate(by_label_studio)]}
    (export / "notes.json").write_text(json.dumps(notes))
    (export / "classes.txt").write_text("\n".join(by_label_studio) + "\n")
    for png in pngs:
        stem = f"3f2a91c0-{png.stem}"  # Label Studio prefixes a hash
        shutil.copy(png, export / "images" / f"{stem}.png")
        rows = (new / "labels" / f"{png.stem}.txt").read_text().splitlines()
        relabelled = [
            " ".join([str(by_label_studio.index(class_names[int(r.split()[0])])), *r.split()[1:]])
            for r in rows
        ]
        (export / "labels" / f"{stem}.txt").write_text("\n".join(relabelled) + "\n")
    (export / "ddf.yml").write_text(
        "class_names: [healthy, ring, trophozoite]\n"
        "dataset_split_fractions: {train: 0.6, val: 0.2, test: 0.2}\n"
        "dataset_paths:\n  corrected: {image_path: images, label_path: labels}\n"
    )

    check = run_cli("check", export / "ddf.yml", "--json", "-")
    per_split = json.loads(check.out)["splits"].values()
    truth = np.concatenate([np.loadtxt(p, ndmin=2)[:, 0] for p in (new / "labels").glob("*.txt")])
    for i, name in enumerate(class_names):  # notes.json mapped every id back to its name
        assert sum(s["objects_per_class"][name] for s in per_split) == (truth == i).sum()

    # 5. Fine-tune from the pre-trained checkpoint on the corrected labels, then test.
    fine = run_cli(
        "train", export / "ddf.yml", *TRAIN, "--from-pretrained", tmp_path / "runs" / "pre" /
        "last.pth", "--output-dir", tmp_path / "runs", "--name", "fine",
    )  # fmt: skip
    assert fine.code == 0, fine.err
    report = tmp_path / "test.json"
    tested = run_cli(
        "test", tmp_path / "runs" / "fine" / "last.pth", export / "ddf.yml", "--json", report
    )
    assert tested.code == 0, tested.err
    summary = json.loads(report.read_text())
    assert summary["num_images"] == 4 and summary["num_objects"] > 0
    counted = sum(c["num_true"] for c in summary["per_class"].values())
    assert counted == summary["num_objects"]
