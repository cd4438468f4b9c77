"""A sweep of bad inputs through the command line, as users make them: DDFs, label files,
images, flags, checkpoints and output paths. Each case must exit 2 with one message that
names the culprit (file and line, or flag), print no traceback, and leave every file the
user owns as it was. (Stop signals, the faults of a running job: tests/faults/test_stops.py.)

    pytest tests/test_bad_inputs.py -v     # one line per case
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_image

from yogo.data.synth import write_dataset


@dataclass
class Workspace:
    """A user's folder: a small dataset (ddf.yml, images/, labels/) and a trained model."""

    root: Path
    ddf: Path
    images: Path
    labels: Path
    model: Path

    def edit_ddf(self, old: str, new: str) -> Workspace:
        text = self.ddf.read_text()
        assert old in text, text
        self.ddf.write_text(text.replace(old, new))
        return self

    def put(self, name: str, content: str | bytes, copies: int = 1) -> Workspace:
        """Write data/NAME (or `copies` files: frame_0000..., NAME a format string)."""
        for i in range(copies):
            self.file(f"data/{name.format(i)}", content)
        return self

    def remove(self, name: str) -> Workspace:
        (self.root / "data" / name).unlink()
        return self

    def tiny_images(self) -> Workspace:
        for image in self.images.iterdir():
            write_image(image, (4, 4))
        return self

    def run_folder(self) -> Path:
        """A run folder holding a copy of the model as best.pth."""
        (self.root / "run").mkdir()
        shutil.copy(self.model, self.root / "run" / "best.pth")
        return self.root / "run"

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("pristine") / "data", 10, (48, 64), seed=3).parent


@pytest.fixture
def ws(pristine: Path, trained_run, tmp_path: Path) -> Workspace:
    data = tmp_path / "data"
    shutil.copytree(pristine, data)
    shutil.copy(trained_run.run / "best.pth", tmp_path / "model.pth")
    return Workspace(
        tmp_path, data / "ddf.yml", data / "images", data / "labels", tmp_path / "model.pth"
    )


def check(ws: Workspace, *flags: object) -> list[object]:
    return ["check", ws.ddf, *flags]


def train(ws: Workspace, *flags: object) -> list[object]:
    return [
        "train",
        ws.ddf,
        "--epochs",
        "1",
        "--no-wandb",
        "--output-dir",
        ws.root / "runs",
        *flags,
    ]


def yogo_test(ws: Workspace, *flags: object) -> list[object]:
    return ["test", ws.model, ws.ddf, *flags]


def infer(ws: Workspace, *flags: object) -> list[object]:
    return ["infer", ws.model, "--path-to-images", ws.images, "--output-dir", ws.root / "o", *flags]


def png_header_only() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + b"\x00" * 8


