"""Run output helpers: progress bars, metrics.csv, training curves."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from yogo.log import progress
from yogo.training.report import CURVES_EVERY_S, MetricsCSV, TrainingCurves, plot_training_curves


def test_progress_bars_start_no_thread() -> None:
    """A thread that ends while a loader forks its workers can deadlock the new worker
    (CPython 3.11); tqdm's monitor thread came and went with every epoch's bar."""
    before = set(threading.enumerate())
    bar = progress(range(3), "epoch 1/1")
    assert set(threading.enumerate()) - before == set()
    assert list(bar) == [0, 1, 2]
    bar.close()


def test_metrics_csv_keeps_its_first_columns_across_a_resume(tmp_path: Path) -> None:
    csv = MetricsCSV(tmp_path / "metrics.csv")
    csv.append({"epoch": 1, "loss": 0.5, "val_mAP50": None})
    again = MetricsCSV(tmp_path / "metrics.csv")
    assert again.read() == [{"epoch": 1.0, "loss": 0.5, "val_mAP50": None}]
    again.append({"epoch": 2, "val_mAP50": 0.25, "loss": 0.4})
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,loss,val_mAP50", "1,0.5,", "2,0.4,0.25"]


def _rows(with_val: bool) -> list[dict[str, float | None]]:
    """metrics.csv rows of a 4-epoch run; with val values every other epoch, or none."""
    rows: list[dict[str, float | None]] = []
    for epoch in range(1, 5):
        val = with_val and epoch % 2 == 0
        rows.append(
            {
                "epoch": epoch,
                "loss": 1.0 / epoch,
                "objectness": 0.5 / epoch,
                "box": 0.3 / epoch,
                "class": 0.2 / epoch,
                "lr": 3e-4 / epoch,
                "val_loss": 0.9 / epoch if val else None,
                "val_mAP50": 0.2 * epoch if val else None,
                "val_mAP50_95": 0.1 * epoch if val else None,
            }
        )
    return rows


@pytest.mark.parametrize(("with_val", "panels"), [(True, 3), (False, 2)])
def test_training_curves_draw_no_empty_panel_and_warn_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_val: bool, panels: int
) -> None:
    """A run without a val split drew an empty "validation" panel, and matplotlib warned
    "No artists with labels found to put in legend" into the training output."""
    from matplotlib.figure import Figure

    saved: list[Figure] = []
    save = Figure.savefig

    def keep(fig: Figure, *args: Any, **kwargs: Any) -> None:
        saved.append(fig)
        save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_training_curves(_rows(with_val), tmp_path / "training_curves.png")
    assert [str(w.message) for w in caught] == []
    (fig,) = saved
    assert len(fig.axes) == panels
    assert all(ax.has_data() for ax in fig.axes)
    assert (tmp_path / "training_curves.png").stat().st_size > 0


def test_training_curves_are_redrawn_at_most_once_a_minute_and_at_the_end(tmp_path: Path) -> None:
    """Drawing took about a second after every epoch, which every rank waited for: in a run
    of short epochs (the test suite's), more than the training."""
    path = tmp_path / "training_curves.png"
    curves = TrainingCurves(path)
    rows = _rows(with_val=True)
    curves.update(rows[:1])  # the first epoch of a run that started just now
    assert not path.exists()
    curves.update(rows[:2], now=True)  # the run stops or ends
    drawn = path.stat().st_ino  # each drawing is a new file (written atomically)
    curves.update(rows[:3])
    assert path.stat().st_ino == drawn
    curves.drawn_at -= CURVES_EVERY_S  # a minute later
    curves.update(rows[:3])
    assert path.stat().st_ino != drawn and curves.rows_drawn == 3
    drawn = path.stat().st_ino
    curves.update(rows[:3], now=True)  # nothing new: not drawn again
    assert path.stat().st_ino == drawn


def test_a_log_line_never_shares_a_line_with_a_progress_bar(capsys) -> None:
    """ "first optimizer step ..." was printed after the bar's text, on the bar's line."""
    import logging
    import sys

    from tqdm import tqdm

    from yogo.log import configure_console

    configure_console()
    bar = tqdm(total=10, file=sys.stderr)
    bar.update(3)
    logging.getLogger("yogo.training").info("first optimizer step 1.0 s after start")
    bar.close()
    err = capsys.readouterr().err
    (line,) = [line for line in err.split("\n") if "first optimizer step" in line]
    assert line.split("\r")[-1] == "first optimizer step 1.0 s after start", repr(line)
