"""Frames larger than the model input: tile windows, the merge (core rule, twins), training on
random windows (--tile), and tiled infer on a 2048 x 2048 frame against direct passes."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from yogo.data.transforms import crop_window, random_window
from yogo.model import tiles
from yogo.model.tiles import cut_tiles, merge_tiles, plan_axis, plan_windows, uses_tiles


def test_windows_cover_the_frame_with_at_least_the_overlap() -> None:
    for length, tile, overlap in [(2048, 128, 48), (1000, 256, 32), (300, 128, 0), (129, 128, 8)]:
        starts = plan_axis(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length
        gaps = np.diff(starts)
        assert (tile - gaps >= overlap).all(), (length, tile, overlap)
    assert plan_axis(100, 128, 16) == [0]
    assert plan_windows((128, 300), (128, 128), 16) == [(0, 0), (0, 86), (0, 172)]
    with pytest.raises(ValueError):
        plan_windows((512, 512), (128, 128), 64)


def test_cut_tiles_pads_a_frame_smaller_than_the_tile_with_its_mean() -> None:
    frame = torch.full((1, 50, 300), 10, dtype=torch.uint8)
    windows = plan_windows((50, 300), (64, 128), 16)
    cut = cut_tiles(frame, windows, (64, 128))
    assert cut.shape == (len(windows), 1, 64, 128)
    assert (cut == 10).all()


def test_uses_tiles_only_for_larger_frames_of_a_tiled_model_unless_forced() -> None:
    assert uses_tiles((512, 512), (128, 128), True, None)
    assert not uses_tiles((128, 128), (128, 128), True, None)  # today's path
    assert not uses_tiles((512, 512), (128, 128), False, None)
    assert uses_tiles((128, 128), (128, 128), False, True)
    assert not uses_tiles((512, 512), (128, 128), True, False)


def _row(box: list[float], tile_hw: tuple[int, int], window: tuple[int, int], obj: float):
    """A postprocess row (x0, y0, x1, y1 normalised to the tile, obj, class prob, class) for
    a box given in frame pixels."""
    (h, w), (top, left) = tile_hw, window
    x0, y0, x1, y1 = box
    return [(x0 - left) / w, (y0 - top) / h, (x1 - left) / w, (y1 - top) / h, obj, 0.9, 0.0]


# Two tiles side by side: 0..128 and 88..216 (overlap 40, seam at x = 108).
TILE, WINDOWS, FRAME = (64, 128), [(0, 0), (0, 88)], (64, 216)


def _merge(per_tile: list[list[list[float]]]) -> torch.Tensor:
    found = [
        torch.tensor([_row(b, TILE, window, obj) for b, obj in boxes]).reshape(-1, 7)
        for boxes, window in zip(per_tile, WINDOWS, strict=True)
    ]
    merged = merge_tiles(found, WINDOWS, TILE, FRAME)
    return merged[:, :4] * torch.tensor([216, 64, 216, 64])


def test_an_object_on_the_seam_seen_by_both_tiles_is_counted_once() -> None:
    on_seam = [100.0, 20.0, 116.0, 36.0]  # centre x 108: the seam
    merged = _merge([[(on_seam, 0.8)], [(on_seam, 0.7)]])
    assert len(merged) == 1
    # Each tile keeps what lies in its core: one object per side, nothing dropped.
    left, right = [20.0, 20.0, 36.0, 36.0], [180.0, 20.0, 196.0, 36.0]
    assert len(_merge([[(left, 0.8)], [(right, 0.8)]])) == 2
    # An object the left tile sees but the right one does not (in the right tile's overlap
    # but in the left's core) is kept from the left tile.
    assert len(_merge([[([90.0, 20.0, 106.0, 36.0], 0.8)], []])) == 1


def test_twins_whose_centres_fall_either_side_of_the_seam_are_counted_once(monkeypatch) -> None:
    # The same object, its box a little different in each tile (as a model's is): the left
    # tile's centre at x 106 (its core), the right tile's at 111 (its core). The core rule
    # alone keeps both; the twin rule, relative to the box's size, keeps one.
    left, right = [98.0, 20.0, 114.0, 36.0], [102.0, 21.0, 120.0, 37.0]
    assert len(_merge([[(left, 0.8)], [(right, 0.6)]])) == 1
    # Without the twin rule it would be counted twice (so the test above can fail).
    monkeypatch.setattr(tiles, "suppress_twins", lambda rows, *_: torch.arange(len(rows)))
    assert len(_merge([[(left, 0.8)], [(right, 0.6)]])) == 2
    # Two touching neighbours on either side of the seam are two objects, not twins.
    a, b = [92.0, 20.0, 108.0, 36.0], [109.0, 20.0, 125.0, 36.0]
    assert len(_merge([[(a, 0.8)], [(b, 0.8)]])) == 2


def test_without_the_core_rule_an_object_in_the_overlap_is_counted_twice(monkeypatch) -> None:
    # The object lies in the left tile's core (centre x 98); the right tile, starting at 88,
    # sees a sliver of it at its edge: too small and too far to be a twin by size, so only
    # the core rule (the sliver's centre, 90.5, is in the left tile's core) drops it.
    whole, sliver = [90.0, 20.0, 106.0, 36.0], [88.0, 20.0, 93.0, 36.0]
    assert len(_merge([[(whole, 0.8)], [(sliver, 0.6)]])) == 1
    monkeypatch.setattr(
        tiles, "in_core", lambda pixels, core: torch.ones(len(pixels), dtype=torch.bool)
    )
    assert len(_merge([[(whole, 0.8)], [(sliver, 0.6)]])) == 2


def test_crop_window_clips_and_drops_boxes_cut_by_the_tile_edge() -> None:
    image = torch.arange(200 * 300, dtype=torch.int32).reshape(1, 200, 300).to(torch.uint8)
    # Boxes (class, xc, yc, w, h) normalised to the 200 x 300 frame, in pixels: one inside
    # the window (50..150, 100..228), one half cut by its left edge, one mostly outside.
    boxes = torch.tensor(
        [
            [0, 150 / 300, 100 / 200, 20 / 300, 20 / 200],
            [1, 100 / 300, 100 / 200, 20 / 300, 20 / 200],
            [2, 95 / 300, 100 / 200, 20 / 300, 20 / 200],
        ]
    )
    window, moved = crop_window(image, boxes, 50, 100, (100, 128))
    assert torch.equal(window, image[:, 50:150, 100:228])
    assert moved[:, 0].tolist() == [0, 1]  # 50% visible kept, 25% dropped (MIN_VISIBLE 0.4)
    px = moved[:, 1:] * torch.tensor([128, 100, 128, 100])
    assert torch.allclose(px[0], torch.tensor([50.0, 50, 20, 20]))
    assert torch.allclose(px[1], torch.tensor([5.0, 50, 10, 20]))  # clipped at the edge
    # Random windows lie in the frame and follow the generator.
    a = random_window(image, boxes, (100, 128), torch.Generator().manual_seed(1))
    b = random_window(image, boxes, (100, 128), torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (1, 100, 128)


@dataclasses.dataclass(frozen=True)
class TiledRun:
    best: Path
    big_image: Path
    big_labels: Path
    root: Path


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory: pytest.TempPathFactory):
    """A model trained on random 128 x 128 windows of 512 x 512 synthetic frames with 20-px
    cells, and one 2048 x 2048 frame of the same kind. Deterministic: seeded, deterministic
    algorithms, one thread (a briefly trained model's near-duplicate boxes must not vary from
    run to run)."""
    import yogo
    from yogo.data.synth import write_dataset

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    try:
        root = tmp_path_factory.mktemp("tiles")
        classes = ("healthy", "ring")
        common = {"cell_diameter": 20, "class_names": classes}
        split = {"split_fractions": (0.75, 0.25, 0.0)}
        ddf = write_dataset(root / "data", N_FRAMES, (512, 512), seed=3, **common, **split)
        write_dataset(root / "big", 1, (2048, 2048), seed=4, **common)
        run = yogo.train(
            yogo.TrainConfig(
                ddf=str(ddf), tile=[128, 128], epochs=EPOCHS, val_every=EPOCHS // 2,
                batch_size=8, num_workers=0, wandb=False, output_dir=str(root / "runs"),
                name="tiled",
            )
        )  # fmt: skip
        yield TiledRun(
            run / "best.pth",
            next((root / "big" / "images").iterdir()),
            next((root / "big" / "labels").iterdir()),
            root,
        )
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


# 60 epochs of 3 steps: recall ~0.99 on the big frame (30 leave it near 0.5, and a weak
# model's borderline detections make any comparison noisy).
N_FRAMES, EPOCHS = 24, 60


@pytest.mark.slow
def test_training_on_tiles_makes_the_tile_the_model_input(tiled_run: TiledRun) -> None:
    from yogo.model.checkpoint import load_checkpoint

    config = load_checkpoint(tiled_run.best).model_config
    assert config.image_hw == (128, 128)
    # Twice the largest training box side (20-px cells, jittered), at least 16.
    assert config.tile_overlap is not None and 40 <= config.tile_overlap <= 63
    saved = (tiled_run.best.parent / "config.yaml").read_text()
    assert "tile:" in saved and f"tile_overlap: {config.tile_overlap}" in saved


def _frame_boxes(rows: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, 4) x0, y0, x1, y1 in pixels from rows normalised to a frame of `hw`."""
    return rows[:, :4] * torch.tensor([hw[1], hw[0], hw[1], hw[0]], dtype=rows.dtype)


