"""Every stop can be continued: a stop signal at each point of a run's start (set-up, the
first optimizer step, mid first epoch, the first validation, the first save), Ctrl-C, a
second job on the same run folder, a crash between a metrics row and last.pth.

The signals are real, sent by the process to itself at the moment under test (the training
functions are wrapped to send them), so each case lands exactly where it is meant to.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import yogo.training.loop
from yogo.data.synth import write_dataset

TRAIN = ["--epochs", "2", "-bs", "2", "--no-wandb", "--num-workers", "0", "--seed", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stops")
    return write_dataset(root / "data", 12, (48, 64), seed=2, split_fractions=(0.67, 0.33, 0.0))


@pytest.fixture(scope="module")
def plain(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final weights of the same run never stopped."""
    from yogo.cli import main

    out = tmp_path_factory.mktemp("plain")
    with pytest.raises(SystemExit) as done:
        main(["train", str(data), *TRAIN, "--output-dir", str(out), "--name", "plain"])
    assert done.value.code == 0
    return final_weights(out / "plain")


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(run / "last.pth", weights_only=True)
    assert payload["finished"] is True
    return payload["state_dict"]


def metrics_epochs(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


def signal_on_call(
    monkeypatch: pytest.MonkeyPatch, name: str, call: int, signals: tuple[int, ...]
) -> None:
    """Wrap yogo.training.loop.NAME so that its `call`-th call first sends `signals` to us."""
    original: Callable[..., Any] = getattr(yogo.training.loop, name)
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(yogo.training.loop, name, wrapped)


def stop_at_step_2(run_cli, monkeypatch: pytest.MonkeyPatch, args: list[object]) -> None:
    """Run `yogo ARGS` and stop it with SIGTERM at its second optimizer step."""
    with monkeypatch.context() as patch:
        signal_on_call(patch, "optimizer_step", 2, (signal.SIGTERM,))
        assert run_cli(*args).code == 143


# (where, function wrapped, its call that signals): 4 optimizer steps per epoch here.
MOMENTS = [
    ("set-up", "start_state", 1),
    ("first step", "optimizer_step", 1),
    ("mid first epoch", "optimizer_step", 3),
    ("first validation", "validate", 1),
    ("first save", "save_checkpoint", 1),
]


@pytest.mark.parametrize(
    ("where", "function", "call", "signum"),
    [(*moment, signal.SIGTERM) for moment in MOMENTS]
    + [
        ("mid first epoch", "optimizer_step", 2, signal.SIGINT),  # Ctrl-C
        ("first validation", "validate", 1, signal.SIGUSR1),  # SLURM's warning signal
    ],
    ids=[m[0] for m in MOMENTS] + ["ctrl-c", "sigusr1"],
)
def test_a_stop_anywhere_in_the_first_epoch_is_continued_exactly(
    data: Path,
    plain: dict[str, torch.Tensor],
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    function: str,
    call: int,
    signum: int,
) -> None:
    args = ["train", data, *TRAIN, "--output-dir", tmp_path, "--name", "r"]
    with monkeypatch.context() as patch:
        signal_on_call(patch, function, call, (signum,))
        stopped = run_cli(*args)
    assert stopped.code == 128 + signum, stopped.err
    name = signal.Signals(signum).name
    assert f"stopped by {name}" in stopped.err
    if where == "set-up":
        assert "nothing was trained yet" in stopped.err and "--resume auto --name r" in stopped.err
        assert not (tmp_path / "r" / "last.pth").exists()
    else:
        assert "last.pth holds the exact position" in stopped.err
        last = tmp_path / "r" / "last.pth"  # the exact command to continue
        assert f"continue with: yogo train --resume {last}" in stopped.err

    resumed = run_cli(*args, "--resume", "auto")
    assert resumed.code == 0, resumed.err
    assert metrics_epochs(tmp_path / "r") == [1, 2]
    weights = final_weights(tmp_path / "r")
    assert [k for k in plain if not torch.equal(plain[k], weights[k])] == []


def test_ctrl_c_twice_stops_at_once_and_the_run_restarts(
    data: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["train", data, *TRAIN, "--output-dir", tmp_path, "--name", "r"]
    with monkeypatch.context() as patch:
        signal_on_call(patch, "optimizer_step", 2, (signal.SIGINT, signal.SIGINT))
        stopped = run_cli(*args)
    assert stopped.code == 130
    assert "Ctrl-C: saving at the next optimizer step" in stopped.err
    assert "stopped by Ctrl-C again, without saving" in stopped.err
    assert "Traceback" not in stopped.err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    # Nothing was saved: the folder holds only what a run writes before its first checkpoint.
    again = run_cli(*args)
    assert again.code == 0, again.err
    assert "stopped before its first checkpoint: starting it again there" in again.err


def test_a_crash_between_the_metrics_row_and_last_pth_repeats_no_row(
    data: Path,
    plain: dict[str, torch.Tensor],
    tmp_path: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["train", data, *TRAIN, "--output-dir", tmp_path, "--name", "r"]
    with monkeypatch.context() as patch:
        signal_on_call(patch, "optimizer_step", 6, (signal.SIGTERM,))  # epoch 2, batch 2
        assert run_cli(*args).code == 143
    run = tmp_path / "r"
    # What a crash after epoch 2's row and before its last.pth leaves behind.
    with open(run / "metrics.csv") as f:
        first_row = f.read().splitlines()[1]
    with open(run / "metrics.csv", "a") as f:
        f.write(first_row.replace("1,", "2,", 1) + "\n")
    assert metrics_epochs(run) == [1, 2]
    resumed = run_cli(*args, "--resume", "auto")
    assert resumed.code == 0, resumed.err
    assert "metrics.csv: removed 1 row(s) after the epoch last.pth holds" in resumed.err
    assert metrics_epochs(run) == [1, 2]
    weights = final_weights(run)
    assert [k for k in plain if not torch.equal(plain[k], weights[k])] == []


HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, b"pid 1 on elsewhere")
    print("held", flush=True)
    sys.stdin.read()
    """
)


def test_one_job_at_a_time_per_run_folder_and_a_dead_job_holds_nothing(
    data: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["train", data, *TRAIN, "--output-dir", tmp_path, "--name", "r"]
    stop_at_step_2(run_cli, monkeypatch, args)
    run = tmp_path / "r"
    before = (run / "last.pth").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run / ".yogo-run")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        busy = run_cli(*args, "--resume", "auto")
        assert busy.code == 2
        assert "in use by another job (pid 1 on elsewhere)" in busy.err
        assert (run / "last.pth").read_bytes() == before
    finally:
        holder.kill()  # dies without unlocking: the kernel releases the lock
        holder.wait()
    resumed = run_cli(*args, "--resume", "auto")
    assert resumed.code == 0, resumed.err


def test_resume_auto_without_name_continues_the_newest_unfinished_run_of_the_ddf(
    data: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ["--output-dir", tmp_path]
    nothing = run_cli("train", data, *TRAIN, *out, "--resume", "auto", "--epochs", "1")
    assert nothing.code == 0
    assert "no unfinished run of" in nothing.err and "starting a new run" in nothing.err
    stop_at_step_2(run_cli, monkeypatch, ["train", data, *TRAIN, *out, "--name", "later"])
    resumed = run_cli("train", data, *TRAIN, *out, "--resume", "auto")
    assert resumed.code == 0, resumed.err
    assert "continuing" in resumed.err and "later, the newest unfinished run" in resumed.err
    assert torch.load(tmp_path / "later" / "last.pth", weights_only=True)["finished"]


def test_flags_given_with_resume_are_reported_and_a_finished_run_points_to_from_pretrained(
    data: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["train", data, *TRAIN, "--output-dir", tmp_path, "--name", "r"]
    stop_at_step_2(run_cli, monkeypatch, args)
    last = tmp_path / "r" / "last.pth"
    resumed = run_cli("train", "--resume", last, "--epochs", "5", "--lr", "0.5")
    assert resumed.code == 0, resumed.err
    assert "ignored with --resume" in resumed.err
    assert "--epochs 5" in resumed.err and "--learning-rate 0.5" in resumed.err
    assert "start a new run with --from-pretrained" in resumed.err
    extend = run_cli("train", "--resume", last, "--epochs", "5")
    assert extend.code == 2 and "finished run" in extend.err
    assert f"--from-pretrained {tmp_path / 'r' / 'best.pth'} --epochs N" in extend.err
    folder = run_cli("train", "--resume", tmp_path / "r")  # the run folder works as well
    assert folder.code == 2 and "finished run" in folder.err


KILLED_IN_INDEX_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import yogo.data.index
    from yogo.cli import main

    def savez_then_die(file, **arrays):  # kill -9 halfway through the label index's write
        file.write(b"half an index")
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    yogo.data.index.np.savez = savez_then_die
    main(sys.argv[1:])
    """
)


def test_kill_9_during_the_first_label_index_write_leaves_a_restartable_run(
    data: Path, tmp_path: Path, run_cli
) -> None:
    """The label index is the first file a run writes (in the cache folder, before the run
    folder's config.yaml); a kill during that write leaves its temporary file, which must
    neither make the run folder look used nor be taken for an index."""
    args = ["train", str(data), *TRAIN, "--output-dir", str(tmp_path), "--name", "r"]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_IN_INDEX_WRITE, *args], capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    shards = tmp_path / ".yogo-cache" / "labels-v4"
    partial = [p.name for p in shards.iterdir() if ".partial" in p.name]
    assert partial and not [p for p in shards.glob("*.npz") if p.name not in partial]
    again = run_cli(*args)
    assert again.code == 0, again.err
    assert not [p for p in (tmp_path / "r").iterdir() if ".partial" in p.name]
    assert len([p for p in shards.glob("*.npz") if p.name not in partial]) == 1
    assert final_weights(tmp_path / "r")
