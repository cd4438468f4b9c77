"""The `yogo` command line: exit codes, messages, `check --json`, `synth`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import make_folder_pair, simple_ddf, write_yaml
from typer.core import TyperOption

from yogo import DatasetDefinition
from yogo.cli import app, expand_variadic


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
    assert result.code == 2 and "--json: the folder does not exist" in result.err


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_help_is_instant_because_heavy_modules_stay_unloaded() -> None:
    code = (
        "import sys; from yogo.cli import app; "
        "heavy = [m for m in ('torch', 'PIL', 'numpy', 'wandb', 'onnx') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_check_starts_without_torch(tmp_path: Path) -> None:
    """`yogo check` needs numpy and Pillow only; importing torch would add seconds to every
    check (the grid rule it shares with training lives in yogo.model.grid, in numpy)."""
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
    """Defaults computed at run time are named in the help text ("[default: None]" would say
    nothing)."""
    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli(command, "--help")
    assert result.code == 0 and text in " ".join(result.out.split())


def _commands() -> dict[str, typer.core.TyperCommand]:
    """Every `yogo` command by name, and the group itself as ""."""
    group = typer.main.get_command(app)
    return {"": group, **group.commands}  # type: ignore[attr-defined]


def test_every_option_and_argument_has_help() -> None:
    """`--note`, `yogo test --batch-size`, `--seed` and others had an empty help column."""
    missing = [
        f"yogo {name} {'/'.join(getattr(param, 'opts', [])) or param.name}".replace("  ", " ")
        for name, command in _commands().items()
        for param in command.get_params(typer.Context(command))
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert missing == []


def test_options_with_several_values_name_them() -> None:
    """`--image-hw <int,int>...` suggested commas; the values are separate words."""
    for name, command in _commands().items():
        for param in command.get_params(typer.Context(command)):
            if isinstance(param, TyperOption) and param.nargs > 1:
                metavar = param.metavar or ""
                assert len(metavar.split()) == param.nargs, f"yogo {name} {param.opts[0]}"


@pytest.mark.parametrize("command", ["check", "train", "test", "export", "infer", "synth"])
def test_help_is_readable_in_a_narrow_terminal(run_cli, command, monkeypatch) -> None:
    """typer's rich tables cut names short in a narrow terminal (`--min-class-con…`)."""
    monkeypatch.setenv("COLUMNS", "60")
    result = run_cli(command, "--help")
    assert result.code == 0
    assert "\u2026" not in result.out and "<bool>" not in result.out
    assert max(len(line) for line in result.out.splitlines()) <= 60
    params = _commands()[command].get_params(typer.Context(_commands()[command]))
    for param in params:
        if isinstance(param, TyperOption):
            for opt in param.opts + param.secondary_opts:
                shown = re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", result.out)
                assert shown, f"{opt} is not shown in full"


def test_help_shows_how_values_are_typed(run_cli, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    check = run_cli("check", "--help").out
    assert check.startswith("Usage: yogo check [OPTIONS] DDF\n")
    assert "--image-hw H W " in check
    assert "--dataset-split-override TRAIN VAL TEST" in check
    assert "<int,int>" not in check and "{ddf}" not in check
    train = run_cli("train", "--help").out
    assert "Usage: yogo train [OPTIONS] [DDF]" in train
    assert "--tags TAG..." in train
    patience = " ".join(train[train.index("--patience") :].split("--obj-thresh")[0].split())
    assert "(default: off)" in patience
    tested = run_cli("test", "--help").out  # CHECKPOINT DDF, or --folds RUN_DIR...
    assert "Usage: yogo test [OPTIONS] [CHECKPOINT] [DDF]" in tested and "RUN_DIR..." in tested


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-hw", "192"], "--image-hw takes two values: H W, got '192'"),
        (["--image-hw", "192", "--decode"], "--image-hw takes two values: H W, got '192'"),
        (["--image-hw"], "--image-hw takes two values: H W, got none"),
        (
            ["--dataset-split-override", "0.8", "0.2"],
            "--dataset-split-override takes three values: TRAIN VAL TEST, got '0.8 0.2'",
        ),
    ],
)
def test_too_few_values_for_an_option_say_how_many(tmp_path: Path, run_cli, args, message) -> None:
    """click said "requires 2 arguments", or, with another flag next, that '--decode' is not
    a valid integer."""
    result = run_cli("check", simple_ddf(tmp_path), *args)
    assert result.code == 2
    assert message in result.err


def test_train_help_is_in_sections_and_the_command_list_is_whole(run_cli) -> None:
    """`yogo train --help` was ~150 lines of ungrouped options; `yogo --help` cut each
    command's summary at ~45 characters."""
    from yogo.config import TRAIN_HELP_SECTIONS

    text = run_cli("train", "--help").out
    headings = [line[:-1] for line in text.splitlines() if line.endswith(":") and line[0] != " "]
    assert headings == ["Arguments", *TRAIN_HELP_SECTIONS, "Options"]
    assert text.index("--augment-gamma") > text.index("Augmentation:") > text.index("--lr-decay")
    listing = run_cli("--help").out
    commands = listing.split("Commands:")[1]
    assert "..." not in commands and "prints the suggested learning rate" in commands
