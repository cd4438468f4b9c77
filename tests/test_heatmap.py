"""Heatmap masking in `yogo infer` (yogo.deploy.heatmap): objects stuck in place for a whole
run are masked and counted apart; the moving ones are counted as without them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yogo.deploy.heatmap import Heatmap, load_mask, masked
from yogo.errors import UserError

FRAMES = 30


def stuck_run(trained_run, root: Path) -> tuple[Path, Path, int]:
    """`FRAMES` synthetic frames twice: `moving/` as they are but for two patches of plain
    background, `stuck/` with the same cell pasted into those two patches in every frame (a
    cell stuck to the flow cell). Returns both folders and the stuck cell's class."""
    from yogo.data.synth import write_dataset

    ddf = write_dataset(root / "data", FRAMES, (96, 128), seed=21, split_fractions=(1, 0, 0))
    images = sorted((ddf.parent / "images").glob("*.png"))
    first = np.asarray(Image.open(images[0]))
    label = np.loadtxt(ddf.parent / "labels" / f"{images[0].stem}.txt", ndmin=2)[0]
    cls, xc, yc, w, h = label[:5]
    # the labelled cell alone: the pixels inside its ellipse, nothing of its neighbours
    ry, rx = h * 96 / 2, w * 128 / 2
    yy, xx = np.mgrid[0:96, 0:128]
    inside = ((yy - yc * 96) / ry) ** 2 + ((xx - xc * 128) / rx) ** 2 <= 1
    top, left = int(yc * 96 - ry), int(xc * 128 - rx)
    shifts = [(20 - top, 20 - left), (60 - top, 90 - left)]  # fixed for the whole run
    (root / "moving").mkdir()
    (root / "stuck").mkdir()
    for path in images:
        frame = np.asarray(Image.open(path)).copy()
        background = int(np.median(frame))
        spots = [np.roll(inside, shift, axis=(0, 1)) for shift in shifts]
        # room for the stuck cell: a disc of background twice its size, in both versions
        for dy, dx in shifts:
            cy, cx = yc * 96 + dy, xc * 128 + dx
            clear = ((yy - cy) / (2 * ry)) ** 2 + ((xx - cx) / (2 * rx)) ** 2 <= 1
            frame[clear] = background
        Image.fromarray(frame).save(root / "moving" / path.name)
        for spot, (dy, dx) in zip(spots, shifts, strict=True):
            frame[spot] = np.roll(first, (dy, dx), axis=(0, 1))[spot]
        Image.fromarray(frame).save(root / "stuck" / path.name)
    return root / "moving", root / "stuck", int(cls)


@pytest.mark.slow
def test_stuck_objects_are_masked_and_the_moving_ones_counted_as_without_them(
    trained_run, run_cli, tmp_path: Path
) -> None:
    moving, stuck, _ = stuck_run(trained_run, tmp_path)
    model = trained_run.run / "best.pth"
    base = ["infer", model, "--count", "--obj-thresh", "0.3"]
    truth = run_cli(*base, "--path-to-images", moving, "--output-dir", tmp_path / "m")
    assert truth.code == 0, truth.err
    result = run_cli(
        *base, "--path-to-images", stuck, "--output-dir", tmp_path / "s", "--heatmap-mask", "auto"
    )
    assert result.code == 0, result.err
    expected = json.loads((tmp_path / "m" / "counts.json").read_text())["all"]["per_class"]
    counts = json.loads((tmp_path / "s" / "counts.json").read_text())["all"]
    mask = np.load(tmp_path / "s" / "heatmap_mask.npy")
    assert 1 <= mask.sum() <= 8  # the two stuck cells' grid cells, nothing else
    apart = sum(counts["masked"].values())
    assert 2 * FRAMES * 0.9 <= apart <= 2 * FRAMES * 1.2, counts["masked"]
    for name, c in counts["per_class"].items():
        want = expected[name]["count"]
        assert abs(c["count"] - want) <= max(3, 0.05 * want), (name, c["count"], want)
    document = json.loads((tmp_path / "s" / "predictions.json").read_text())
    flags = [d["masked"] for image in document["images"] for d in image["detections"]]
    assert sum(flags) == apart
    assert (tmp_path / "s" / "heatmap.png").is_file()
    assert "in the heatmap mask, counted apart" in result.out
    # The moving run alone has no cell that any class holds in most frames.
    moving_rows = [
        np.array([d["xyxy"] + [0, 0, d["class"]] for d in image["detections"]]).reshape(-1, 7)
        for image in json.loads((tmp_path / "m" / "predictions.json").read_text())["images"]
    ]
    clean = Heatmap.of(moving_rows, 3, mask.shape[1:])
    most = clean.occupied.max() / FRAMES
    print(f"\nmoving objects hold a grid cell in at most {most:.2f} of {FRAMES} frames")
    assert not clean.mask(0.8).any()


