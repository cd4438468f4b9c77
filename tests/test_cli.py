"""The `yogo` command line: exit codes, messages, `check --json`, `synth` (SPEC §1, §3.4, §10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_folder_pair, simple_ddf, write_yaml

from yogo import DatasetDefinition
from yogo.cli import expand_variadic


def test_check_good_dataset_exits_0_and_writes_json(tmp_path: Path, run_cli) -> None:
    ddf = simple_ddf(tmp_path, n=4, fractions="dataset_split_fractions: {train: 0.5, val: 0.5}")
    result = run_cli("check", ddf, "--json", tmp_path / "report.json")
    assert result.code == 0, result.err
    assert "trainable: yes" in result.out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["trainable"] is True
    assert report["splits"]["train"]["images"] == 2 and report["splits"]["val"]["images"] == 2
    for key in (
        "class_names",
        "image_sizes",
        "channels",
        "object_size_px",
        "anchor",
        "grid",
        "problems",
        "problem_counts",
        "split_fractions",
        "bad_labels",
    ):
        assert key in report
    assert not list(tmp_path.glob(".*partial"))


def test_check_bad_labels_exits_2_and_drop_makes_it_trainable(tmp_path: Path, run_cli) -> None:
    ddf = simple_ddf(tmp_path, n=3)
    (tmp_path / "set/labels/s001.txt").write_text("0 0.5 0.5 0.1 0.1\n9 0.5 0.5 0.1 0.1\n")
    result = run_cli("check", ddf)
    assert result.code == 2
    assert "set/labels/s001.txt:2: error: class 9 out of range 0..1" in result.out
    assert "trainable: no" in result.out
    result = run_cli("check", ddf, "--bad-labels", "drop")
    assert result.code == 0
    assert "(dropped row)" in result.out


def test_check_image_hw_and_split_override(tmp_path: Path, run_cli) -> None:
    ddf = simple_ddf(tmp_path, n=10)
    result = run_cli(
        "check",
        ddf,
        "--image-hw",
        "772",
        "1032",
        "--dataset-split-override",
        "0.6",
        "0.2",
        "0.2",
        "--json",
        tmp_path / "r.json",
    )
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["grid"]["cells"] == [97, 129]
    assert [report["splits"][s]["images"] for s in ("train", "val", "test")] == [6, 2, 2]


def test_user_mistakes_exit_2_with_one_message_and_no_traceback(tmp_path: Path, run_cli) -> None:
    make_folder_pair(tmp_path / "set", {"a": ""})
    ddf = write_yaml(
        tmp_path / "d.yml",
        "class_names: [a]\ndataset_paths:\n  x: {image_path: set/images, label_path: set/lbls}\n",
    )
    result = run_cli("check", ddf)
    assert result.code == 2
    assert result.err.startswith("error: ")
    assert "d.yml:3: label_path 'set/lbls' does not exist" in result.err
    assert "fix: paths are relative to the folder" in result.err
    assert "Traceback" not in result.err


def test_yogo_debug_shows_the_traceback(tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("YOGO_DEBUG", "1")
    result = run_cli("check", tmp_path / "missing.yml")
    assert result.code == 2
    assert "Traceback" in result.err and "missing.yml: file does not exist" in result.err


def test_bad_flags_exit_2(tmp_path: Path, run_cli) -> None:
    ddf = simple_ddf(tmp_path)
    assert run_cli("check", ddf, "--bad-labels", "ignore").code == 2
    assert run_cli("check", ddf, "--no-such-flag").code == 2
    assert run_cli("check", ddf, "--image-hw", "0", "10").code == 2
    result = run_cli("check", ddf, "--dataset-split-override", "0.5", "0.5", "0.5")
    assert result.code == 2 and "--dataset-split-override: fractions must sum to 1" in result.err
    result = run_cli("check", ddf, "--json", tmp_path / "no" / "dir" / "r.json")
    assert result.code == 2 and "folder for this file does not exist" in result.err


def test_warnings_reach_stderr(tmp_path: Path, run_cli, monkeypatch) -> None:
    make_folder_pair(tmp_path / "data", {"x": ""})
    ddf = write_yaml(
        tmp_path / "defs" / "d.yml",
        "class_names: [a]\n"
        "dataset_paths:\n  x: {image_path: data/images, label_path: data/labels}\n",
    )
    monkeypatch.chdir(tmp_path)
    result = run_cli("check", ddf)
    assert result.code == 0
    assert (
        "warning: defs/d.yml:3: image_path 'data/images' was found relative to the working"
        in result.err
    )


def test_synth_writes_a_dataset_that_checks_clean(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "smear"
    result = run_cli(
        "synth",
        out,
        "--num-images",
        "6",
        "--image-hw",
        "64",
        "96",
        "--class-names",
        "rbc",
        "ring",
        "--seed",
        "3",
        "--split-fractions",
        "0.5",
        "0.5",
        "0",
    )
    assert result.code == 0, result.err
    ddf = DatasetDefinition.from_yaml(out / "ddf.yml")
    assert ddf.class_names == ("rbc", "ring") and len(ddf.samples) == 6
    assert run_cli("check", out / "ddf.yml").code == 0


def test_synth_never_overwrites(tmp_path: Path, run_cli) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    result = run_cli("synth", tmp_path, "--num-images", "1")
    assert result.code == 2 and "output folder exists and is not empty" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_expand_variadic_options() -> None:
    assert expand_variadic(["synth", "out", "--classes", "a", "b", "c", "--seed", "1"]) == [
        "synth",
        "out",
        "--classes",
        "a",
        "--classes",
        "b",
        "--classes",
        "c",
        "--seed",
        "1",
    ]
    assert expand_variadic(["check", "d.yml"]) == ["check", "d.yml"]


def test_python_dash_m_and_console_script(tmp_path: Path) -> None:
    ddf = simple_ddf(tmp_path, n=2)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    help_text = subprocess.run(
        [sys.executable, "-m", "yogo", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "check" in help_text and "synth" in help_text
    done = subprocess.run(
        [sys.executable, "-m", "yogo", "check", str(ddf)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "yogo", "check", str(tmp_path / "none.yml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_help_is_instant_because_heavy_modules_stay_unloaded() -> None:
    code = (
        "import sys; from yogo.cli import app; "
        "heavy = [m for m in ('torch', 'PIL', 'numpy', 'wandb', 'onnx') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_check_starts_without_torch(tmp_path: Path) -> None:
    """`yogo check` needs numpy and Pillow only; importing torch would add seconds to every
    check (the grid rule it shares with training lives in yogo.grid, in numpy)."""
    ddf = simple_ddf(tmp_path, n=3)
    code = (
        "import sys; from yogo.cli import main\n"
        "try:\n    main(['check', sys.argv[1]])\n"
        "except SystemExit as e:\n    print('torch' in sys.modules, e.code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(ddf)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "False 0"


@pytest.mark.parametrize(
    ("command", "text"),
    [("train", "cuda if available"), ("infer", "cuda if available"), ("export", "with .onnx")],
)
def test_help_shows_computed_defaults(run_cli, command, text, monkeypatch) -> None:
    """Help texts are rendered with rich markup, which would swallow "[default: ...]"."""
    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli(command, "--help")
    assert result.code == 0 and text in result.out
