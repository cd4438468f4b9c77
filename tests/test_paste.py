"""Copy-paste: rare objects from other frames, or thumbnails, pasted where they cover no
labelled object, with their labels; reproducible per sample and epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yogo.data.dataset import DetectionDataset
from yogo.data.paste import PastePool, _pixel_boxes, paste_objects
from yogo.data.scan import LabelledSample


def sample(path: Path, boxes: list[list[float]], hw: tuple[int, int] = (60, 80)) -> LabelledSample:
    array = np.array(boxes, dtype=np.float32).reshape(-1, 5)
    return LabelledSample(path, path.with_suffix(".txt"), array, np.arange(len(array)), *hw, 1)


def frames(tmp_path: Path) -> tuple[LabelledSample, ...]:
    """Frame 0: five common objects (class 0); frame 1: one rare object (class 1), a white
    8 x 8 square at (x 20, y 10) on grey."""
    common = [[0, 0.1 + 0.2 * i, 0.8, 0.1, 0.1] for i in range(5)]
    grey = np.full((60, 80), 90, np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.png")
    rare = grey.copy()
    rare[10:18, 20:28] = 250
    Image.fromarray(rare).save(tmp_path / "b.png")
    return (
        sample(tmp_path / "a.png", common),
        sample(tmp_path / "b.png", [[1, 24 / 80, 14 / 60, 8 / 80, 8 / 60]]),
    )


def test_the_pool_holds_the_rare_classes_objects(tmp_path: Path) -> None:
    pool = PastePool.from_frames(frames(tmp_path), 2)
    assert len(pool) == 1 and pool.boxes[0, 0] == 1 and pool.frame is not None
    assert pool.frame.tolist() == [1]


@pytest.mark.parametrize("seed", range(5))
def test_pasted_objects_cover_nothing_and_are_labelled(tmp_path: Path, seed: int) -> None:
    train = frames(tmp_path)
    dataset = DetectionDataset(train, (60, 80), 1)
    pool = PastePool.from_frames(train, 2)
    image = dataset.frame(0).clone()
    boxes = torch.from_numpy(train[0].boxes)
    out, labelled = paste_objects(
        image, boxes, pool, dataset.frame, (1.0, 1.0), torch.Generator().manual_seed(seed)
    )
    assert 6 <= len(labelled) <= 8 and torch.equal(labelled[:5], boxes)
    corners = _pixel_boxes(labelled.numpy(), 60, 80)
    for i in range(len(corners)):  # no two boxes overlap
        for j in range(i):
            a, b = corners[i], corners[j]
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    for box in corners[5:]:  # each pasted box holds the rare object's pixels
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        assert (out[0, y0:y1, x0:x1] == 250).all() and (x1 - x0, y1 - y0) == (8, 8)
    assert int((out == 250).sum()) == 64 * (len(labelled) - 5)


def test_thumbnails_are_scaled_like_the_frames(tmp_path: Path) -> None:
    folder = tmp_path / "thumbs"
    folder.mkdir()
    Image.fromarray(np.full((10, 20), 200, np.uint8)).save(folder / "t.png")
    (folder / "notes.txt").write_text("not an image")
    train = frames(tmp_path)
    pool = PastePool.from_thumbnails({"rare": (folder,)}, ("common", "rare"), 1, (120, 160))
    assert pool.paths == (folder / "t.png",) and pool.boxes[0, 0] == 1
    dataset = DetectionDataset(train, (60, 80), 1)
    # Frames were 120 x 160 before resizing to 60 x 80: the thumbnail halves too.
    out, labelled = paste_objects(
        dataset.frame(0).clone(),
        torch.from_numpy(train[0].boxes),
        pool,
        dataset.frame,
        (0.5, 0.5),
        torch.Generator().manual_seed(0),
    )
    assert len(labelled) > 5
    assert labelled[5, 3] * 80 == pytest.approx(10) and labelled[5, 4] * 60 == pytest.approx(5)
    x0, y0, x1, y1 = (round(float(v)) for v in _pixel_boxes(labelled[5:6].numpy(), 60, 80)[0])
    assert (out[0, y0:y1, x0:x1] == 200).all()


def test_a_dataset_pastes_reproducibly_and_leaves_the_frame_untouched(tmp_path: Path) -> None:
    train = frames(tmp_path)
    pool = PastePool.from_frames(train, 2)
    pasting = DetectionDataset(train, (60, 80), 1, augment=True, seed=3, paste=(pool, 1.0))
    plain = DetectionDataset(train, (60, 80), 1, augment=True, seed=3)
    before = pasting.frame(0).clone()
    first, again = pasting[0], pasting[0]
    assert isinstance(first, tuple) and isinstance(again, tuple)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.equal(pasting.frame(0), before)
    unpasted = plain[0]
    assert isinstance(unpasted, tuple) and len(first[1]) > len(unpasted[1]) == 5
    # Pasting on draws its own numbers: the flips are those of the run without it.
    assert torch.equal(first[1][:5], unpasted[1])