@pytest.mark.slow
def test_a_given_mask_is_applied_and_bad_ones_are_refused(
    trained_run, run_cli, tmp_path: Path
) -> None:
    _, stuck, _ = stuck_run(trained_run, tmp_path)
    model = trained_run.run / "best.pth"
    auto = run_cli("infer", model, "--path-to-images", stuck, "--output-dir", tmp_path / "a",
                   "--heatmap-mask", "auto", "--obj-thresh", "0.3", "--count")  # fmt: skip
    assert auto.code == 0, auto.err
    grid_mask = np.load(tmp_path / "a" / "heatmap_mask.npy")
    frame_mask = np.kron(
        grid_mask.any(axis=0), np.ones((96 // grid_mask.shape[1], 128 // grid_mask.shape[2]), bool)
    )
    np.save(tmp_path / "frame.npy", frame_mask)
    given = run_cli("infer", model, "--path-to-images", stuck, "--output-dir", tmp_path / "g",
                    "--heatmap-mask-path", tmp_path / "frame.npy", "--obj-thresh", "0.3",
                    "--count")  # fmt: skip
    assert given.code == 0, given.err
    assert (np.load(tmp_path / "g" / "heatmap_mask.npy") == grid_mask.any(axis=0)).all()
    for name, array, message in [
        ("shape.npy", np.zeros((5, 7), bool), "has shape (3, 5, 7); a mask is (Sy, Sx)"),
        ("values.npy", np.full(grid_mask.shape, 0.5), "values other than 0 and 1"),
    ]:
        np.save(tmp_path / name, array)
        out = tmp_path / f"out-{name}"
        bad = run_cli("infer", model, "--path-to-images", stuck, "--output-dir", out,
                      "--heatmap-mask-path", tmp_path / name)  # fmt: skip
        assert bad.code == 2 and message in bad.err and name in bad.err, bad.err
        assert not out.exists() or not any(out.iterdir())  # refused before any work
    (tmp_path / "text.npy").write_text("not an array")
    bad = run_cli("infer", model, "--path-to-images", stuck, "--heatmap-mask-path",
                  tmp_path / "text.npy", "--output-dir", tmp_path / "t")  # fmt: skip
    assert bad.code == 2 and "is not a .npy array" in bad.err
    both = run_cli("infer", model, "--path-to-images", stuck, "--heatmap-mask", "auto",
                   "--heatmap-mask-path", tmp_path / "frame.npy")  # fmt: skip
    assert both.code == 2 and "both choose the mask" in both.err
    # several runs at once: a stuck object of one would sit in a fraction of the frames only
    runs = run_cli("infer", model, "--path-to-images", tmp_path, "--recursive", "--output-dir",
                   tmp_path / "r", "--heatmap-mask", "auto")  # fmt: skip
    assert runs.code == 2 and "once per specimen" in runs.err and "specimens" in runs.err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_the_cell_of_a_detection_is_its_centres() -> None:
    rows = np.array([[0.0, 0.0, 0.1, 0.1, 0.9, 0.9, 1], [0.5, 0.5, 0.7, 0.7, 0.9, 0.9, 0]])
    mask = np.zeros((2, 4, 4), bool)
    mask[1, 0, 0] = True  # class 1's top-left cell
    assert masked(rows, mask).tolist() == [True, False]
    mask[1, 0, 0], mask[0, 2, 2] = False, True  # class 0 at (0.6, 0.6): cell (2, 2)
    assert masked(rows, mask).tolist() == [False, True]


def test_frame_sized_masks_become_grid_cells_by_majority(tmp_path: Path) -> None:
    frame = np.zeros((8, 8), bool)
    frame[:4, :4] = True  # exactly the top-left cell of a 2x2 grid
    frame[4, 4] = True  # one pixel of another: not a majority
    np.save(tmp_path / "m.npy", frame)
    mask = load_mask(tmp_path / "m.npy", 3, (2, 2), (8, 8))
    assert mask.shape == (3, 2, 2)
    assert mask[:, 0, 0].all() and not mask[:, 1, 1].any()
    with pytest.raises(UserError, match="a mask is"):
        np.save(tmp_path / "w.npy", np.zeros((2, 2, 2), bool))  # 2 classes for a 3-class model
        load_mask(tmp_path / "w.npy", 3, (2, 2), (8, 8))
