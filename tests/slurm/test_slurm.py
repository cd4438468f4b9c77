"""The sbatch scripts on a real SLURM (tests/slurm/cluster.sh: slurmctld, slurmd and munge on
this machine, fake GPUs, CPU training with gloo): a SIGUSR1 requeues the job, preemption
requeues it, and either way it ends with the weights of an uninterrupted run.

Needs root (the daemons) and Debian's slurm packages (installed when missing); skipped
otherwise, unless YOGO_REQUIRE_SLURM=1 (CI) makes that a failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from yogo.data.synth import write_dataset

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
CLUSTER = Path(__file__).with_name("cluster.sh")
YOGO = str(Path(sys.executable).with_name("yogo"))  # the yogo of this environment


@pytest.fixture(scope="module")
def cluster():
    problem = None
    if os.geteuid() != 0:
        problem = "the SLURM daemons need root"
    elif not shutil.which("apt-get") and not shutil.which("slurmctld"):
        problem = "no slurm packages and no apt-get to install them"
    if problem:
        if os.environ.get("YOGO_REQUIRE_SLURM") == "1":
            pytest.fail(f"YOGO_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)
    started = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield
    finally:
        subprocess.run(["bash", str(CLUSTER), "down"], check=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm")
    return write_dataset(root / "data", 24, (64, 96), seed=4, split_fractions=(0.75, 0.25, 0.0))


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frames large enough that the epochs after the first take ~15 s here: preemption takes
    SLURM up to ~7 s on a loaded machine, and a job that ends first is not preempted at all."""
    root = tmp_path_factory.mktemp("slurm_slow")
    return write_dataset(root / "data", 64, (256, 384), seed=4, split_fractions=(0.75, 0.25, 0.0))


def train_args(ddf: Path, out: Path, epochs: int = 3) -> list[str]:
    return [
        YOGO,
        "train",
        str(ddf),
        "--epochs",
        str(epochs),
        "-bs",
        "2",
        "--output-dir",
        str(out),
        "--num-workers",
        "0",
        "--no-wandb",
    ]


def sbatch(script: str, command: list[str], cwd: Path, *options: str) -> str:
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--cpus-per-gpu=1",
            *options,
            str(REPO / "scripts" / script),
            *command,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return submitted.stdout.strip().split(";")[0]


def job(job_id: str) -> dict[str, str]:
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", shown))


def wait_for(condition, timeout: float = 300, what: str = "", log: Path | None = None) -> float:
    start = time.time()
    while not condition():
        if time.time() - start > timeout:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            pytest.fail(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)
    return time.time() - start


def running_again(job_id: str, log: Path) -> None:
    """Wait until the job has been requeued once and runs again."""

    def requeued() -> bool:
        shown = job(job_id)
        if shown["JobState"] == "COMPLETED":
            pytest.fail(f"job {job_id} ended without a requeue\n{log.read_text()[-4000:]}")
        return shown["Restarts"] == "1" and shown["JobState"] == "RUNNING"

    wait_for(requeued, what=f"job {job_id} requeued and running again", log=log)


