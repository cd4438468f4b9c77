"""Synthetic smear data: deterministic, valid labels, imbalanced classes, visible objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from yogo import DatasetDefinition
from yogo.data.scan import scan_dataset
from yogo.data.synth import SmearSettings, default_class_frequencies, make_frame, write_dataset
from yogo.dataset_check import check_report


def test_same_seed_same_files(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 3, (64, 80), seed=7)
    write_dataset(tmp_path / "b", 3, (64, 80), seed=7)
    write_dataset(tmp_path / "c", 3, (64, 80), seed=8)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    assert all(same)
    assert (tmp_path / "a/labels/frame_0000.txt").read_text() != (
        tmp_path / "c/labels/frame_0000.txt"
    ).read_text()


def test_written_dataset_is_clean_gray_and_imbalanced(tmp_path: Path) -> None:
    ddf_path = write_dataset(tmp_path / "s", 12, (96, 128), ("healthy", "ring", "troph"), seed=1)
    ddf = DatasetDefinition.from_yaml(ddf_path)
    scan = scan_dataset(ddf)
    report = check_report(ddf, scan)
    assert report["trainable"] and not [p for p in report["problems"] if p["severity"] == "error"]
    assert report["channels"] == {"1": 12}
    total = {
        c: sum(report["splits"][s]["objects_per_class"][c] for s in report["splits"])
        for c in ddf.class_names
    }
    assert total["healthy"] > 5 * total["ring"] > 0 and total["ring"] > total["troph"] > 0
    assert report["grid"]["objects_lost"] <= 0.02 * sum(total.values())
    with Image.open(ddf.samples[0].image) as image:
        assert image.mode == "L" and image.size == (128, 96)


def test_objects_are_darker_than_the_background_and_near_uniform() -> None:
    rng = np.random.default_rng(0)
    pixels, boxes = make_frame(
        rng, SmearSettings(image_hw=(128, 160)), default_class_frequencies(3)
    )
    height, width = pixels.shape
    assert len(boxes) > 20
    inside = np.zeros_like(pixels, dtype=bool)
    for _, xc, yc, w, h in boxes:
        x0, x1 = int((xc - w / 4) * width), int((xc + w / 4) * width)
        y0, y1 = int((yc - h / 4) * height), int((yc + h / 4) * height)
        inside[y0:y1, x0:x1] = True
    assert pixels[inside].mean() < pixels[~inside].mean() - 20
    plain = boxes[boxes[:, 0] != 5]
    assert plain[:, 3].std() / plain[:, 3].mean() < 0.15


def test_rare_classes_look_different_from_healthy_cells() -> None:
    rng = np.random.default_rng(1)
    frequencies = np.array([1 / 3, 1 / 3, 1 / 3])
    pixels, boxes = make_frame(rng, SmearSettings(image_hw=(192, 256)), frequencies)
    height, width = pixels.shape
    darkest = {0: [], 1: [], 2: []}
    for c, xc, yc, w, h in boxes:
        if w * width < 10 or h * height < 10:  # cut by the frame edge
            continue
        y, x = int(yc * height), int(xc * width)
        darkest[int(c)].append(pixels[y - 3 : y + 4, x - 3 : x + 4].min())
    assert np.mean(darkest[1]) < np.mean(darkest[0]) - 25
    assert np.mean(darkest[2]) < np.mean(darkest[0]) - 25


def test_cell_diameter_option(tmp_path: Path, run_cli) -> None:
    result = run_cli(
        "synth",
        tmp_path / "big",
        "--num-images",
        "2",
        "--image-hw",
        "96",
        "128",
        "--cell-diameter",
        "20",
    )
    assert result.code == 0, result.err
    ddf = DatasetDefinition.from_yaml(tmp_path / "big" / "ddf.yml")
    report = check_report(ddf, scan_dataset(ddf))
    assert 17 <= report["object_size_px"]["median_w"] <= 21
    bad = run_cli("synth", tmp_path / "bad", "--num-images", "2", "--cell-diameter", "200")
    assert bad.code == 2 and "--cell-diameter must be between 4 and half" in bad.err


def test_classes_of_other_sizes_and_looks(tmp_path: Path, run_cli) -> None:
    """A small dark class at 0.35x and a large pale one at 2x a cell's diameter: the boxes have
    those sizes, the small class is darker than a cell, the large one paler."""
    flags = ["--num-images", "6", "--class-names", "cell", "ring", "small", "large"]
    flags += ["--class-frequencies", "1,0.1,0.3,0.2", "--class-sizes", "1,1,0.35,2"]
    flags += ["--class-looks", "plain,ring,dark,pale", "--seed", "3"]
    result = run_cli("synth", tmp_path / "d", *flags)
    assert result.code == 0, result.err
    ddf = DatasetDefinition.from_yaml(tmp_path / "d" / "ddf.yml")
    samples = [s for split in scan_dataset(ddf).splits.values() for s in split]
    widths: dict[int, list[float]] = {0: [], 2: [], 3: []}
    means: dict[int, list[float]] = {0: [], 2: [], 3: []}
    for sample in samples:
        pixels = np.asarray(Image.open(sample.image), dtype=np.float64)
        h, w = pixels.shape
        for c, xc, yc, bw, bh in sample.boxes:
            if int(c) not in widths or not (0.1 < xc < 0.9 and 0.1 < yc < 0.9):
                continue  # away from the edges: whole boxes
            widths[int(c)].append(max(bw * w, bh * h))
            y, x = int(yc * h), int(xc * w)
            means[int(c)].append(pixels[y - 1 : y + 2, x - 1 : x + 2].mean())
    cell, small, large = (float(np.median(widths[c])) for c in (0, 2, 3))
    assert 0.3 < small / cell < 0.42 and 1.8 < large / cell < 2.2
    assert np.median(means[2]) < np.median(means[0]) < np.median(means[3])


def test_explicit_default_sizes_and_looks_give_the_same_frames() -> None:
    """The per-class settings leave the default data as it was (same draws, same pixels)."""
    frequencies = default_class_frequencies(3)
    plain = make_frame(np.random.default_rng(5), SmearSettings(), frequencies)
    explicit = SmearSettings(class_sizes=(1, 1, 1), class_looks=("plain", "ring", "blob"))
    same = make_frame(np.random.default_rng(5), explicit, frequencies)
    assert np.array_equal(plain[0], same[0]) and np.array_equal(plain[1], same[1])


def test_crowded_objects_of_varied_size_and_brightness(tmp_path: Path, run_cli) -> None:
    """A nuclei-like set: one class, crowded, sizes and darkness spread wide."""
    common = ("--num-images", "4", "--classes", "nucleus", "--seed", "2")
    run_cli("synth", tmp_path / "plain", *common)
    result = run_cli(
        "synth",
        tmp_path / "crowd",
        *common,
        "--size-jitter",
        "0.25",
        "--coverage",
        "0.5",
        "--brightness-jitter",
        "0.4",
    )
    assert result.code == 0, result.err

    def boxes(name: str) -> np.ndarray:
        files = sorted((tmp_path / name / "labels").glob("*.txt"))
        return np.concatenate([np.loadtxt(f, ndmin=2) for f in files])

    plain, crowd = boxes("plain"), boxes("crowd")
    assert len(crowd) > 1.3 * len(plain)
    assert crowd[:, 3].std() / crowd[:, 3].mean() > 2 * plain[:, 3].std() / plain[:, 3].mean()


def test_bad_per_class_settings_exit_2(tmp_path: Path, run_cli) -> None:
    for flag, value, message in [
        ("--class-sizes", "1,1", "--class-sizes needs 3 numbers"),
        ("--class-sizes", "1,x,1", "--class-sizes must be comma-separated numbers"),
        ("--class-sizes", "1,1,9", "between 0.2 and 3"),
        ("--class-looks", "plain,ring,sparkly", "--class-looks needs 3 names"),
        ("--coverage", "0.9", "--coverage must be between 0 and 0.6"),
        ("--size-jitter", "-1", "--size-jitter must be between 0 and 0.3"),
        ("--brightness-jitter", "2", "--brightness-jitter must be between 0 and 0.5"),
    ]:
        result = run_cli("synth", tmp_path / flag / value, "--num-images", "1", flag, value)
        assert result.code == 2 and message in result.err, (flag, value, result.err)
        assert not (tmp_path / flag / value).exists()
