"""`yogo infer` with .pth and exported .onnx models on real image files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import pycocotools_ap
from PIL import Image

from yogo.data.scan import scan_dataset
from yogo.ddf import DatasetDefinition

pytestmark = pytest.mark.slow  # every test runs a trained or exported model


@pytest.fixture(scope="module")
def models(trained_run, tmp_path_factory) -> dict[str, Path]:
    from yogo.config import ExportConfig
    from yogo.deploy.export import export_onnx

    folder = tmp_path_factory.mktemp("models")
    pth = folder / "best.pth"
    shutil.copy(trained_run.run / "best.pth", pth)
    return {"pth": pth, "onnx": export_onnx(ExportConfig(checkpoint=str(pth))).path}


@pytest.fixture(scope="module")
def test_split(trained_run, tmp_path_factory) -> tuple[Path, list]:
    """The test split's images in a folder of their own, and their samples."""
    folder = tmp_path_factory.mktemp("test-images")
    samples = scan_dataset(DatasetDefinition.from_yaml(trained_run.ddf)).splits["test"]
    for s in samples:
        shutil.copy(s.image, folder / s.image.name)
    return folder, list(samples)


def infer(run_cli, model: Path, images: Path, out: Path, *flags: str):
    """`yogo infer MODEL --path-to-images IMAGES --output-dir OUT FLAGS...`"""
    return run_cli("infer", model, "--path-to-images", images, "--output-dir", out, *flags)


def predictions(folder: Path) -> dict[str, list[dict]]:
    document = json.loads((folder / "predictions.json").read_text())
    return {record["image"]: record["detections"] for record in document["images"]}


def test_pth_and_onnx_give_the_same_detections(run_cli, models, test_split, tmp_path) -> None:
    images, _ = test_split
    results = {}
    for kind, model in models.items():
        out = tmp_path / kind
        result = infer(run_cli, model, images, out, "--obj-thresh", "0.2", "--batch-size", "4")
        assert result.code == 0, result.err
        results[kind] = predictions(out)
    assert results["pth"].keys() == results["onnx"].keys()
    total = 0
    for image, found in results["pth"].items():
        other = results["onnx"][image]
        assert len(found) == len(other), image
        for a, b in zip(found, other, strict=True):
            assert a["class"] == b["class"]
            np.testing.assert_allclose(a["xyxy"], b["xyxy"], atol=1e-3)
        total += len(found)
    assert total > 20  # the model does detect things


