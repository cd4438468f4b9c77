"""Checkpoint writes under faults: kill -9 in the middle of a write, a full disk, and the
temp files a crash leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from yogo.errors import RunError
from yogo.model.checkpoint import save_checkpoint
from yogo.outputs import remove_partial_files

# Writes checkpoint i (a 32 MB tensor filled with i) over and over, saying when each starts.
WRITER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from yogo.model.checkpoint import save_checkpoint
    from yogo.outputs import plan_folder
    path = Path(sys.argv[1])
    plan_folder(path.parent, replace=True)  # as a run plans its folder
    for i in range(1, 1000):
        print(f"writing {i}", flush=True)
        save_checkpoint(path, {"i": i, "weights": torch.full((8_000_000,), float(i))})
    """
)


def read_back(path: Path) -> int:
    """The checkpoint's number, after checking that the whole file is consistent."""
    payload = torch.load(path, weights_only=True)
    assert torch.equal(payload["weights"], torch.full((8_000_000,), float(payload["i"])))
    return int(payload["i"])


@pytest.mark.slow
def test_kill_9_during_writes_never_leaves_a_broken_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pth"
    interrupted_writes = 0
    for trial in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        for line in writer.stdout:  # let a few complete, then kill the next one mid-write
            if line.strip() == f"writing {3 + trial}":
                break
        partial, deadline = tmp_path / f".last.{writer.pid}.partial.pth", time.time() + 30
        while not partial.exists() and time.time() < deadline:
            pass  # serialising happens in memory first; the file appears for the write
        time.sleep(0.002 * trial)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        number = read_back(path)
        assert number in (2 + trial, 3 + trial)  # the previous one or the new one, whole
        leftovers = remove_partial_files(tmp_path)
        interrupted_writes += bool(leftovers)
        assert leftovers in ([], [partial])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]
        path.unlink()
    assert interrupted_writes > 0  # the kills did land inside writes


def test_disk_full_keeps_the_previous_checkpoint(small_disk: Path) -> None:
    path = small_disk / "last.pth"
    save_checkpoint(path, {"weights": torch.ones(250_000)})  # 1 MB fits
    with pytest.raises(RunError) as error:
        save_checkpoint(path, {"weights": torch.zeros(1_000_000)})  # 4 MB does not
    message = str(error.value)
    assert str(path) in message and "No space left on device" in message
    assert "previous last.pth is intact" in message
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(250_000))
    assert os.listdir(small_disk) == ["last.pth"]  # the partial file is gone too


def test_first_write_on_a_full_disk_says_nothing_was_written(small_disk: Path) -> None:
    with pytest.raises(RunError, match="nothing was written"):
        save_checkpoint(small_disk / "best.pth", {"weights": torch.zeros(2_000_000)})
    assert os.listdir(small_disk) == []


def test_only_partial_files_are_removed(tmp_path: Path) -> None:
    """Every temporary name yogo writes under (and an older yogo's `.last.pth.partial`), and
    the work folder a killed export leaves beside its output."""
    partials = [".best.pth.partial", ".label_index.77.partial.npz", ".last.12.partial.pth"]
    for name in [*partials, "last.pth", "notes.partial", ".hidden.pth"]:
        (tmp_path / name).write_text("x")
    work = tmp_path / ".best.31.partial.work"
    work.mkdir()
    (work / "model.onnx").write_text("x")
    removed = remove_partial_files(tmp_path)
    assert [p.name for p in removed] == sorted([*partials, work.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".hidden.pth",
        "last.pth",
        "notes.partial",
    ]