# Each case: (id, what the user ran (files prepared on the way), words the message must hold:
# the culprit and what is wrong).
Args = Callable[[Workspace], list[object]]
CASES: list[tuple[str, Args, list[str]]] = [
    # --- dataset definition files
    (
        "ddf-missing",
        lambda w: ["check", w.root / "nope.yml"],
        ["nope.yml", "does not exist"],
    ),
    ("ddf-is-a-folder", lambda w: ["check", w.images], ["images", "folder"]),
    ("ddf-empty", lambda w: ["check", w.file("e.yml", "")], ["e.yml", "empty"]),
    (
        "ddf-yaml-syntax",
        lambda w: check(w.edit_ddf("class_names: [", "class_names: [[")),
        ["ddf.yml:"],
    ),
    (
        "ddf-unknown-key",
        lambda w: check(w.edit_ddf("dataset_paths:", "dataset_pathz:")),
        ["ddf.yml:", "dataset_pathz"],
    ),
    (
        "ddf-no-class-names",
        lambda w: ["check", w.file("d.yml", "dataset_paths:\n  a:\n    image_path: x\n")],
        ["d.yml", "class_names"],
    ),
    (
        "ddf-empty-class-list",
        lambda w: check(
            w.edit_ddf('class_names: ["healthy", "ring", "trophozoite"]', "class_names: []")
        ),
        ["ddf.yml:2", "empty list"],
    ),
    (
        "ddf-duplicate-class",
        lambda w: check(w.edit_ddf('"ring", "trophozoite"', '"ring", "ring"')),
        ["ddf.yml:2", "ring"],
    ),
    (
        "ddf-top-level-list",
        lambda w: ["check", w.file("l.yml", "- a\n- b\n")],
        ["l.yml:1", "mapping"],
    ),
    (
        "ddf-image-folder-missing",
        lambda w: check(w.edit_ddf("image_path: images", "image_path: imagez")),
        ["ddf.yml:", "imagez"],
    ),
    (
        "ddf-label-folder-is-a-file",
        lambda w: check(w.edit_ddf("label_path: labels", "label_path: labels/frame_0000.txt")),
        ["ddf.yml:", "is a file, not a folder"],
    ),
    (
        "ddf-fractions-sum",
        lambda w: check(w.edit_ddf("train: 0.8", "train: 0.9")),
        ["ddf.yml:", "sum to 1"],
    ),
    (
        "ddf-negative-fraction",
        lambda w: check(w.edit_ddf("test: 0.1", "test: -0.1")),
        ["ddf.yml:", "test"],
    ),
    (
        "ddf-defn-path-missing",
        lambda w: [
            "check",
            w.file("inc.yml", "class_names: [a]\ndataset_paths:\n  x:\n    defn_path: gone.yml\n"),
        ],
        ["inc.yml:4", "gone.yml"],
    ),
    ("ddf-is-a-checkpoint", lambda w: ["check", w.model], ["model.pth", "is a checkpoint"]),
    # --- label files
    (
        "label-four-values",
        lambda w: check(w.put("labels/frame_0000.txt", "0 0.5 0.5 0.1\n")),
        ["frame_0000.txt:1", "5 values"],
    ),
    (
        "label-not-a-number",
        lambda w: check(w.put("labels/frame_0001.txt", "0 0.5 x 0.1 0.1\n")),
        ["frame_0001.txt:1"],
    ),
    (
        "label-nan",
        lambda w: check(w.put("labels/frame_0001.txt", "0 nan 0.5 0.1 0.1\n")),
        ["frame_0001.txt:1"],
    ),
    (
        "label-class-beyond-names",
        lambda w: check(w.put("labels/frame_{:04d}.txt", "3 0.5 0.5 0.1 0.1\n", copies=4)),
        ["class 3", "class_names"],
    ),
    (
        "label-outside-image",
        lambda w: check(w.put("labels/frame_0002.txt", "0 1.5 0.5 0.1 0.1\n")),
        ["frame_0002.txt:1"],
    ),
    (
        "label-zero-width",
        lambda w: check(w.put("labels/frame_0002.txt", "0 0.5 0.5 0 0.1\n")),
        ["frame_0002.txt:1"],
    ),
    (
        "label-binary-junk",
        lambda w: check(w.put("labels/frame_0003.txt", bytes(range(128, 256)))),
        ["frame_0003.txt"],
    ),
    (
        "label-train-refuses-bad-row",
        lambda w: train(w.put("labels/frame_0000.txt", "0 0.5 0.5 0.1\n")),
        ["frame_0000.txt:1", "--bad-labels"],
    ),
    (
        "labels-all-dropped",
        lambda w: train(
            w.put("labels/frame_{:04d}.txt", "0 0.5 0.5 0.1\n", copies=10), "--bad-labels", "drop"
        ),
        ["no objects"],
    ),
    # --- images
    (
        "image-truncated",
        lambda w: check(w.put("images/frame_0004.png", png_header_only()), "--decode"),
        ["frame_0004.png"],
    ),
    (
        "image-empty-file",
        lambda w: check(w.put("images/frame_0004.png", b"")),
        ["frame_0004.png"],
    ),
    (
        "image-text-named-png",
        lambda w: check(w.put("images/frame_0005.png", "hello"), "--decode"),
        ["frame_0005.png"],
    ),
    (
        "image-missing-for-label",
        lambda w: check(w.remove("images/frame_0006.png")),
        ["frame_0006", "images"],
    ),
    (
        "images-too-small",
        lambda w: check(w.tiny_images()),
        ["16 px"],
    ),
    # --- flags
    ("flag-lr-negative", lambda w: train(w, "--lr", "-1"), ["--learning-rate"]),
    ("flag-epochs-zero", lambda w: train(w, "--epochs", "0"), ["--epochs"]),
    (
        "flag-image-hw-one-value",
        lambda w: train(w, "--image-hw", "192"),
        ["--image-hw", "two values"],
    ),
    ("flag-image-hw-tiny", lambda w: train(w, "--image-hw", "8", "8"), ["16 px"]),
    (
        "flag-bad-labels-policy",
        lambda w: check(w, "--bad-labels", "ignore"),
        ["--bad-labels"],
    ),
    ("flag-precision", lambda w: train(w, "--precision", "fp8"), ["--precision"]),
    ("flag-model", lambda w: train(w, "--model", "huge"), ["--model", "huge"]),
    (
        "flag-split-override",
        lambda w: check(w, "--dataset-split-override", "0.5", "0.5", "0.5"),
        ["--dataset-split-override"],
    ),
    ("flag-obj-thresh", lambda w: yogo_test(w, "--obj-thresh", "2"), ["--obj-thresh"]),
    ("flag-split-name", lambda w: yogo_test(w, "--split", "holdout"), ["--split"]),
    ("flag-batch-size-zero", lambda w: infer(w, "--batch-size", "0"), ["--batch-size"]),
    ("flag-num-workers", lambda w: yogo_test(w, "--num-workers", "-1"), ["--num-workers"]),
    ("flag-opset", lambda w: ["export", w.model, "--opset", "3"], ["--opset"]),
    # refused after the whole export, naming a temporary file
    (
        "flag-export-not-onnx",
        lambda w: ["export", w.model, "--output-filename", w.root / "model.txt"],
        ["--output-filename must name an .onnx file", "model.txt"],
    ),
    # `--name ''` restarted the output folder itself as a run
    ("flag-name-empty", lambda w: train(w, "--name", ""), ["--name", "''"]),
    ("flag-name-path", lambda w: train(w, "--name", "a/b"), ["--name", "'a/b'"]),
    (
        "flag-crop-height",
        lambda w: ["export", w.model, "--crop-height", "0"],
        ["--crop-height"],
    ),
    (
        "flag-class-weights",
        lambda w: train(w, "--class-weights", "1,x"),
        ["--class-weights"],
    ),
    ("flag-unknown", lambda w: check(w, "--no-such-flag"), ["--no-such-flag"]),
    # matplotlib appended .png to a --plot without it, after yogo had checked the name
    (
        "flag-lr-find-plot-not-png",
        lambda w: ["lr-find", w.ddf, "--plot", w.images / "frame_0003"],
        ["--plot must name a .png file", "frame_0003"],
    ),
    ("flag-lr-find-plot-dash", lambda w: ["lr-find", w.ddf, "--plot", "-"], ["--plot", ".png"]),
    (
        "flag-lr-find-config",
        lambda w: ["lr-find", w.ddf, "--config", w.ddf],
        ["lr-find does not take --config"],
    ),
    (
        "flag-lr-find-resume",
        lambda w: ["lr-find", w.ddf, "--resume", "auto"],
        ["lr-find does not take --resume"],
    ),
    (
        "flag-lr-find-end-lr-inf",
        lambda w: ["lr-find", w.ddf, "--end-lr", "inf", "--plot", w.root / "lr.png"],
        ["--end-lr", "finite"],
    ),
    (
        "flag-augment-blur-inf",
        lambda w: train(w, "--augment-blur", "inf"),
        ["--augment-blur", "finite"],
    ),
    (
        "flag-swa-epochs-over-epochs",
        lambda w: train(w, "--swa-epochs", "5", "--epochs", "2"),
        ["--swa-epochs 5", "--epochs 2"],
    ),
    (
        "flag-class-names-count",
        lambda w: infer(w, "--class-names", "a", "b"),
        ["--class-names"],
    ),
    (
        "flag-min-label-confidence",
        lambda w: check(w, "--min-label-confidence", "1.5"),
        ["--min-label-confidence"],
    ),
    (
        "label-confidence-above-one",
        lambda w: check(w.put("labels/frame_0000.txt", "0 0.5 0.5 0.1 0.1 1.7\n")),
        ["frame_0000.txt:1", "confidence 1.7"],
    ),
    (
        "flag-label-studio-url-alone",
        lambda w: infer(w, "--label-studio-url-prefix", "/data/x"),
        ["--label-studio-url-prefix", "--label-studio FILE.json"],
    ),
    (
        "flag-img-filetype",
        lambda w: infer(w, "--draw-boxes", "--output-img-filetype", "jpg"),
        ["--output-img-filetype"],
    ),
    (
        "flag-infer-two-sources",
        lambda w: infer(w, "--path-to-zarr", w.root / "s.zarr"),
        ["--path-to-images or --path-to-zarr"],
    ),
    (
        "flag-infer-no-source",
        lambda w: ["infer", w.model, "--output-dir", w.root / "o"],
        ["--path-to-images or --path-to-zarr"],
    ),
    (
        "flag-split-fractions",
        lambda w: infer(w, "--save-preds", "--split-fractions", "0.5", "0.2", "0.2"),
        ["--split-fractions", "sum to 1"],
    ),
    (
        "image-zarr-not-a-store",
        lambda w: ["infer", w.model, "--path-to-zarr", w.images, "--output-dir", w.root / "o"],
        ["images", "not a readable zarr store"],
    ),
    (
        "image-zarr-of-floats",
        lambda w: ["infer", w.model, "--path-to-zarr", _float_store(w), "--output-dir", w.root],
        ["f.zarr", "float32"],
    ),
    (
        "out-label-studio-over-model",
        lambda w: infer(w, "--label-studio", w.model, "--force"),
        ["--label-studio", "input"],
    ),
    (
        "out-label-studio-exists",
        lambda w: infer(w, "--label-studio", w.file("tasks.json", "[]")),
        ["tasks.json", "--force"],
    ),
    (
        "train-nothing-given",
        lambda w: ["train", "--output-dir", w.root / "runs"],
        ["DDF"],
    ),
    (
        "config-missing",
        lambda w: ["train", "--config", w.root / "c.yaml"],
        ["c.yaml", "does not exist"],
    ),
    ("config-is-a-ddf", lambda w: ["train", "--config", w.ddf], ["ddf.yml", "config"]),
    (
        "resume-missing",
        lambda w: ["train", "--resume", w.root / "last.pth"],
        ["last.pth", "does not exist"],
    ),
    (
        "resume-not-a-last-pth",
        lambda w: ["train", "--resume", w.model],
        ["model.pth", "not a last.pth", "--from-pretrained"],
    ),
    (
        "resume-auto-nothing",
        lambda w: ["train", "--resume", "auto", "--output-dir", w.root],
        ["--resume auto", "--name"],
    ),
    # --- checkpoints
    (
        "ckpt-is-a-ddf",
        lambda w: ["export", w.file("m.pth", "class_names: [a]\ndataset_paths: {}\n")],
        ["m.pth", "dataset definition"],
    ),
    (
        "ckpt-random-bytes",
        lambda w: ["export", w.file("m.pth", bytes(range(7, 200)))],
        ["m.pth", "not a checkpoint"],
    ),
    (
        "ckpt-truncated",
        lambda w: ["export", w.file("t.pth", w.model.read_bytes()[:5000])],
        ["t.pth"],
    ),
    ("ckpt-run-folder", lambda w: ["test", w.run_folder(), w.ddf], ["run/best.pth"]),
    ("ckpt-swapped", lambda w: ["test", w.ddf, w.model], ["swapped", "yogo test"]),
    (
        "ckpt-missing",
        lambda w: ["test", w.root / "gone.pth", w.ddf],
        ["gone.pth", "does not exist"],
    ),
    (
        "ckpt-other-classes",
        lambda w: yogo_test(w.edit_ddf('"trophozoite"', '"other"')),
        ["ddf.yml", "classes"],
    ),
    (
        "ckpt-from-pretrained-text",
        lambda w: train(w, "--from-pretrained", w.file("p.pth", "notes")),
        ["p.pth", "text file"],
    ),
    (
        "infer-model-text",
        lambda w: ["infer", w.file("m.pth", "notes"), "--path-to-images", w.images],
        ["m.pth", "text file"],
    ),
    (
        "infer-onnx-junk",
        lambda w: ["infer", w.file("m.onnx", b"junk"), "--path-to-images", w.images],
        ["m.onnx", "ONNX"],
    ),
    (
        "infer-images-missing",
        lambda w: ["infer", w.model, "--path-to-images", w.root / "frames"],
        ["frames", "does not exist"],
    ),
    # --- output paths
    (
        "out-json-over-ddf",
        lambda w: check(w, "--json", w.ddf, "--force"),
        ["ddf.yml", "input"],
    ),
    (
        "out-json-over-checkpoint",
        lambda w: yogo_test(w, "--json", w.model, "--force"),
        ["model.pth", "input"],
    ),
    (
        "out-json-exists",
        lambda w: check(w, "--json", w.file("r.json", "mine")),
        ["r.json", "--force"],
    ),
    (
        "out-json-folder-missing",
        lambda w: check(w, "--json", w.root / "no" / "r.json"),
        ["no", "--json"],
    ),
    (
        "out-export-over-checkpoint",
        lambda w: ["export", w.model, "--output-filename", w.model, "--force"],
        ["model.pth", "input"],
    ),
    (
        "out-export-exists",
        lambda w: ["export", w.model, "--output-filename", w.file("m.onnx", "mine")],
        ["m.onnx", "--force"],
    ),
    (
        "out-infer-over-labels",
        lambda w: [
            "infer",
            w.model,
            "--path-to-images",
            w.images,
            "--output-dir",
            w.ddf.parent,
            "--save-preds",
        ],
        ["labels/frame_0000.txt", "--force"],
    ),
    (
        "out-infer-dir-is-file",
        lambda w: [*infer(w)[:-1], w.ddf],
        ["ddf.yml", "not a folder"],
    ),
    (
        "out-train-dir-is-file",
        lambda w: ["train", w.ddf, "--output-dir", w.ddf],
        ["ddf.yml", "not a folder"],
    ),
    (
        "out-train-name-taken",
        lambda w: train(w.put("../runs/mine/notes.txt", "mine"), "--name", "mine"),
        ["mine", "already exists"],
    ),
    # --- issue #20: what a command reads is never written, data folders are never added to
    (
        "out-json-over-label",
        lambda w: check(w, "--json", w.labels / "frame_0000.txt", "--force"),
        ["frame_0000.txt", "reads data from"],
    ),
    (
        "out-json-into-images",
        lambda w: yogo_test(w, "--json", w.images / "report.json"),
        ["report.json", "reads data from"],
    ),
    (
        "out-json-over-included-ddf",
        lambda w: ["check", _including(w), "--json", w.ddf, "--force"],
        ["ddf.yml", "input"],
    ),
    (
        "out-json-over-notes",
        lambda w: check(
            w.put("notes.json", NOTES), "--json", w.root / "data/notes.json", "--force"
        ),
        ["notes.json", "input"],
    ),
    (
        "out-lr-find-plot-over-image",
        lambda w: ["lr-find", w.ddf, "--plot", w.images / "frame_0003.png", "--force"],
        ["frame_0003.png", "reads data from"],
    ),
    (
        "out-test-plots-into-labels",
        lambda w: yogo_test(w, "--plots", w.labels),
        ["labels", "reads data from"],
    ),
    (
        "out-train-into-images",
        lambda w: ["train", w.ddf, "--no-wandb", "--output-dir", w.images / "runs"],
        ["--output-dir", "reads data from"],
    ),
    (
        "out-infer-into-frames",
        lambda w: [*infer(w)[:-1], w.images / "out"],
        ["--output-dir", "reads data from"],
    ),
    (
        "out-label-studio-over-own-predictions",
        lambda w: infer(w, "--label-studio", w.root / "o" / "predictions.json", "--force"),
        ["--label-studio", "this run writes itself"],
    ),
    (
        "out-label-studio-over-own-ddf",
        lambda w: infer(w, "--save-preds", "--label-studio", w.root / "o" / "ddf.yml"),
        ["--label-studio", "this run writes itself"],
    ),
    (
        "out-train-user-folder",
        lambda w: train(
            w.put("../runs/exp1/config.yaml", "mine").put("../runs/exp1/metrics.csv", "mine"),
            "--name",
            "exp1",
        ),
        ["exp1", "already exists"],
    ),
    (
        "out-test-worst-is-a-file",
        lambda w: yogo_test(
            w.put("../plots/test_worst", "mine"), "--plots", w.root / "plots", "--worst", "3"
        ),
        ["test_worst", "is a file"],
    ),
    (
        "out-lr-find-plot-txt",
        lambda w: ["lr-find", w.ddf, "--plot", w.root / "lr.txt"],
        ["--plot", ".png"],
    ),
    # --- issue #20: values that passed validation, then failed mid-run
    (
        "notes-duplicate-id",
        lambda w: check(
            w.put("notes.json", _notes((0, "healthy"), (1, "ring"), (1, "trophozoite")))
        ),
        ["notes.json", "more than once", "1: ring, trophozoite"],
    ),
    (
        "notes-fractional-id",
        lambda w: check(w.put("notes.json", _notes((0, "healthy"), (1.5, "ring")))),
        ["notes.json", "whole numbers", "1.5"],
    ),
    ("flag-opset-12", lambda w: ["export", w.model, "--opset", "12"], ["--opset 12", "16 to 23"]),
    ("flag-augment-gamma", lambda w: train(w, "--augment-gamma", "1000"), ["--augment-gamma"]),
    ("flag-augment-scale", lambda w: train(w, "--augment-scale", "1e9"), ["--augment-scale"]),
    (
        "flag-augment-translate",
        lambda w: train(w, "--augment-translate", "1e30"),
        ["--augment-translate"],
    ),
    (
        "config-epochs-text",
        lambda w: ["train", "--config", _config(w, "epochs", '"three"')],
        ["c.yaml", "'epochs'", "whole number", "three"],
    ),
    (
        "config-image-hw-one-number",
        lambda w: ["train", "--config", _config(w, "image_hw", "96")],
        ["c.yaml", "'image_hw'", "list"],
    ),
    (
        "config-batch-size-fraction",
        lambda w: ["train", "--config", _config(w, "batch_size", "2.5")],
        ["c.yaml", "'batch_size'", "2.5"],
    ),
    (
        "thumbs-none-usable",
        lambda w: train(_thumbnails(w, b"", _frame_sized(w)), "--copy-paste", "1"),
        ["--copy-paste", "none of the thumbnails"],
    ),
    (
        "image-zarr-zero-height",
        lambda w: [
            "infer",
            w.model,
            "--path-to-zarr",
            _zero_height_store(w),
            "--output-dir",
            w.root / "o",
        ],
        ["z.zarr", "0 x 64 pixels"],
    ),
    (
        "image-zarr-sub-group",
        lambda w: [
            "infer",
            w.model,
            "--path-to-zarr",
            _nested_store(w),
            "--output-dir",
            w.root / "o",
        ],
        ["g.zarr", "sub-groups (frames)", "--path-to-zarr"],
    ),
    (
        "ckpt-no-model",
        lambda w: ["infer", _crafted(w, drop="model"), "--path-to-images", w.images],
        ["c.pth", "hand-made checkpoint"],
    ),
    (
        "ckpt-zero-image-hw",
        lambda w: train(w, "--from-pretrained", _crafted(w, image_hw=[0, 0])),
        ["c.pth", "image_hw 0 x 0"],
    ),
    (
        "ckpt-class-count-mismatch",
        lambda w: ["lr-find", w.ddf, "--from-pretrained", _crafted(w, classes=["a", "b"])],
        ["c.pth", "2 classes"],
    ),
]