@pytest.mark.slow
def test_tiled_infer_on_a_large_frame_finds_what_direct_passes_on_its_crops_find(
    tiled_run: TiledRun,
) -> None:
    from yogo.data.images import decode_image
    from yogo.deploy.predictor import load_predictor

    predictor = load_predictor(tiled_run.best, "cpu")
    frame = decode_image(tiled_run.big_image, 1)
    height, width = frame.shape[1:]
    assert (height, width) == (2048, 2048)
    thresholds = predictor.counting.thresholds
    tiled = predictor.detect_tiled(frame, predictor.overlap(None), thresholds, 0.5)
    found = _frame_boxes(tiled, (height, width))
    # Direct passes on the 256 tile-sized crops of a plain 16 x 16 grid (no overlap), each
    # keeping the objects it sees whole, away from its edges (a cut object is the crop's
    # problem, not the merge's): 16 px, a third of the overlap.
    side, margin, direct = 128, 16, []
    for top in range(0, height, side):
        for left in range(0, width, side):
            crop = np.ascontiguousarray(frame[None, :, top : top + side, left : left + side])
            boxes = predictor.detect(crop, thresholds, 0.5)[0][:, :4] * side
            inside = ((boxes[:, :2] >= margin) & (boxes[:, 2:] <= side - margin)).all(dim=1)
            direct.append(boxes[inside] + torch.tensor([left, top, left, top]))
    reference = torch.cat(direct)
    assert len(reference) > 500  # a real comparison: the crops' interiors hold ~700 cells
    iou = box_iou(reference, found)
    matched = (iou.max(dim=1).values >= 0.5).float().mean()
    assert matched >= 0.99, f"{float(matched):.4f} of {len(reference)} direct detections"
    assert int(((iou >= 0.5).sum(dim=1) > 1).sum()) == 0  # none found twice
    # Against the frame's labels: found, and none counted twice across a seam. A detection
    # is kept only from the tile whose core holds its centre, so two detections of one object
    # with centres in different cores came from two tiles (the model's own near-duplicates
    # within one tile are what a direct pass gives too).
    labels = torch.from_numpy(np.loadtxt(tiled_run.big_labels, ndmin=2)[:, 1:]).float()
    truth = torch.cat([labels[:, :2] - labels[:, 2:] / 2, labels[:, :2] + labels[:, 2:] / 2], 1)
    truth_iou = box_iou(truth * torch.tensor([width, height, width, height]), found)
    hit = truth_iou >= 0.5
    assert hit.any(dim=1).float().mean() >= 0.95
    core = _core_ids(found, predictor.overlap(None))
    across = [i for i, row in enumerate(hit) if len(set(core[row].tolist())) > 1]
    assert not across, f"labelled objects counted in two tiles: {across}"