def finished(job_id: str, log: Path) -> None:
    wait_for(
        lambda: job(job_id)["JobState"] not in ("PENDING", "RUNNING", "COMPLETING"),
        what=f"job {job_id}",
    )
    state = job(job_id)["JobState"]
    assert state == "COMPLETED", f"{state}\n{log.read_text()[-4000:]}"


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(run / "last.pth", weights_only=True)
    assert payload["finished"] is True
    return payload["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []


def steps_at_stop_and_resume(log: str) -> tuple[int, int]:
    stopped = re.search(r"stopped by \w+ after optimizer step (\d+)", log)
    resumed = re.search(r"resuming .* at optimizer step (\d+)", log)
    assert stopped and resumed, log[-4000:]
    return int(stopped.group(1)), int(resumed.group(1))


def test_usr1_requeues_and_the_job_ends_as_if_uninterrupted(cluster, data, tmp_path) -> None:
    """The reference is the multi-node script on one node with 2 GPUs (the count is read from
    the allocation, not from the script): it must train the 2-GPU script's run exactly."""
    out = tmp_path / "out"
    reference = sbatch(
        "submit_multinode.sh", train_args(data, out), tmp_path, "--nodes=1", "--gpus-per-node=2"
    )
    stopped = sbatch("submit_2gpu.sh", train_args(data, out), tmp_path)
    run, log = out / f"slurm-{stopped}", tmp_path / f"yogo-{stopped}.out"
    wait_for(lambda: (run / "last.pth").exists(), what="epoch 1")  # then inside epoch 2
    signalled = time.time()
    subprocess.run(["scancel", "--signal=USR1", stopped], check=True)
    running_again(stopped, log)
    back = time.time() - signalled
    finished(stopped, log)
    finished(reference, tmp_path / f"yogo-{reference}.out")

    text = log.read_text()
    assert "stopped by SIGUSR1" in text and "requeueing the SLURM job" in text
    assert "(restart 1)" in text  # the same command ran again and resumed by itself
    stop_step, resume_step = steps_at_stop_and_resume(text)
    assert resume_step == stop_step  # no optimizer step lost
    assert_same_weights(out / f"slurm-{reference}", run)
    for job_id in (reference, stopped):
        assert "world_size: 2" in (out / f"slurm-{job_id}" / "config.yaml").read_text()
    print(
        f"\nSIGUSR1 -> requeued job running again: {back:.1f} s; steps lost: "
        f"{stop_step - resume_step}"
    )


def test_preemption_requeues_and_the_job_ends_as_if_uninterrupted(
    cluster, slow_data, tmp_path
) -> None:
    out = tmp_path / "out"
    reference = subprocess.Popen(
        [*train_args(slow_data, out), "--name", "reference"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    low = sbatch("submit_1gpu.sh", train_args(slow_data, out), tmp_path, "--partition=low")
    log = tmp_path / f"yogo-{low}.out"
    run = out / f"slurm-{low}"
    wait_for(lambda: (run / "last.pth").exists(), what="epoch 1")
    preempted = time.time()
    high = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--partition=high",
            "--gpus-per-node=4",
            "--output=/dev/null",
            "--wrap",
            "sleep 3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    running_again(low, log)
    back = time.time() - preempted
    finished(low, log)
    assert job(high)["JobState"] == "COMPLETED"
    assert reference.wait(timeout=300) == 0, reference.stderr.read() if reference.stderr else ""

    text = log.read_text()
    assert "stopped by SIGTERM" in text and "requeueing job" in text
    stop_step, resume_step = steps_at_stop_and_resume(text)
    assert resume_step == stop_step
    assert_same_weights(out / "reference", run)
    print(f"\npreempted -> running again: {back:.1f} s; steps lost: {stop_step - resume_step}")


def test_the_four_gpu_script_starts_one_rank_per_gpu(cluster, data, tmp_path) -> None:
    out = tmp_path / "out"
    four = sbatch("submit_4gpu.sh", train_args(data, out, epochs=1), tmp_path)
    finished(four, tmp_path / f"yogo-{four}.out")
    assert "world_size: 4" in (out / f"slurm-{four}" / "config.yaml").read_text()


def test_a_script_without_a_command_says_how_to_use_it(cluster, tmp_path) -> None:
    job_id = sbatch("submit_1gpu.sh", [], tmp_path)
    wait_for(
        lambda: job(job_id)["JobState"] not in ("PENDING", "RUNNING", "COMPLETING"), what="the job"
    )
    assert job(job_id)["ExitCode"] == "2:0"
    assert "usage: sbatch" in (tmp_path / f"yogo-{job_id}.out").read_text()


def test_the_folds_script_trains_one_fold_per_array_task(cluster, tmp_path) -> None:
    """Two specimens, --folds 2: two array tasks, each holding out the other specimen; then
    `yogo test --folds` sums them up."""
    lines = ["class_names: [healthy, ring, trophozoite]", "dataset_paths:"]
    for seed, name in enumerate(("slide1", "slide2")):
        write_dataset(tmp_path / name, 8, (64, 96), seed=seed)
        lines += [f"  {name}: {{image_path: {name}/images, label_path: {name}/labels}}"]
    ddf = tmp_path / "folds.yml"
    ddf.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    command = [*train_args(ddf, out, epochs=1), "--folds", "2"]
    array = sbatch("submit_folds.sh", command, tmp_path, "--array=0-1")
    for task in ("0", "1"):
        finished(f"{array}_{task}", tmp_path / f"yogo-{array}_{task}.out")
    runs = sorted(out.glob(f"folds-{array}-fold*"))
    assert [r.name for r in runs] == [f"folds-{array}-fold0", f"folds-{array}-fold1"]
    for fold, run in enumerate(runs):
        record = (run / "config.yaml").read_text()
        assert f"fold: {fold}\n" in record and "folds: 2\n" in record and "val: 8" in record
    tested = subprocess.run(
        [YOGO, "test", "--folds", *map(str, runs)], capture_output=True, text=True, cwd=tmp_path
    )
    assert tested.returncode == 0, tested.stderr
    assert "2 of 2 folds" in tested.stdout