NOTES = '{"categories": [{"id": 0, "name": "healthy"}], "info": {}}'


def _notes(*categories: tuple[float, str]) -> str:
    import json

    return json.dumps({"categories": [{"id": i, "name": n} for i, n in categories]})


def _including(w: Workspace) -> Path:
    """A DDF that includes the workspace's."""
    return w.file(
        "top.yml",
        'class_names: ["healthy", "ring", "trophozoite"]\n'
        "dataset_split_fractions: {train: 0.8, val: 0.1, test: 0.1}\n"
        "dataset_paths:\n  all:\n    defn_path: data/ddf.yml\n",
    )


def _config(w: Workspace, key: str, value: str) -> Path:
    return w.file(
        "c.yaml", f"config:\n  ddf: {w.ddf}\n  output_dir: {w.root / 'runs'}\n  {key}: {value}\n"
    )


def _thumbnails(w: Workspace, *contents: bytes) -> Workspace:
    """Thumbnails of 'ring' (`contents`: the files' bytes), declared in the DDF."""
    for i, content in enumerate(contents):
        w.file(f"thumbs/t{i}.png", content)
    text = w.ddf.read_text() + "thumbnail_augmentation:\n  ring: ../thumbs\n"
    w.ddf.write_text(text)
    return w


def _frame_sized(w: Workspace) -> bytes:
    return (w.images / "frame_0000.png").read_bytes()


