"""Run output helpers: progress bars, metrics.csv."""

from __future__ import annotations

import threading
from pathlib import Path

from yogo.log import MetricsCSV, progress


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
