"""The sbatch scripts outside SLURM: a plain `bash scripts/submit_1gpu.sh ...` says how to
submit them (the scripts under a real SLURM: tests/slurm)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("submit_*.sh"))


def _sbatch(script: str) -> dict[str, str]:
    """The `#SBATCH --key=value` (or `--flag`) lines of a script."""
    lines = (REPO / "scripts" / script).read_text().splitlines()
    options = [line.removeprefix("#SBATCH --") for line in lines if line.startswith("#SBATCH --")]
    return {key: value for key, _, value in (o.partition("=") for o in options)}


def test_each_script_asks_for_what_its_name_says_and_comes_back_after_a_stop() -> None:
    """1, 2 and 4 GPUs on one node, and several nodes: what a lab picks the script by. Each is
    requeued and warned (SIGUSR1) before its time limit, so a stopped job continues."""
    gpus = {"submit_1gpu.sh": "1", "submit_2gpu.sh": "2", "submit_4gpu.sh": "4"}
    gpus["submit_folds.sh"] = "1"  # one GPU per fold, the folds as an array
    assert set(gpus) < set(SCRIPTS) and "submit_multinode.sh" in SCRIPTS
    for script in SCRIPTS:
        header = _sbatch(script)
        if script in gpus:
            assert header["nodes"] == "1" and header["gpus-per-node"] == gpus[script], script
        else:
            assert int(header["nodes"]) > 1, script
        assert "requeue" in header, script
        assert ("array" in header) == (script == "submit_folds.sh"), script
        assert header["signal"].startswith("USR1@"), script


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args", [["yogo", "train", "ddf.yml", "--epochs", "1"], []])
def test_run_without_sbatch_says_how_to_submit(script: str, args: list[str]) -> None:
    """They stopped on `SLURM_JOB_ID: unbound variable` (`set -u`), which says nothing about
    what to do instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run(
        ["bash", f"scripts/{script}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"sbatch scripts/{script} yogo train DDF" in done.stderr
    assert "unbound variable" not in done.stderr
    assert done.stdout == ""  # nothing started


def test_the_sweep_sweeps_real_flags_toward_a_logged_metric(trained_run) -> None:
    """scripts/sweep.yaml: every swept parameter is a `yogo train` flag whose value parses,
    the fixed flags too, and the metric is a column yogo logs (metrics.csv = W&B keys)."""
    import csv

    import typer
    from ruamel.yaml import YAML

    from yogo.cli import app

    sweep = YAML(typ="safe").load((REPO / "scripts" / "sweep.yaml").read_text())
    train = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = {name: p for p in train.params for name in p.opts}
    args = []
    for name, spec in sweep["parameters"].items():
        assert f"--{name}" in options, name
        value = spec["values"][0] if "values" in spec else spec["min"]
        args.append(f"--{name}={value}")  # how W&B's ${args} passes them
    command = [a for a in sweep["command"] if not a.startswith("${")]
    assert sweep["command"][:2] == ["${program}", "train"] and "${args}" in sweep["command"]
    assert sweep["program"] == "yogo"
    ctx = train.make_context("train", [*command[1:], *args])
    assert ctx.params["learning_rate"] == sweep["parameters"]["learning-rate"]["min"]
    with open(trained_run.run / "metrics.csv") as f:
        assert sweep["metric"]["name"] in next(csv.reader(f))