def _zero_height_store(w: Workspace) -> Path:
    """Three (N, H, W) frames of 0 x 64 pixels."""
    import zarr

    path = w.root / "z.zarr"
    zarr.create_array(str(path), shape=(3, 0, 64), chunks=(1, 1, 64), dtype="uint8")
    return path


def _nested_store(w: Workspace) -> Path:
    import zarr

    path = w.root / "g.zarr"
    root = zarr.open_group(str(path), mode="w")
    root.create_group("frames").create_array("0", shape=(48, 64), dtype="uint8")[...] = 9
    return path


def _crafted(
    w: Workspace,
    drop: str = "",
    image_hw: list[int] | None = None,
    classes: list[str] | None = None,
) -> Path:
    """The workspace's model re-saved with one thing changed, as a hand-made file would be."""
    import torch

    payload = torch.load(w.model, weights_only=True)
    if drop:
        del payload[drop]
    if image_hw is not None:
        payload["model"]["image_hw"] = image_hw
    if classes is not None:
        payload["model"]["class_names"] = classes
    path = w.root / "c.pth"
    torch.save(payload, path)
    return path


def _float_store(w: Workspace) -> Path:
    import zarr

    path = w.root / "f.zarr"
    zarr.create_array(str(path), shape=(8, 8, 2), chunks=(8, 8, 1), dtype="float32")[...] = 1
    return path


