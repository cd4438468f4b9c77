"""What a stopped command leaves behind: nothing. lr-find's temporary run, export's
half-written .onnx and (after kill -9) a training job's lock held by its orphaned loader
workers all outlived the stop before (issue #20).

The commands run as real processes and get real signals, sent once the file under test
exists (polled), so each stop lands while the command is writing it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from yogo.data.synth import write_dataset
from yogo.training.run_folder import RunFolder


def wait_for(found, seconds: float = 120.0) -> None:
    """Poll `found()` until it is true."""
    end = time.monotonic() + seconds
    while not found():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def yogo(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "yogo", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stopped_lr_find_leaves_no_temporary_run(tmp_path: Path, signum: int) -> None:
    ddf = write_dataset(tmp_path / "data", 12, (48, 64), seed=2)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    plot = tmp_path / "lr.png"
    args = ["lr-find", ddf, "--steps", "2000", "-bs", "2", "--num-workers", "0", "--plot", plot]
    process = yogo(*args, env={"TMPDIR": str(scratch)})
    wait_for(lambda: any((run / "config.yaml").exists() for run in scratch.iterdir()))
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}; nothing was written" in err
    assert "Traceback" not in err
    assert list(scratch.iterdir()) == [] and not plot.exists()


def test_a_stopped_export_leaves_no_partial_onnx(trained_run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    process = yogo("export", trained_run.run / "best.pth", "--output-filename", out / "m.onnx")
    wait_for(lambda: any(".partial." in p.name for p in out.iterdir()))
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert list(out.iterdir()) == []


ORPHANING = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    from yogo.data.loader import Loaders
    from yogo.training.run_folder import RunFolder

    class Slow(torch.utils.data.Dataset):
        def __len__(self):
            return 1000
        def __getitem__(self, i):
            time.sleep(0.5)
            return torch.zeros(1)

    RunFolder.hold(Path(sys.argv[1]))
    with Loaders() as loaders:
        batches = iter(loaders.make(Slow(), 1, 2, collate_fn=list))
        next(batches)  # the workers are up, each holding what it inherited
        print("training", flush=True)
        time.sleep(600)
    """
)


def test_after_kill_9_the_run_folder_is_free_at_once(tmp_path: Path) -> None:
    """The loader workers inherited the lock's descriptor; orphaned by kill -9, they held the
    run folder for seconds, and an immediate --resume was refused as a second job."""
    run = tmp_path / "run"
    run.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-c", ORPHANING, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert job.stdout is not None and job.stdout.readline() == "training\n"
    job.kill()
    job.wait()
    RunFolder.hold(run).release()  # at once: no orphan holds it
