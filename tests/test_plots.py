"""The evaluation pictures (yogo.evaluation.plots)
and the P/R/F1-against-threshold curves behind them;
`yogo test --plots DIR`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yogo.evaluation.counting import fit_count_model
from yogo.evaluation.metrics import DetectionMetrics
from yogo.evaluation.plots import THRESHOLDS, planned, plot_evaluation


def _metrics() -> DetectionMetrics:
    """Two classes: class 0 found at scores 0.9 and 0.6 (one of two labels), plus a false
    positive at 0.3; class 1 labelled once, never found."""
    metrics = DetectionMetrics(("cell", "parasite"))
    det = torch.tensor(
        [
            [0.1, 0.1, 0.2, 0.2, 0.9, 1.0, 0],
            [0.5, 0.5, 0.6, 0.6, 0.6, 1.0, 0],
            [0.8, 0.8, 0.9, 0.9, 0.3, 1.0, 0],
        ]
    )
    truth = torch.tensor(
        [[0, 0.1, 0.1, 0.2, 0.2], [0, 0.5, 0.5, 0.6, 0.6], [1, 0.3, 0.3, 0.4, 0.4]]
    )
    metrics.update([det], [truth])
    return metrics


def test_precision_recall_f1_against_the_score_threshold() -> None:
    curves = _metrics().threshold_curves(np.array([0.0, 0.5, 0.7, 0.95]))
    precision, recall, f1 = curves["cell"]
    # nothing kept at 0.95: precision is undefined there (it was drawn as 1.0)
    np.testing.assert_allclose(precision, [2 / 3, 1, 1, np.nan])
    np.testing.assert_allclose(recall, [1, 1, 0.5, 0])
    np.testing.assert_allclose(f1, [0.8, 1, 2 / 3, 0])
    np.testing.assert_allclose(curves["parasite"][1], 0)  # labelled, never found
    assert np.isnan(curves["parasite"][0]).all()  # ... so no precision to draw


def test_every_picture_is_written_and_readable_size(tmp_path: Path) -> None:
    frames = [np.full((1, 96, 128), 128, np.uint8)]  # the frame the metrics' image came from
    metrics = _metrics()
    counting = fit_count_model(metrics, "the test's frame")
    written = plot_evaluation(metrics, tmp_path / "val", counting, frames)
    assert written == planned(tmp_path / "val")
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 300, path
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 10, path  # something is drawn
    assert len(THRESHOLDS) == 101


@pytest.mark.slow
def test_yogo_test_plots(trained_run, tmp_path: Path, run_cli) -> None:
    folder = tmp_path / "pictures"
    result = run_cli("test", trained_run.run / "best.pth", trained_run.ddf, "--plots", folder)
    assert result.code == 0, result.err
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".test-test.yogo-files", *(p.name for p in planned(folder / "test"))]
    )
    again = run_cli("test", trained_run.run / "best.pth", trained_run.ddf, "--plots", folder)
    assert again.code == 2 and "--force" in again.err
    assert "choose another --plots" in again.err  # it said "give another file name"
    forced = run_cli(
        "test", trained_run.run / "best.pth", trained_run.ddf, "--plots", folder, "--force"
    )
    assert forced.code == 0


def test_frame_errors_count_misses_and_extras_at_the_threshold() -> None:
    (errors,) = _metrics().frame_errors()  # the 0.3 detection is under objectness 0.5
    assert (errors["misses"], errors["extras"]) == (1, 0)  # the parasite was never found
    assert errors["true"].tolist() == [2, 1] and errors["pred"].tolist() == [2, 0]
    low = DetectionMetrics(("cell", "parasite"), obj_thresh=0.2)
    low.images = _metrics().images
    (errors,) = low.frame_errors()
    assert (errors["misses"], errors["extras"]) == (1, 1)
    assert errors["extra_score"] == pytest.approx(0.3)


@pytest.mark.slow
def test_yogo_test_worst_frames(trained_run, tmp_path: Path, run_cli) -> None:
    import csv

    folder = tmp_path / "pictures"
    args = ["test", trained_run.run / "best.pth", trained_run.ddf, "--plots", folder]
    result = run_cli(*args, "--worst", "2", "--obj-thresh", "0.3")
    assert result.code == 0, result.err
    with open(folder / "test_worst.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9  # every test frame (48 x 0.2), worst first
    errors = [int(r["misses"]) + int(r["extras"]) for r in rows]
    assert errors == sorted(errors, reverse=True)
    drawn = sorted((folder / "test_worst").iterdir())
    assert len(drawn) == 2 and drawn[0].name.startswith("01_")
    assert f"{rows[0]['misses']}missed" in drawn[0].name
    assert Path(rows[0]["frame"]).stem in drawn[0].name
    alone = run_cli("test", trained_run.run / "best.pth", trained_run.ddf, "--worst", "2")
    assert alone.code == 2 and "--plots" in alone.err
