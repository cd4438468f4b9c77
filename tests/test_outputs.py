"""What yogo writes: never over an existing file without --force, never over one of the
command's own inputs, refused before any work when the place cannot be written, and with the
permissions the umask gives (yogo.outputs, docs/outputs.md)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import simple_ddf, write_image


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def checkpoint(trained_run, tmp_path: Path) -> Path:
    """A copy of a trained run's best.pth, with its DDF (the user's files in this test)."""
    target = tmp_path / "model.pth"
    shutil.copy(trained_run.run / "best.pth", target)
    return target


def test_json_never_replaces_an_input_even_with_force(
    trained_run, checkpoint: Path, tmp_path: Path, run_cli
) -> None:
    ddf = simple_ddf(tmp_path / "set")
    before = snapshot(tmp_path)
    for force in ([], ["--force"]):
        own_ddf = run_cli("check", ddf, "--json", ddf, *force)
        assert own_ddf.code == 2 and "is an input of this command" in own_ddf.err
        model = run_cli("test", checkpoint, trained_run.ddf, "--json", checkpoint, *force)
        assert model.code == 2 and "not even with --force" in model.err
    assert snapshot(tmp_path) == before


def test_json_replaces_an_existing_file_only_with_force(tmp_path: Path, run_cli) -> None:
    ddf = simple_ddf(tmp_path)
    report = tmp_path / "report.json"
    report.write_text("my notes")
    refused = run_cli("check", ddf, "--json", report)
    assert refused.code == 2 and "already exists" in refused.err and "--force" in refused.err
    assert report.read_text() == "my notes"
    assert run_cli("check", ddf, "--json", report, "--force").code == 0
    assert json.loads(report.read_text())["trainable"] is True


def test_json_dash_is_standard_output(tmp_path: Path, run_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("check", simple_ddf(tmp_path), "--json", "-")
    assert result.code == 0
    assert json.loads(result.out)["trainable"] is True  # stdout is the JSON alone
    assert "trainable" in result.err  # the readable report went to stderr
    assert not (tmp_path / "-").exists()


def test_infer_never_writes_over_ground_truth_labels(checkpoint: Path, tmp_path: Path, run_cli):
    data = tmp_path / "d"
    for name in ("a", "b"):
        write_image(data / "images" / f"{name}.png", (96, 128))
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    before = snapshot(data)
    args = ["infer", checkpoint, "--path-to-images", data / "images", "--output-dir", data]
    refused = run_cli(*args, "--save-preds")
    assert refused.code == 2
    assert "already holds 2 file(s) this command would write" in refused.err
    assert "labels/a.txt" in refused.err and "--force" in refused.err
    assert snapshot(data) == before
    # Outputs it would not write are no obstacle; with --force the user chose to replace.
    assert run_cli(*args, "--count").code == 0
    assert run_cli(*args, "--save-preds", "--force").code == 0


def test_infer_never_writes_over_its_input_images_even_with_force(
    checkpoint: Path, tmp_path: Path, run_cli
) -> None:
    images = tmp_path / "out" / "boxes"
    write_image(images / "frame.png", (96, 128))
    before = snapshot(tmp_path)
    result = run_cli(
        "infer",
        checkpoint,
        "--path-to-images",
        images,
        "--output-dir",
        tmp_path / "out",
        "--draw-boxes",
        "--force",
    )
    assert result.code == 2 and "is an input of this command" in result.err
    assert snapshot(tmp_path) == before


def test_export_never_writes_over_its_checkpoint(checkpoint: Path, run_cli) -> None:
    before = checkpoint.read_bytes()
    result = run_cli("export", checkpoint, "--output-filename", checkpoint, "--force")
    assert result.code == 2 and "is an input of this command" in result.err
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["model.pth"]


@pytest.mark.slow
def test_every_file_follows_the_umask(
    trained_run, checkpoint: Path, tmp_path: Path, run_cli
) -> None:
    for path in trained_run.run.rglob("*"):  # written under the default umask 022
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    old = os.umask(0o002)  # a lab group sharing its models
    try:
        assert run_cli("export", checkpoint).code == 0
        write_image(tmp_path / "images" / "a.png", (96, 128))
        out = tmp_path / "out"
        tasks = tmp_path / "tasks.json"
        flags = ["--save-preds", "--draw-boxes", "--count", "--save-npy", "--label-studio", tasks]
        infer = ["infer", checkpoint, "--path-to-images", tmp_path / "images", "--output-dir", out]
        assert run_cli(*infer, *flags).code == 0
        assert run_cli("check", trained_run.ddf, "--json", tmp_path / "r.json").code == 0
    finally:
        os.umask(old)
    written = [checkpoint.with_suffix(".onnx"), tmp_path / "r.json", tasks]
    written += [p for p in out.rglob("*") if p.is_file()]
    # out: predictions, labels, boxes, counts.csv and .json, ddf.yml, .npy, manifest
    assert len(written) == 11
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path


@pytest.fixture
def unfinished_run(trained_run, tmp_path: Path) -> Path:
    """A run folder whose last.pth is unfinished (a copy of a trained run's, marked so)."""
    import torch

    run = tmp_path / "read-only"  # what the read_only fixture then locks
    run.mkdir()
    payload = torch.load(trained_run.run / "last.pth", weights_only=True)
    torch.save({**payload, "finished": False}, run / "last.pth")
    return run


def test_a_run_in_a_folder_that_cannot_be_written_is_not_resumed(
    unfinished_run: Path, read_only: Path, run_cli
) -> None:
    result = run_cli("train", "--resume", read_only / "last.pth")
    assert result.code == 2 and "--resume: cannot write here" in result.err, result.err
    assert sorted(p.name for p in read_only.iterdir()) == ["last.pth"]


def test_unwritable_places_are_refused_before_any_work(
    trained_run, checkpoint: Path, read_only: Path, tmp_path: Path, run_cli
) -> None:
    images = write_image(tmp_path / "images" / "a.png", (96, 128)).parent
    attempts = {
        "check": ["check", trained_run.ddf, "--json", read_only / "r.json"],
        "train": ["train", trained_run.ddf, "--output-dir", read_only / "runs", "--no-wandb"],
        "infer": ["infer", checkpoint, "--path-to-images", images, "--output-dir", read_only],
        "export": ["export", checkpoint, "--output-filename", read_only / "m.onnx"],
    }
    for command, args in attempts.items():
        result = run_cli(*args)
        assert result.code == 2, (command, result.err)
        assert "cannot write here" in result.err and "Traceback" not in result.err, command
        assert str(read_only) in result.err and "fix: choose a folder" in result.err
    assert list(read_only.iterdir()) == []


def test_output_paths_of_the_wrong_kind_are_named(
    trained_run, checkpoint: Path, tmp_path: Path, run_cli
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    write_image(tmp_path / "images" / "a.png", (96, 128))
    cases = [
        (["train", trained_run.ddf, "--output-dir", a_file], "is a file, not a folder"),
        (["train", trained_run.ddf, "--output-dir", a_file / "runs"], "is a file, not a folder"),
        (
            ["infer", checkpoint, "--path-to-images", tmp_path / "images", "--output-dir", a_file],
            "is a file, not a folder",
        ),
        (["check", trained_run.ddf, "--json", tmp_path], "is a folder; give a file name"),
        (["export", checkpoint, "--output-filename", tmp_path], "is a folder; give a file name"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.code == 2 and message in result.err, (args, result.err)
        assert "Traceback" not in result.err
    assert a_file.read_text() == "mine"


# --- the one rule (issue #20): planned, checked against every input, locked, atomic


def test_writing_an_unplanned_file_is_an_error(tmp_path: Path) -> None:
    from yogo import outputs

    outputs.forget_plans()  # this test's own plan of tmp_path (conftest) is gone
    with pytest.raises(outputs.UnplannedOutput):
        outputs.write_atomic(tmp_path / "x.txt", "x")
    assert list(tmp_path.iterdir()) == []
    outputs.plan_file(tmp_path / "x.txt", force=False)
    outputs.write_atomic(tmp_path / "x.txt", "x")
    assert (tmp_path / "x.txt").read_text() == "x"


def test_a_file_another_process_wrote_meanwhile_is_kept_without_force(tmp_path: Path) -> None:
    """The check before the work found no file; one appeared since (a second command): the
    rename would have replaced it, the link refuses."""
    from yogo import outputs
    from yogo.errors import UserError

    outputs.forget_plans()
    path = outputs.plan_file(tmp_path / "r.json", force=False)
    path.write_text("theirs")
    with pytest.raises(UserError, match="appeared while yogo was working"):
        outputs.write_atomic(path, "ours")
    assert path.read_text() == "theirs" and os.listdir(tmp_path) == ["r.json"]
    outputs.plan_file(path, force=True)
    outputs.write_atomic(path, "ours")
    assert path.read_text() == "ours"


def test_a_full_disk_is_one_message_and_the_old_file_stays(small_disk: Path, run_cli) -> None:
    from yogo import outputs

    old = small_disk / "r.json"
    old.write_text("old")
    (small_disk / "filler").write_bytes(b"\0" * (small_disk_free(small_disk)))
    outputs.plan_file(old, force=True)
    with pytest.raises(outputs.WriteFailed, match="No space left on device; the previous r"):
        outputs.write_atomic(old, "x" * 100_000)
    assert old.read_text() == "old"
    assert sorted(os.listdir(small_disk)) == ["filler", "r.json"]


def small_disk_free(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


@pytest.mark.slow
def test_commands_on_a_full_disk_say_so_and_leave_nothing(
    trained_run, checkpoint: Path, small_disk: Path, tmp_path: Path, run_cli
) -> None:
    """check --json, test --plots, export and infer: exit 2 and one message (they ended in
    a traceback), and no partial file left on the disk."""
    (small_disk / "filler").write_bytes(b"\0" * small_disk_free(small_disk))
    images = write_image(tmp_path / "images" / "a.png", (96, 128)).parent
    attempts = [
        ["check", trained_run.ddf, "--json", small_disk / "r.json"],
        ["test", checkpoint, trained_run.ddf, "--plots", small_disk / "plots"],
        ["export", checkpoint, "--output-filename", small_disk / "m.onnx"],
        ["infer", checkpoint, "--path-to-images", images, "--output-dir", small_disk / "out"],
    ]
    for args in attempts:
        result = run_cli(*args)
        assert result.code == 2, (args[0], result.err)
        assert "No space left on device" in result.err, (args[0], result.err)
        assert "Traceback" not in result.err
        assert [p.name for p in small_disk.rglob("*") if p.is_file()] == ["filler"], args[0]


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    for i in range(6):
        write_image(tmp_path / "frames" / f"f{i}.png", (96, 128))
    return tmp_path / "frames"


@pytest.mark.slow
def test_infer_force_replaces_the_whole_set_never_a_mix(
    checkpoint: Path, frames: Path, tmp_path: Path, run_cli
) -> None:
    """The second run wrote over the first's files but kept the rest: a ddf.yml training on
    the first run's 6 label files while predictions.json listed the second's 3 frames."""
    out = tmp_path / "out"
    infer = ["infer", checkpoint, "--output-dir", out, "--save-preds", "--obj-thresh", "0"]
    assert run_cli(*infer, "--path-to-images", frames, "--count", "--draw-boxes").code == 0
    assert len(list((out / "labels").iterdir())) == 6 and (out / "counts.csv").is_file()
    for i in range(3, 6):
        (frames / f"f{i}.png").unlink()
    again = run_cli(*infer, "--path-to-images", frames)
    assert again.code == 2 and "--force to replace them" in again.err
    assert run_cli(*infer, "--path-to-images", frames, "--force").code == 0
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["f0.txt", "f1.txt", "f2.txt"]
    assert not (out / "counts.csv").exists() and not (out / "boxes").exists()
    listed = json.loads((out / "predictions.json").read_text())["images"]
    assert len(listed) == 3
    (out / "mine.txt").write_text("the user's")  # not yogo's: never removed
    assert run_cli(*infer, "--path-to-images", frames, "--force").code == 0
    assert (out / "mine.txt").read_text() == "the user's"


@pytest.mark.slow
def test_test_worst_force_replaces_the_earlier_frames(
    trained_run, checkpoint: Path, tmp_path: Path, run_cli
) -> None:
    plots = tmp_path / "plots"
    args = ["test", checkpoint, trained_run.ddf, "--plots", plots]
    assert run_cli(*args, "--worst", "4").code == 0
    assert len(list((plots / "test_worst").iterdir())) == 4
    assert run_cli(*args, "--worst", "2", "--force").code == 0
    assert len(list((plots / "test_worst").iterdir())) == 2
    assert run_cli(*args, "--force").code == 0  # no --worst now: none of its files stay
    assert not (plots / "test_worst.csv").exists() and not (plots / "test_worst").exists()


LOCKER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_one_command_at_a_time_writes_an_output_folder(
    checkpoint: Path, frames: Path, tmp_path: Path, run_cli
) -> None:
    """Two `infer --output-dir X` at once both exited 0, one's files replaced by the other's."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        args = ["infer", checkpoint, "--path-to-images", frames, "--output-dir", out]
        busy = run_cli(*args)
        assert busy.code == 2 and "another yogo command is writing" in busy.err, busy.err
        assert list(out.iterdir()) == []
    finally:
        holder.kill()
        holder.wait()
    assert run_cli(*args).code == 0


def documented_writes() -> dict[str, list[str]]:
    """docs/design.md's "Every file each command writes": command -> its patterns."""
    text = (Path(__file__).parents[1] / "docs" / "design.md").read_text()
    section = text.split("### Every file each command writes")[1].split("\n## ")[0]
    listed = {}
    for line in section.splitlines():
        found = re.match(r"- `yogo ([a-z-]+)`: (.*)", line)
        if found:
            listed[found[1]] = re.findall(r"`([^`]+)`", found[2])
    return listed


def expand(pattern: str, names: dict[str, str]) -> str:
    for name, value in names.items():
        pattern = pattern.replace(name, value)
    return pattern


@pytest.mark.slow
def test_every_file_a_command_writes_is_listed_here(
    trained_run, checkpoint: Path, tmp_path: Path, run_cli
) -> None:
    """The one output rule, walked: each command with every output option on a user's folder.
    Every file that appears is in docs/design.md's list (and every listed name appears); it
    was planned (run_cli gives a command no plan but its own, and an unplanned write raises);
    no input changed and nothing was added to a data folder."""
    data = tmp_path / "data"
    shutil.copytree(trained_run.ddf.parent, data)
    ddf, model, out = data / "ddf.yml", checkpoint, tmp_path / "out"
    out.mkdir()
    runs = {
        "check": (["check", ddf, "--json", out / "r.json"], {"JSON": "out/r.json"}),
        "test": (
            [
                *("test", model, ddf, "--json", out / "t.json", "--plots", out / "plots"),
                *("--worst", 2, "--report", out / "t.html", "--fit-thresholds", out / "fitted.pth"),
            ],
            {
                "JSON": "out/t.json",
                "PLOTS": "out/plots",
                "SPLIT": "test",
                "HTML": "out/t.html",
                "FITTED": "out/fitted.pth",
            },
        ),
        "export": (  # the most files: OpenVINO's .xml and .bin, int8 calibrated on the DDF
            [
                *("export", model, "--output-filename", out / "m.xml", "--format", "openvino"),
                *("--precision", "int8", "--calibration", ddf, "--force-accuracy"),
            ],
            {
                "MODEL": "out/m.xml",
                "WEIGHTS": "out/m.bin",
                "VERIFICATION": "out/m.verification.json",
            },
        ),
        "infer": (
            [
                "infer",
                model,
                "--path-to-images",
                data / "images",
                "--output-dir",
                out / "infer",
                "--save-preds",
                "--draw-boxes",
                "--count",
                "--save-npy",
                "--obj-thresh",
                "0.1",
                "--label-studio",
                out / "tasks.json",
                "--report",
                out / "infer.html",
                "--heatmap-mask",
                "auto",
                *("--model", model, "--tta"),  # an ensemble's outputs are the same files
            ],
            {"OUT": "out/infer", "TASKS": "out/tasks.json", "HTML": "out/infer.html"},
        ),
        "lr-find": (
            ["lr-find", ddf, "--steps", 40, "-bs", 4, "--num-workers", 0, "--plot", out / "lr.png"],
            {"PLOT": "out/lr.png"},
        ),
        "train": (
            [
                "train",
                ddf,
                "--epochs",
                1,
                "-bs",
                4,
                "--num-workers",
                0,
                "--no-wandb",
                "--output-dir",
                out / "runs",
                "--name",
                "r",
            ],
            {"RUN": "out/runs/r", "CACHE": "out/runs/.yogo-cache"},
        ),
        "synth": (["synth", out / "synth", "--num-images", 2], {"OUT": "out/synth"}),
        "audit": (  # the audit, then --apply of it: both write through the rule
            [
                ["audit", model, ddf, "--output-dir", out / "audit", "--max-thumbnails", 5],
                ["audit", "--apply", out / "audit", "--out", out / "new"],
            ],
            {"AUDIT": "out/audit", "NEW": "out/new"},
        ),
    }
    documented = documented_writes()
    assert sorted(documented) == sorted(runs)
    for command, (args, names) in runs.items():
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        for line in args if isinstance(args[0], list) else [args]:
            result = run_cli(*line)
            assert result.code == 0, (command, result.err)
        after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        assert {p: after[p] for p in before if p in after} == before, command  # none changed
        new = sorted(str(p.relative_to(tmp_path)) for p in set(after) - set(before))
        patterns = [expand(pattern, names) for pattern in documented[command]]
        for path in new:
            assert any(fnmatch.fnmatch(path, p) for p in patterns), (command, path, patterns)
        for pattern in patterns:
            assert any(fnmatch.fnmatch(path, pattern) for path in new), (command, pattern)
        assert not [p for p in new if p.startswith("data/")], command