def map50_by_pycocotools(samples, labels_dir: Path) -> float:
    """mAP@0.5 of the saved predictions (`class xc yc w h confidence`) against the labels."""
    detections, truths = [], []
    for s in samples:
        found = np.loadtxt(labels_dir / f"{s.image.stem}.txt", ndmin=2).reshape(-1, 6)
        cls, xc, yc, w, h, score = found.T
        rows = [xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2, score, np.ones_like(score), cls]
        detections.append(torch.from_numpy(np.stack(rows, axis=1)))
        c, xc, yc, w, h = s.boxes.astype(np.float64).T
        truths.append(
            torch.from_numpy(np.stack([c, xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1))
        )
    return float(np.nanmean(pycocotools_ap(detections, truths)[0]))  # IoU 0.5, per class


def test_map_from_saved_predictions_equals_yogo_test(
    run_cli, models, test_split, trained_run, tmp_path
) -> None:
    images, samples = test_split
    result = infer(run_cli, models["pth"], images, tmp_path, "--save-preds", "--obj-thresh", "0.01")
    assert result.code == 0, result.err
    ours = map50_by_pycocotools(samples, tmp_path / "labels")
    tested = run_cli("test", models["pth"], trained_run.ddf, "--json", tmp_path / "test.json")
    assert tested.code == 0, tested.err
    expected = json.loads((tmp_path / "test.json").read_text())["mAP50"]
    assert ours == pytest.approx(expected, abs=0.02)
    assert expected > 0.1


def test_every_output_and_every_threshold(run_cli, models, test_split, tmp_path) -> None:
    images, samples = test_split
    result = infer(
        run_cli,
        models["onnx"],
        images,
        tmp_path,
        "--save-preds",
        "--draw-boxes",
        "--count",
        "--obj-thresh",
        "0.2",
        "--min-class-confidence-threshold",
        "0.45",
        "--iou-thresh",
        "0.4",
    )
    assert result.code == 0, result.err
    found = predictions(tmp_path)
    assert len(found) == len(samples)
    rows = list(csv.DictReader((tmp_path / "counts.csv").open()))
    assert [r["image"] for r in rows] == sorted(found)
    detections = [d for ds in found.values() for d in ds]
    assert detections and all(
        d["objectness"] >= 0.2 and d["class_probability"] >= 0.45 for d in detections
    )
    for row in rows:
        mine = found[row["image"]]
        assert int(row["total"]) == len(mine)
        for name in ("healthy", "ring", "trophozoite"):
            assert int(row[name]) == sum(d["class_name"] == name for d in mine)
        lines = (tmp_path / "labels" / Path(row["image"]).with_suffix(".txt")).read_text()
        assert len(lines.splitlines()) == len(mine)
        assert all(len(line.split()) == 6 for line in lines.splitlines())
        drawn = Image.open(tmp_path / "boxes" / Path(row["image"]).with_suffix(".png"))
        assert drawn.size == (128 * 8, 96 * 8) and drawn.mode == "RGB"  # drawn large to read
    total = sum(int(r["total"]) for r in rows)
    assert "total" in result.out and str(total) in result.out.splitlines()[-2]


def test_any_format_and_size_single_files_and_sub_folders(
    run_cli, models, trained_run, tmp_path
) -> None:
    source = Image.open(next((trained_run.ddf.parent / "images").glob("*.png")))
    folder = tmp_path / "mixed"
    (folder / "deeper").mkdir(parents=True)
    source.resize((256, 192)).save(folder / "big.jpg", quality=95)  # resized to the model size
    source.convert("RGB").save(folder / "color.tif")
    wide = np.asarray(source, dtype=np.uint16) * 257
    Image.fromarray(wide).save(folder / "sixteen.png")
    source.save(folder / "deeper" / "inner.png")
    (folder / "notes.txt").write_text("not an image")

    flat = infer(run_cli, models["pth"], folder, tmp_path / "flat", "--obj-thresh", "0.2")
    assert flat.code == 0, flat.err
    assert sorted(predictions(tmp_path / "flat")) == ["big.jpg", "color.tif", "sixteen.png"]
    deep = infer(run_cli, models["pth"], folder, tmp_path / "deep", "--recursive", "--save-preds")
    assert deep.code == 0, deep.err
    assert "deeper/inner.png" in predictions(tmp_path / "deep")
    assert (tmp_path / "deep" / "labels" / "deeper" / "inner.txt").exists()
    # The DDF it writes pairs each image folder with its labels/ folder and trains as is.
    from yogo.data.scan import scan_dataset

    written = DatasetDefinition.from_yaml(tmp_path / "deep" / "ddf.yml")
    assert written.class_names == ("healthy", "ring", "trophozoite")
    scan = scan_dataset(written)
    assert scan.errors == () and sum(map(len, scan.splits.values())) == 4
    assert len(scan.confidence) == sum(map(len, predictions(tmp_path / "deep").values()))
    single = infer(run_cli, models["onnx"], folder / "big.jpg", tmp_path / "single")
    assert single.code == 0 and list(predictions(tmp_path / "single")) == ["big.jpg"]
    record = json.loads((tmp_path / "single" / "predictions.json").read_text())["images"][0]
    assert (record["height"], record["width"]) == (192, 256)


def test_unreadable_images_are_listed_and_skipped(run_cli, models, test_split, tmp_path) -> None:
    images, samples = test_split
    folder = tmp_path / "some-bad"
    shutil.copytree(images, folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = infer(run_cli, models["pth"], folder, tmp_path / "out", "--count")
    assert result.code == 1
    assert "1 image(s) could not be read" in result.err and "broken.png" in result.err
    document = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(document["images"]) == len(samples)
    assert document["unreadable"][0]["path"].endswith("broken.png")


def test_results_are_never_overwritten(run_cli, models, test_split, tmp_path) -> None:
    images, _ = test_split
    assert infer(run_cli, models["pth"], images, tmp_path).code == 0
    before = (tmp_path / "predictions.json").read_text()
    again = infer(run_cli, models["pth"], images, tmp_path)
    assert again.code == 2 and "choose another --output-dir" in again.err
    assert (tmp_path / "predictions.json").read_text() == before


def test_class_names_replace_the_models(run_cli, models, test_split, tmp_path) -> None:
    images, _ = test_split
    result = infer(
        run_cli,
        models["pth"],
        images,
        tmp_path,
        "--count",
        "--obj-thresh",
        "0.2",
        "--class-names",
        "rbc",
        "ring",
        "troph",
    )
    assert result.code == 0, result.err
    assert "rbc" in result.out and "troph" in result.out
    wrong = infer(run_cli, models["pth"], images, tmp_path / "x", "--class-names", "a", "b")
    assert wrong.code == 2 and "--class-names has 2 names for a model with 3 classes" in wrong.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--obj-thresh", "1.5"], "--obj-thresh must be in [0, 1]"),
        (["--min-class-confidence-threshold", "-1"], "must be in [0, 1]"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_settings(run_cli, models, test_split, tmp_path, args, message) -> None:
    images, _ = test_split
    result = infer(run_cli, models["pth"], images, tmp_path, *args)
    assert result.code == 2 and message in result.err, result.err


def test_bad_paths(run_cli, models, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    no_images = infer(run_cli, models["pth"], tmp_path / "empty", tmp_path / "o1")
    assert no_images.code == 2 and "no PNG, JPEG, TIFF or BMP images here" in no_images.err
    missing = infer(run_cli, tmp_path / "nope.onnx", tmp_path / "empty", tmp_path / "o2")
    assert missing.code == 2 and "model file does not exist" in missing.err
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    junk = infer(run_cli, tmp_path / "junk.onnx", tmp_path / "empty", tmp_path / "o3")
    assert junk.code == 2 and "is not an ONNX file" in junk.err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="this onnxruntime has a CUDA provider (tests/test_cuda.py runs it)",
)
def test_device_cuda_with_an_onnx_never_falls_back_to_the_cpu(
    run_cli, models, test_split, tmp_path
) -> None:
    """The plain onnxruntime package has no CUDA provider: `--device cuda` used to run the
    .onnx on the CPU without a word (many times slower than the GPU that was asked for)."""
    images, _ = test_split
    for device in ("cuda", "cuda:1"):
        refused = infer(run_cli, models["onnx"], images, tmp_path / device, "--device", device)
        assert refused.code == 2, refused.err
        assert f"--device {device}: this onnxruntime has no CUDA provider (it has " in refused.err
        assert "CPU" in refused.err and "pip install onnxruntime-gpu" in refused.err
        assert "--device cpu" in refused.err and "Traceback" not in refused.err
        assert not (tmp_path / device).exists()
    on_cpu = infer(run_cli, models["onnx"], images, tmp_path / "cpu", "--device", "cpu")
    assert on_cpu.code == 0, on_cpu.err


def test_an_onnx_file_onnxruntime_cannot_run_is_reported_with_its_reason(run_cli, tmp_path) -> None:
    """A well-formed ONNX file whose graph onnxruntime refuses is not called unreadable: the
    message carries onnxruntime's own words."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["images"], ["predictions"], domain="org.example")],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, [1, 8, 1, 1])],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("org.example", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), tmp_path / "odd.onnx")
    (tmp_path / "frames").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "frames" / "a.png")
    result = infer(run_cli, tmp_path / "odd.onnx", tmp_path / "frames", tmp_path / "out")
    assert result.code == 2, result.err
    assert "onnxruntime cannot load this model" in result.err
    assert "NoSuchOperator" in result.err
    assert not (tmp_path / "out").exists()


def test_bmp_images_are_found_like_the_other_formats(run_cli, models, tmp_path) -> None:
    """Datasets accept .bmp, so `yogo infer` folders do too."""
    (tmp_path / "frames").mkdir()
    Image.new("L", (128, 96), 120).save(tmp_path / "frames" / "a.bmp")
    result = infer(run_cli, models["pth"], tmp_path / "frames", tmp_path / "out")
    assert result.code == 0, result.err
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [record["image"] for record in predictions["images"]] == ["a.bmp"]


def test_images_that_would_share_output_names_are_refused(
    run_cli, models, trained_run, tmp_path
) -> None:
    source = Image.open(next((trained_run.ddf.parent / "images").glob("*.png")))
    folder = tmp_path / "twins"
    folder.mkdir()
    source.save(folder / "a.png")
    source.save(folder / "a.tif")
    result = infer(run_cli, models["pth"], folder, tmp_path / "out", "--save-preds")
    assert result.code == 2 and "would write the same labels/ and boxes/ files" in result.err
    assert not (tmp_path / "out").exists()
    plain = infer(run_cli, models["pth"], folder, tmp_path / "json-only")
    assert plain.code == 0 and sorted(predictions(tmp_path / "json-only")) == ["a.png", "a.tif"]


def test_half_precision_finds_the_same_objects(run_cli, models, test_split, tmp_path) -> None:
    """--half (bf16 on a CPU, fp16 on a GPU) against fp32 on the same frames: the same
    detections up to a few borderline ones."""
    images, _ = test_split
    full = infer(run_cli, models["pth"], images, tmp_path / "full", "--precision", "32")
    half = infer(run_cli, models["pth"], images, tmp_path / "half", "--half")
    assert full.code == 0 and half.code == 0, half.err
    assert "(pytorch on cpu, bf16)" in half.out and "(pytorch on cpu)" in full.out
    counts = [sum(map(len, predictions(tmp_path / k).values())) for k in ("full", "half")]
    assert counts[0] > 0 and abs(counts[0] - counts[1]) <= max(2, counts[0] // 20)
    both = infer(run_cli, models["pth"], images, tmp_path / "both", "--half", "--precision", "32")
    assert both.code == 2 and "--half and --precision 32 both choose" in both.err


def test_reduced_precision_counts_what_fp32_counts(run_cli, models, test_split, tmp_path) -> None:
    """--precision auto picks bf16 where the hardware has it: per class, the counts under
    bf16 stay within a few percent (or two objects) of fp32's. bf16 runs on any CPU torch
    supports (slowly without native support), so this holds wherever auto would choose it."""
    images, _ = test_split
    runs = {p: infer(run_cli, models["pth"], images, tmp_path / p, "--count", "--precision", p)
            for p in ("32", "bf16")}  # fmt: skip
    assert all(r.code == 0 for r in runs.values()), runs["bf16"].err
    counts = {p: _counts_per_class(tmp_path / p / "counts.csv") for p in runs}
    assert counts["32"].keys() == counts["bf16"].keys() and sum(counts["32"].values()) > 0
    for name, n in counts["32"].items():
        assert n > 0, f"no {name} found: the test would not test that class"
        assert abs(counts["bf16"][name] - n) <= max(2, round(0.05 * n)), (name, counts)


def _counts_per_class(path: Path) -> dict[str, int]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    names = [k for k in rows[0] if k not in ("image", "total")]
    return {name: sum(int(r[name]) for r in rows) for name in names}


def test_crop_height_runs_on_the_centred_band(
    run_cli, models, test_split, tmp_path, trained_run
) -> None:
    """--crop-height F: a .pth runs on the centred band of round(F * H) rows, boxes in frame
    coordinates; an .onnx exported with the same band gives the same detections, and one
    exported without a band refuses the flag."""
    from yogo.config import ExportConfig
    from yogo.deploy.export import export_onnx

    images, _ = test_split
    result = infer(run_cli, models["pth"], images, tmp_path / "pth", "--crop-height", "0.5")
    assert result.code == 0, result.err
    band = predictions(tmp_path / "pth")
    centres = [d["cxcywh"][1] for found in band.values() for d in found]
    assert centres and min(centres) >= 0.25 and max(centres) <= 0.75
    onnx = export_onnx(
        ExportConfig(str(models["pth"]), str(tmp_path / "band.onnx"), crop_height=0.5)
    ).path
    same = infer(run_cli, onnx, images, tmp_path / "onnx", "--crop-height", "0.5")
    assert same.code == 0, same.err
    onnx_band = predictions(tmp_path / "onnx")
    for name, found in band.items():
        assert [d["class"] for d in found] == [d["class"] for d in onnx_band[name]]
    refused = infer(run_cli, models["onnx"], images, tmp_path / "no", "--crop-height", "0.5")
    assert refused.code == 2 and "re-export" in refused.err


def test_zarr_frames_get_every_output(run_cli, models, test_split, tmp_path) -> None:
    """A zarr store through every output option: names `<store>/<index>`, files under
    `<store stem>/`, the frames as PNGs beside the labels, Label Studio URLs of those PNGs."""
    zarr = pytest.importorskip("zarr")
    images, _ = test_split
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted(images.glob("*.png"))])
    store = tmp_path / "scope.zarr"
    array = zarr.create_array(
        str(store), shape=frames.shape, chunks=(1, *frames.shape[1:]), dtype="uint8"
    )
    array[...] = frames
    out = tmp_path / "out"
    flags = ["--save-preds", "--draw-boxes", "--count", "--save-npy"]
    tasks = tmp_path / "tasks.json"
    result = run_cli(
        "infer", models["onnx"], "--path-to-zarr", store, "--output-dir", out, *flags,
        "--label-studio", tasks, "--num-workers", "2", "--batch-size", "2",
    )  # fmt: skip
    assert result.code == 0, result.err
    n = len(frames)
    names = [f"scope.zarr/{i:0{len(str(n - 1))}d}" for i in range(n)]
    assert list(predictions(out)) == names
    stems = [name.replace("scope.zarr", "scope") for name in names]
    for stem in stems:
        for path in (f"labels/{stem}.txt", f"boxes/{stem}.png", f"images/{stem}.png"):
            assert (out / path).is_file(), path
    with open(out / "counts.csv") as f:
        assert [row[0] for row in list(csv.reader(f))[1:]] == names
    assert np.load(out / "scope.npy").shape[0] == 8 + 3
    np.testing.assert_array_equal(np.asarray(Image.open(out / f"images/{stems[1]}.png")), frames[1])
    url = json.loads(tasks.read_text())[1]["data"]["image"]
    assert (
        url == f"/data/local-files/?d={str((out / 'images').resolve()).lstrip('/')}/{stems[1]}.png"
    )
    ddf = (out / "ddf.yml").read_text()
    assert "image_path: images/scope" in ddf and "label_path: labels/scope" in ddf
    again = run_cli("infer", models["onnx"], "--path-to-zarr", store, "--output-dir", out, *flags)
    assert again.code == 2 and "--force" in again.err  # the earlier results are kept


def test_finding_nothing_says_which_threshold_and_how_to_lower_it(
    run_cli, models, test_split, tmp_path
) -> None:
    images, _ = test_split
    result = infer(run_cli, models["pth"], images, tmp_path / "o", "--obj-thresh", "1")
    assert result.code == 0, result.err
    assert "nothing found at objectness >= 1: lower it (e.g. --obj-thresh 0.5)" in result.err
    some = infer(run_cli, models["pth"], images, tmp_path / "p", "--obj-thresh", "0.3")
    assert "nothing found" not in some.err