def _core_ids(found: torch.Tensor, overlap: int) -> torch.Tensor:
    """The core (tile) each detection's centre lies in, on the 2048 x 2048 frame."""
    starts = plan_axis(2048, 128, overlap)
    seams = torch.tensor([(a + b + 128) / 2 for a, b in itertools.pairwise(starts)])
    centres = (found[:, :2] + found[:, 2:]) / 2
    row = torch.searchsorted(seams, centres[:, 1].contiguous(), right=True)
    col = torch.searchsorted(seams, centres[:, 0].contiguous(), right=True)
    return row * len(starts) + col


@pytest.mark.slow
def test_yogo_infer_tiles_large_frames_and_leaves_model_sized_ones_as_they_were(
    tiled_run: TiledRun, run_cli, tmp_path: Path
) -> None:
    from PIL import Image

    big = tmp_path / "big"
    big.mkdir()
    pixels = np.asarray(Image.open(tiled_run.big_image))
    Image.fromarray(pixels[:600, :700]).save(big / "part.png")
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(pixels[:128, :128]).save(small / "tile.png")

    def count(images: Path, out: str, *flags: str) -> int:
        result = run_cli(
            "infer", tiled_run.best, "--path-to-images", images, "--output-dir",
            tmp_path / out, "--save-preds", "--num-workers", "0", *flags,
        )  # fmt: skip
        assert result.code == 0, result.err
        return sum(len(f.read_text().splitlines()) for f in (tmp_path / out / "labels").iterdir())

    from yogo.model.checkpoint import load_checkpoint

    overlap = str(load_checkpoint(tiled_run.best).model_config.tile_overlap)
    tiled = count(big, "tiled")
    assert tiled == count(big, "forced", "--tiles", "--tile-overlap", overlap)
    assert count(big, "wider", "--tile-overlap", "60") > 250  # an overlap of one's own
    refused = run_cli("infer", tiled_run.best, "--path-to-images", big, "--tile-overlap", "64",
                      "--output-dir", tmp_path / "refused")  # fmt: skip
    assert refused.code == 2 and "--tile-overlap must be under half" in refused.err
    resized = count(big, "resized", "--no-tiles")
    # The 600 x 700 frame holds ~350 cells: tiles find them at their own size; resized to the
    # 128 x 128 input they are 4 px and mostly lost.
    assert tiled > 250 and resized < tiled / 2
    # A frame of the model's size takes today's path: the same detections either way.
    same = [count(small, "auto"), count(small, "plain", "--no-tiles")]
    assert same[0] == same[1]
    auto = (tmp_path / "auto" / "labels" / "tile.txt").read_text()
    assert auto == (tmp_path / "plain" / "labels" / "tile.txt").read_text()


