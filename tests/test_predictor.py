"""The Python prediction API (`yogo.load_predictor(...).predict`): the example in
docs/export-and-infer.md runs as written, and it finds what `yogo infer` finds."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import yogo
from yogo.errors import UserError

DOCS = Path(__file__).parent.parent / "docs" / "export-and-infer.md"


def _example() -> str:
    text = DOCS.read_text()
    marker = text.index("<!-- example: tests/test_predictor.py runs this block -->")
    match = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert match is not None
    return match.group(1)


def test_the_documented_example_runs_and_matches_infer(
    trained_run, tmp_path: Path, run_cli, capsys
) -> None:
    image_path = sorted((trained_run.ddf.parent / "images").glob("*.png"))[0]
    image = Image.open(image_path)
    namespace = {"MODEL": str(trained_run.run / "best.pth"), "IMAGE": image}
    exec(_example(), namespace)
    printed = capsys.readouterr().out.splitlines()
    found = namespace["found"]
    assert len(found) > 0 and len(printed) == len(found)
    assert sum(namespace["counts"].values()) == len(found)
    # The same detections as `yogo infer` on the same file, in pixels of the image.
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(image_path, folder / image_path.name)
    result = run_cli("infer", trained_run.run / "best.pth", "--path-to-images", folder,
                     "--output-dir", tmp_path / "out")  # fmt: skip
    assert result.code == 0, result.err
    record = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"][0]
    width, height = image.size
    expected = np.array([d["xyxy"] for d in record["detections"]]) * ([width, height] * 2)
    np.testing.assert_allclose(found.boxes, expected, atol=1e-3)
    assert found.class_names == [d["class_name"] for d in record["detections"]]


def test_paths_arrays_of_any_size_and_16_bit(trained_run, tmp_path: Path) -> None:
    predictor = yogo.load_predictor(trained_run.run / "best.pth")
    image_path = sorted((trained_run.ddf.parent / "images").glob("*.png"))[0]
    pixels = np.asarray(Image.open(image_path))
    by_path, by_array, wide = predictor.predict(
        [image_path, pixels, pixels.astype(np.uint16) * 257], batch_size=2
    )
    np.testing.assert_array_equal(by_path.boxes, by_array.boxes)
    np.testing.assert_allclose(wide.boxes, by_array.boxes, atol=1e-4)
    big = np.asarray(Image.fromarray(pixels).resize((pixels.shape[1] * 2, pixels.shape[0] * 2)))
    (scaled,) = predictor.predict([big])
    assert scaled.boxes.max() > pixels.shape[1]  # pixels of the larger image
    assert len(predictor.predict([pixels], obj_thresh=1.0)[0]) == 0


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (lambda p: [p.astype(np.float32) / 255], ["float32", "astype(np.uint8)"]),
        (lambda p: [p[None]], ["channel-first", "np.moveaxis"]),
        (lambda p: [p > 128], ["bool"]),
        (lambda p: [p.astype(np.int8)], ["int8"]),
        (lambda p: p, ["a list of images", "predict([image])"]),
        (lambda p: [p.tolist()], ["image 0 is a list"]),
        (lambda p: [p[:0]], ["no pixels"]),
    ],
    ids=["float", "channel-first", "bool", "int8", "bare-array", "nested-list", "empty"],
)
def test_images_yogo_would_misread_are_refused(trained_run, images, words) -> None:
    """predict() took these and returned detections from a misread array (or an IndexError)."""
    predictor = yogo.load_predictor(trained_run.run / "best.pth")
    pixels = np.asarray(Image.open(sorted((trained_run.ddf.parent / "images").glob("*.png"))[0]))
    with pytest.raises(UserError) as refused:
        predictor.predict(images(pixels))
    for word in words:
        assert word in str(refused.value)


def test_settings_are_checked_as_the_cli_checks_them(trained_run) -> None:
    with pytest.raises(UserError, match="--crop-height must be in"):
        yogo.load_predictor(trained_run.run / "best.pth", crop_height=2.0)
    predictor = yogo.load_predictor(trained_run.run / "best.pth")
    image = np.zeros((48, 64), np.uint8)
    with pytest.raises(UserError, match="obj_thresh"):
        predictor.predict([image], obj_thresh=1.5)
    with pytest.raises(UserError, match="batch_size"):
        predictor.predict([image], batch_size=0)


def test_a_model_file_yogo_did_not_export_is_refused(tmp_path: Path) -> None:
    """An ONNX file without yogo's metadata (class names, frame size, channels): one message."""
    import onnx
    from onnx import TensorProto, helper

    from yogo.deploy.predictor import load_predictor

    tensor = [1, 1, 8, 8]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["out"])],
        "foreign",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, tensor)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, tensor)],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    with pytest.raises(UserError, match="has no yogo metadata") as raised:
        load_predictor(path, "cpu")
    assert "foreign.onnx" in str(raised.value) and "yogo export" in str(raised.value)
