"""The sbatch scripts outside SLURM: a plain `bash scripts/submit_1gpu.sh ...` says how to
submit them (the scripts under a real SLURM: tests/slurm)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def _table_rows(table: str) -> dict[tuple[str, ...], list[str]]:
    """The GPU check's Markdown rows by (measurement, batch, cache, compile, device)."""
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ")]
    return {tuple(c.strip() for c in row[:5]): [c.strip() for c in row[5:]] for row in rows[1:]}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_gpu_check_dry_run_writes_every_row_it_promises(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh --dry-run: the same steps as on the GPU (the tests marked cuda,
    bench_train, infer_speed, the table), tiny, on this CPU (about 3 minutes here)."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in done.stdout  # the device tool's reply carries the end of the output
    rows = _table_rows(table)
    end_to_end = "train, end to end (`yogo train`)"
    promised = [
        *((end_to_end, b, cache, "off", "cpu") for cache in ("none", "ram") for b in ("4", "8")),
        (end_to_end, "8", "ram", "on", "cpu"),
        *(("train, model only", b, "—", "off", "cpu") for b in ("4", "8")),
        ("train, model only", "8", "—", "on", "cpu"),
    ]
    for model in ("infer .pth (PyTorch fp32)", "infer .onnx (onnxruntime fp32)"):
        promised += [(model, b, "—", "off", "cpu") for b in ("1", "2")]
        promised.append((f"{model}, end to end", "8", "—", "off", "cpu"))
    assert sorted(rows) == sorted(promised)
    for key, (images_per_s, note) in rows.items():
        assert float(images_per_s) > 0 and "failed" not in note, (key, note)
    assert "Tests marked `cuda` (`pytest -m cuda`" in table and "5 skipped" in table
    assert "needs a CUDA GPU (torch.cuda.is_available() is False here)" in table
    log = (tmp_path / "gpu_check.log").read_text()
    assert "===== tests: ok" in log and "===== infer:cpu:PyTorch fp32,onnxruntime fp32: ok" in log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.log", "gpu_check.md"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU this would run the whole check")
def test_the_gpu_check_without_a_gpu_says_so_and_starts_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    for args, message in (([], "torch sees no CUDA GPU here"), (["--gpus"], "usage: bash")):
        done = subprocess.run(
            ["bash", "benchmarks/gpu_check.sh", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not any((tmp_path / "out").glob("*.md"))


def test_the_gpu_table_keeps_the_rows_of_a_step_that_ran_out_of_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that times out, fails or finds the budget spent keeps its rows (a dash and the
    reason): the table says what was not measured instead of leaving it out."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_table", REPO / "benchmarks/gpu_table.py")
    assert spec is not None and spec.loader is not None
    gpu_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_table)
    (tmp_path / "machine.txt").write_text("Machine: NVIDIA H200, 16 CPU cores\n")
    (tmp_path / "ok.log").write_text(
        "epoch 1 train images/s: 101.5\nepoch 2 train images/s: 300.0\n"
        "train images/s: 300.0\nmodel-only images/s: 600.0\nend-to-end / model-only: 0.50\n"
    )
    (tmp_path / "steps.tsv").write_text(
        f"train:64:none:off:cuda:model\tok\t30\t{tmp_path / 'ok.log'}\n"
        f"train:128:ram:on:cuda:model\ttimed out\t120\t{tmp_path / 'gone.log'}\n"
        f"infer:cuda:PyTorch fp32\tskipped\t0\t{tmp_path / 'never.log'}\n"
        f"infer:cpu:onnxruntime fp32\texit 1\t3\t{tmp_path / 'never.log'}\n"
    )
    monkeypatch.setattr(sys, "argv", ["gpu_table.py", str(tmp_path)])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        gpu_table.main()
    rows = _table_rows(out.getvalue())
    end_to_end = "train, end to end (`yogo train`)"
    assert rows[(end_to_end, "64", "none", "off", "cuda")][0] == "300.0"
    assert (
        "(epoch 1: 101.5); 0.50 of model-only" in rows[(end_to_end, "64", "none", "off", "cuda")][1]
    )
    assert rows[("train, model only", "64", "—", "off", "cuda")][0] == "600.0"
    assert rows[(end_to_end, "128", "ram", "on", "cuda")] == ["—", "timed out"]
    assert rows[("train, model only", "128", "—", "on", "cuda")] == ["—", "timed out"]
    pth = [v for k, v in rows.items() if k[0].startswith("infer .pth")]
    onnx = [v for k, v in rows.items() if k[0].startswith("infer .onnx")]
    assert len(pth) == len(onnx) == 3
    assert all(v == ["—", "skipped: the 8-minute budget was spent"] for v in pth)
    assert all(v == ["—", "failed (exit 1; see gpu_check.log)"] for v in onnx)