@pytest.mark.parametrize(
    ("args", "culprit"), [(a, c) for _, a, c in CASES], ids=[i for i, _, _ in CASES]
)
def test_bad_input_is_one_clear_message_and_changes_nothing(
    ws: Workspace, run_cli, args: Args, culprit: list[str]
) -> None:
    command = args(ws)
    before = _files(ws.root)
    result = run_cli(*command)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err + result.out
    said = result.err + result.out  # `yogo check` prints its report on stdout
    for words in culprit:
        assert words in said, (words, said)
    assert _files(ws.root) == before


def _files(root: Path) -> dict[Path, bytes]:
    """Every file under `root` and its bytes, but the label index: a run refused for its labels
    keeps what the scan found (docs/training.md), so the corrected run rescans one file."""
    return {
        p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".yogo-cache" not in p.parts
    }


def test_dump_to_disk_names_its_own_flag(ws: Workspace, run_cli, monkeypatch) -> None:
    """`--dump-to-disk` writes test_metrics.json here; refused, it said `--json`."""
    monkeypatch.chdir(ws.root)
    (ws.root / "test_metrics.json").write_text("{}")
    result = run_cli("test", ws.model, ws.ddf, "--dump-to-disk")
    assert result.code == 2 and "--dump-to-disk: already exists" in result.err, result.err
    assert (ws.root / "test_metrics.json").read_text() == "{}"


def test_lr_find_usage_names_the_command_once(ws: Workspace, run_cli) -> None:
    """A mistake in a train flag given to lr-find printed `Usage: yogo yogo lr-find`."""
    result = run_cli("lr-find", ws.ddf, "--image-hw", "192")
    assert result.code == 2 and "--image-hw takes two values" in result.err
    assert "yogo lr-find" in result.err and "yogo yogo" not in result.err


def test_the_sweep_is_wide() -> None:
    assert len(CASES) >= 60
    kinds = {case_id.split("-")[0] for case_id, _, _ in CASES}
    assert {"ddf", "label", "image", "flag", "ckpt", "out"} <= kinds