def test_untiled_model_files_are_as_before_and_tiled_ones_round_trip() -> None:
    from conftest import model_config

    from yogo.model.network import ModelConfig

    plain = model_config()
    assert "tile_overlap" not in plain.to_dict()
    assert ModelConfig.from_dict(plain.to_dict()) == plain
    tiled = dataclasses.replace(plain, tile_overlap=40)
    assert tiled.to_dict()["tile_overlap"] == 40
    assert ModelConfig.from_dict(tiled.to_dict()) == tiled


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tile", "4", "4"], "--tile must be two sizes >= 8"),
        (["--tile", "64", "64", "--tile-overlap", "32"], "--tile-overlap must be under half"),
        (["--tile", "64", "64", "--tile-overlap", "-1"], "--tile-overlap must be >= 0"),
        (["--tile", "64", "64", "--image-hw", "96", "96"], "--tile and --image-hw"),
        (["--tile", "64", "64", "--copy-paste", "0.5"], "--copy-paste does not work with --tile"),
    ],
)
def test_bad_tile_flags_are_refused_in_the_users_words(
    run_cli, tmp_path: Path, flags: list[str], message: str
) -> None:
    from yogo.data.synth import write_dataset

    ddf = write_dataset(tmp_path / "data", 4, (96, 96))
    result = run_cli("train", ddf, "--no-wandb", "--output-dir", tmp_path / "runs", *flags)
    assert result.code == 2 and message in result.err


def test_infer_refuses_tiles_with_crop_height(run_cli, tmp_path: Path) -> None:
    result = run_cli("infer", tmp_path / "m.pth", "--path-to-images", tmp_path, "--tiles",
                     "--crop-height", "0.5")  # fmt: skip
    assert result.code == 2 and "--tiles and --crop-height" in result.err
