"""`yogo train` and `yogo test` through the CLI on tiny synthetic data (CPU)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yogo.data.synth import write_dataset
from yogo.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # every test trains a model

CLASSES = ("healthy", "ring", "trophozoite")
FAST = ["--epochs", "1", "-bs", "4", "--no-wandb", "--num-workers", "0"]


@pytest.fixture(scope="module")
def smear(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smear")
    return write_dataset(root / "data", 10, (64, 96), seed=5, split_fractions=(0.6, 0.2, 0.2))


@pytest.fixture(scope="module")
def trained(smear: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short run shared by the tests that only read its folder."""
    from yogo.cli import main

    out = tmp_path_factory.mktemp("runs")
    with pytest.raises(SystemExit) as done:
        main(["train", str(smear), *FAST, "--epochs", "2", "--output-dir", str(out), "--name", "r"])
    assert done.value.code == 0
    return out / "r"


def test_run_folder_explains_itself(trained: Path) -> None:
    names = {p.name for p in trained.iterdir()}
    assert {
        "config.yaml",
        "last.pth",
        "best.pth",
        "metrics.csv",
        "training_curves.png",
        "val_pr_curves.png",
        "val_confusion_matrix.png",
        "val_prf_curves.png",
        "val_per_class_ap.png",
        "val_predictions.png",
        "train_batch.png",
    } <= names
    rows = list(csv.DictReader((trained / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in (
        "loss",
        "objectness",
        "box",
        "class",
        "lr",
        "val_mAP50",
        "val_mAP50_95",
        "images_per_s",
        "data_wait_fraction",
        *(f"val_{k}/healthy" for k in ("AP50", "precision", "recall")),
    ):
        assert rows[-1][key] != "", key
    # Every class has its columns (blank where the val split has none of it: no AP).
    assert {f"val_{k}/{c}" for k in ("AP50", "precision", "recall") for c in CLASSES} <= set(
        rows[-1]
    )
    from PIL import Image

    Image.open(trained / "training_curves.png").verify()  # its panels: tests/test_log.py
    # Frames of 64x96 are drawn large enough to read (at least 384 px high): the batch of 4
    # in rows of 3, the 2 val frames each as labels beside predictions.
    batch = Image.open(trained / "train_batch.png")
    assert batch.height > 2 * 384 and batch.width > 3 * 576
    assert Image.open(trained / "val_predictions.png").width > 2 * 2 * 576
    config = (trained / "config.yaml").read_text()
    assert "samples_sha256" in config and "anchor_w" in config and "image_hw" in config


def test_val_every_leaves_blanks_and_keeps_the_columns(
    smear: Path, tmp_path: Path, run_cli
) -> None:
    """Columns come from the run, not from its first row: with --val-every 2 the first row has
    no validation values, and every later validation is still written (per class too)."""
    args = ["train", smear, *FAST, "--epochs", "2", "--val-every", "2", "--output-dir", tmp_path]
    assert run_cli(*args, "--name", "v").code == 0  # the last --epochs counts
    rows = list(csv.DictReader((tmp_path / "v" / "metrics.csv").open()))
    assert rows[0]["val_mAP50"] == "" and rows[0]["val_AP50/ring"] == ""
    assert rows[1]["val_mAP50"] != "" and rows[1]["val_recall/healthy"] != ""


def test_checkpoints_are_plain_data_with_everything_needed(trained: Path) -> None:
    payload = torch.load(trained / "last.pth", weights_only=True)
    assert payload["epoch"] == 2 and payload["finished"] is True
    assert payload["model"]["class_names"] == ["healthy", "ring", "trophozoite"]
    assert payload["model"]["image_hw"] == [64, 96]
    assert payload["config"]["epochs"] == 2
    assert load_checkpoint(trained / "best.pth").model_config.anchor_w > 0


def test_existing_run_is_never_overwritten(smear: Path, trained: Path, run_cli) -> None:
    before = (trained / "last.pth").read_bytes()
    result = run_cli("train", smear, *FAST, "--output-dir", trained.parent, "--name", "r")
    assert result.code == 2 and "a run named 'r' already exists" in result.err
    assert (trained / "last.pth").read_bytes() == before


def test_repeat_from_config_yaml(trained: Path, run_cli, tmp_path: Path) -> None:
    result = run_cli(
        "train",
        "--config",
        trained / "config.yaml",
        "--epochs",
        "1",
        "--output-dir",
        tmp_path,
        "--name",
        "again",
    )
    assert result.code == 0, result.err
    repeated = torch.load(tmp_path / "again" / "last.pth", weights_only=True)["config"]
    original = torch.load(trained / "last.pth", weights_only=True)["config"]
    differences = {k for k in original if original[k] != repeated[k]}
    assert differences == {"epochs", "name", "output_dir"}


def test_from_pretrained_with_other_classes(
    smear: Path, trained: Path, tmp_path: Path, run_cli
) -> None:
    ddf = smear.parent / "two.yml"
    ddf.write_text(
        smear.read_text()
        .replace('"healthy", "ring", "trophozoite"', '"cell", "ring"')
        .replace("image_path: images", f"image_path: {smear.parent}/images")
        .replace("label_path: labels", f"label_path: {smear.parent}/labels")
    )
    result = run_cli(
        "train",
        ddf,
        *FAST,
        "--bad-labels",
        "drop",
        "--from-pretrained",
        trained / "best.pth",
        "--output-dir",
        tmp_path,
        "--name",
        "ft",
    )
    assert result.code == 0, result.err
    assert "the output layer starts fresh" in result.err
    payload = torch.load(tmp_path / "ft" / "last.pth", weights_only=True)
    assert payload["model"]["class_names"] == ["cell", "ring"]
    old = torch.load(trained / "best.pth", weights_only=True)["state_dict"]
    new = payload["state_dict"]
    assert new["model.7.weight"].shape[0] == 7 and old["model.7.weight"].shape[0] == 8


def test_from_pretrained_yogo_v1(smear: Path, tmp_path: Path, run_cli) -> None:
    fixture = Path(__file__).parent / "fixtures" / "yogo-v1" / "base_model_7cls_772x1032.pth"
    result = run_cli(
        "train",
        smear,
        *FAST,
        "--from-pretrained",
        fixture,
        "--image-hw",
        "64",
        "96",
        "--output-dir",
        tmp_path,
        "--name",
        "v1",
    )
    assert result.code == 0, result.err
    info = load_checkpoint(tmp_path / "v1" / "last.pth").model_config
    assert info.normalize_images is False and info.anchor_w == pytest.approx(0.0425, abs=1e-4)
    # YOGO's decoding travels with its weights: centres stay in their cell, one cell per object.
    assert not info.neighbour_cells and "centre cell only" in result.err
    # The size change is said, not silent (mAP fell from 0.53 to 0.03 in a trial).
    assert "--image-hw 64 96 differs from the checkpoint's 772 1032" in result.err


def test_from_pretrained_says_which_model_flags_it_overrides(
    smear: Path, trained: Path, tmp_path: Path, run_cli
) -> None:
    result = run_cli(
        "train",
        smear,
        *FAST,
        "--from-pretrained",
        trained / "best.pth",
        "--model",
        "double_filters",
        "--anchor-w",
        "0.3",
        "--output-dir",
        tmp_path,
    )
    assert result.code == 0, result.err
    assert "keeps the checkpoint's model settings; ignored: --model double_filters" in result.err
    assert load_checkpoint(trained / "best.pth").model_config.neighbour_cells is False  # default
    assert "--anchor-w 0.3" in result.err and "differs from the checkpoint's" not in result.err


def test_a_grid_that_loses_many_objects_of_a_class_is_said(smear: Path, tmp_path: Path, run_cli):
    result = run_cli("train", smear, *FAST, "--image-hw", "16", "24", "--output-dir", tmp_path)
    assert result.code == 0, result.err
    assert "warning: the 2x3 grid at --image-hw 16 24 keeps one object per cell" in result.err
    assert "class 'healthy' loses" in result.err


def test_frames_too_small_for_the_grid_are_refused(tmp_path: Path, run_cli) -> None:
    from yogo.data.synth import write_dataset

    ddf = write_dataset(tmp_path / "data", 8, (64, 96), seed=1)
    result = run_cli("train", ddf, *FAST, "--image-hw", "12", "12", "--output-dir", tmp_path / "o")
    assert result.code == 2 and "at least 16 px" in result.err, result.err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_yogo_test_report_and_json(trained: Path, smear: Path, tmp_path: Path, run_cli) -> None:
    result = run_cli("test", trained / "best.pth", smear, "--json", tmp_path / "r.json")
    assert result.code == 0, result.err
    assert "mAP@0.5" in result.out and "confusion matrix" in result.out
    report = json.loads((tmp_path / "r.json").read_text())
    for key in (
        "split",
        "num_images",
        "num_objects",
        "mAP50",
        "mAP50_95",
        "per_class",
        "confusion_matrix",
        "class_names",
    ):
        assert key in report
    assert report["split"] == "test" and report["num_images"] == 2
    for values in report["per_class"].values():
        assert {"AP50", "AP50_95", "precision", "recall", "f1", "num_true", "num_pred"} <= set(
            values
        )


def test_yogo_test_user_mistakes(trained: Path, smear: Path, tmp_path: Path, run_cli) -> None:
    no_test = smear.parent / "no_test.yml"
    no_test.write_text(
        smear.read_text().replace("test: 0.2", "test: 0").replace("val: 0.2", "val: 0.4")
    )
    result = run_cli("test", trained / "best.pth", no_test)
    assert result.code == 2 and "the DDF has no test split" in result.err
    other = smear.parent / "other.yml"
    other.write_text(smear.read_text().replace('"trophozoite"', '"troph"'))
    result = run_cli("test", trained / "best.pth", other, "--bad-labels", "drop")
    assert result.code == 2 and "differ from the DDF's" in result.err
    result = run_cli("test", tmp_path / "none.pth", smear)
    assert result.code == 2 and "checkpoint file does not exist" in result.err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "-1"], "--learning-rate must be > 0"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--precision", "fp8"], "--precision must be auto, 32, bf16 or fp16"),
        (["--model", "huge"], "--model 'huge' is not a known model"),
        (["--class-weights", "1,x"], "--class-weights must be none, auto"),
        (["--device", "tpu"], "--device"),
        (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
        (["--ema", "--swa-epochs", "2"], "--ema and --swa-epochs both average the weights"),
        (["--swa-epochs", "-1"], "--swa-epochs must be >= 0"),
        (["--copy-paste", "2"], "--copy-paste must be in [0, 1]"),
        (["--sampler", "fair"], "--sampler must be random or balanced"),
        (["--obj-target", "two"], "--obj-target must be one or iou"),
        (["--augment-noise", "-3"], "--augment-noise must be >= 0"),
    ],
)
def test_bad_training_flags_exit_2(
    smear: Path, tmp_path: Path, run_cli, flags: list[str], message: str
) -> None:
    result = run_cli("train", smear, *FAST, "--output-dir", tmp_path, *flags)
    assert result.code == 2 and message in result.err, result.err
    assert not list(tmp_path.iterdir())  # nothing written


def test_wandb_offline_writes_into_the_run_folder(
    smear: Path, tmp_path: Path, run_cli, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    result = run_cli(
        "train",
        smear,
        "--epochs",
        "1",
        "-bs",
        "4",
        "--num-workers",
        "0",
        "--wandb",
        "--output-dir",
        "runs",
        "--name",
        "wb",
    )
    assert result.code == 0, result.err
    (logged,) = (tmp_path / "runs" / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"val_AP50/healthy" in logged.read_bytes()  # per-class history, as in metrics.csv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_lr_schedule() -> None:
    from yogo.training.optim import lr_factor

    assert lr_factor(0, 100, 0, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 0, 10) == pytest.approx(0.1)
    assert lr_factor(50, 100, 0, 10) == pytest.approx(0.55)
    assert [lr_factor(s, 100, 4, 10) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_patience_grad_accum_subsample_and_bf16(smear: Path, tmp_path: Path, run_cli) -> None:
    # A learning rate too small to change anything: val mAP never improves, so patience 1
    # stops after the second validation.
    result = run_cli(
        "train",
        smear,
        "--epochs",
        "5",
        "-bs",
        "2",
        "--grad-accum",
        "2",
        "--lr",
        "1e-12",
        "--patience",
        "1",
        "--subsample",
        "0.5",
        "--precision",
        "bf16",
        "--grad-clip",
        "1.0",
        "--warmup-epochs",
        "0.5",
        "--num-workers",
        "0",
        "--no-wandb",
        "--output-dir",
        tmp_path,
        "--name",
        "p",
    )
    assert result.code == 0, result.err
    assert "early stop" in result.err
    rows = list(csv.DictReader((tmp_path / "p" / "metrics.csv").open()))
    assert len(rows) == 2
    payload = torch.load(tmp_path / "p" / "last.pth", weights_only=True)
    assert payload["finished"] is True
    # subsample 0.5 of 6 train frames = 3 frames = 2 batches of 2 -> 1 step per epoch
    assert payload["step"] == 2
    config = payload["config"]
    assert config["precision"] == "bf16" and config["subsample"] == 0.5


def test_rgb_model_trains_and_tests(smear: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    result = run_cli(
        "train",
        smear,
        *FAST,
        "--rgb-images",
        "--model",
        "quarter_filters",
        "--output-dir",
        tmp_path,
        "--name",
        "rgb",
    )
    assert result.code == 0, result.err
    info = load_checkpoint(tmp_path / "rgb" / "best.pth").model_config
    assert info.channels == 3 and info.model_name == "quarter_filters"
    result = run_cli("test", tmp_path / "rgb" / "best.pth", smear, "--split", "val")
    assert result.code == 0, result.err
    # The saved config names the DDF by its resolved path: a repeat works from anywhere.
    monkeypatch.chdir(tmp_path)
    result = run_cli("train", "--config", tmp_path / "rgb" / "config.yaml", "--name", "rgb2")
    assert result.code == 0, result.err


def test_default_batch_size_gives_small_sets_enough_steps() -> None:
    from yogo.config import default_batch_size

    assert default_batch_size(100_000) == 64
    assert default_batch_size(1024) == 64
    assert default_batch_size(192) == 12  # 16 steps per epoch
    assert default_batch_size(192, grad_accum=2) == 8
    assert default_batch_size(10) == 8  # never below 8


def test_default_batch_size_is_reported_and_saved(smear: Path, tmp_path: Path, run_cli) -> None:
    result = run_cli(
        "train",
        smear,
        "--epochs",
        "1",
        "--no-wandb",
        "--num-workers",
        "0",
        "--output-dir",
        tmp_path,
        "--name",
        "auto",
    )
    assert result.code == 0, result.err
    assert "batch size 8: with 6 training images" in result.err
    assert "learning rate 0.001 for a run of about 1 optimizer steps" in result.err
    config = torch.load(tmp_path / "auto" / "last.pth", weights_only=True)["config"]
    assert config["batch_size"] == 8 and config["learning_rate"] == 1e-3


def test_default_learning_rate_follows_the_run_length() -> None:
    from yogo.config import default_learning_rate

    assert default_learning_rate(240) == default_learning_rate(1000) == 1e-3
    assert default_learning_rate(10_000) == default_learning_rate(10**6) == 3e-4  # YOGO's
    between = [default_learning_rate(n) for n in (1001, 2000, 5000, 9999)]
    assert between == sorted(between, reverse=True) and 3e-4 < min(between) < max(between) < 1e-3
    assert default_learning_rate(3162) == pytest.approx(1e-3 * 0.3**0.5, rel=1e-3)


def test_resume_auto(smear: Path, trained: Path, tmp_path: Path, run_cli) -> None:
    finished = run_cli(
        "train", smear, *FAST, "--resume", "auto", "--output-dir", trained.parent, "--name", "r"
    )
    assert finished.code == 2 and "the run 'r' is finished" in finished.err
    fresh = run_cli(
        "train", smear, *FAST, "--resume", "auto", "--output-dir", tmp_path, "--name", "new"
    )
    assert fresh.code == 0, fresh.err
    assert (tmp_path / "new" / "last.pth").is_file()
    nothing = run_cli("train", "--resume", str(trained / "last.pth"))
    assert nothing.code == 2 and "finished run" in nothing.err


def test_best_pth_is_never_resumed(trained: Path, run_cli) -> None:
    """best.pth holds an earlier epoch than last.pth (or the same): resuming it would train
    over the later epochs and replace last.pth."""
    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    refused = run_cli("train", "--resume", trained / "best.pth")
    assert refused.code == 2 and "not a last.pth" in refused.err, refused.err
    assert "--from-pretrained" in refused.err
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before


def test_inside_slurm_runs_are_named_by_job_and_resume_by_default(
    smear: Path, tmp_path: Path, run_cli, monkeypatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    first = run_cli("train", smear, *FAST, "--output-dir", tmp_path)
    assert first.code == 0, first.err
    assert (tmp_path / "slurm-777" / "last.pth").is_file()
    # The same command again (what a requeue runs) resumes that run; it is finished here.
    again = run_cli("train", smear, *FAST, "--output-dir", tmp_path)
    assert again.code == 2 and "the run 'slurm-777' is finished" in again.err
    # Requeued after its last epoch, before the end-of-run pictures were written (preempted
    # then, and killed at the end of the grace time): the job writes them and succeeds.
    run = tmp_path / "slurm-777"
    pictures = sorted(run.glob("val_*.png"))
    assert pictures
    for picture in pictures:
        picture.unlink()
    weights = (run / "last.pth").read_bytes()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    requeued = run_cli("train", smear, *FAST, "--output-dir", tmp_path)
    assert requeued.code == 0, requeued.err
    assert "finished training before this job was requeued" in requeued.err
    assert sorted(run.glob("val_*.png")) == pictures
    assert (run / "last.pth").read_bytes() == weights
    assert "epoch 1:" not in requeued.err  # nothing trained again
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    named = run_cli("train", smear, *FAST, "--output-dir", tmp_path, "--name", "mine")
    assert named.code == 0 and (tmp_path / "mine").is_dir()
    # A repeat of a run's config.yaml inside a job is that job's run too.
    monkeypatch.setenv("SLURM_JOB_ID", "778")
    repeat = run_cli("train", "--config", tmp_path / "mine" / "config.yaml")
    assert repeat.code == 0, repeat.err
    assert (tmp_path / "slurm-778" / "last.pth").is_file()


def test_precision_auto_is_resolved_and_recorded(trained: Path) -> None:
    """config.yaml records what `--precision auto` chose on this machine, so a resume on other
    hardware keeps it; channels-last and the label index are in place."""
    from yogo.config import load_config
    from yogo.dist import resolve_precision

    cfg = load_config(trained / "config.yaml")
    assert cfg.precision == resolve_precision("auto", torch.device("cpu"))
    assert cfg.precision in ("bf16", "32") and cfg.channels_last and cfg.cache == "auto"
    assert list((trained.parent / ".yogo-cache" / "labels-v4").glob("[!.]*.npz"))


def test_compile_trains_and_reports_its_time(smear: Path, tmp_path: Path, run_cli) -> None:
    result = run_cli("train", smear, *FAST, "--compile", "--output-dir", tmp_path, "--name", "c")
    assert result.code == 0, result.err
    assert "torch.compile: " in result.err and "not counted in images/s" in result.err
    assert "compile: true" in (tmp_path / "c" / "config.yaml").read_text()


def test_a_dead_class_is_named_when_the_mean_looks_fine() -> None:
    from yogo.training.report import dead_classes

    def report(mean: float, small: float | None) -> dict[str, object]:
        per_class = {
            "cell": {"AP50": 0.99, "num_true": 900},
            "small": {"AP50": small, "num_true": 81},
        }
        return {"mAP50": mean, "per_class": per_class}

    (line,) = dead_classes(report(0.66, 0.004))
    assert "class 'small': val AP@0.5 0.004 while mAP@0.5 is 0.660" in line and "81" in line
    assert dead_classes(report(0.3, 0.004)) == []  # early epochs: nothing looks fine yet
    assert dead_classes(report(0.9, 0.8)) == [] and dead_classes(report(0.9, None)) == []


def test_neighbour_cells_give_the_model_the_wider_centre_decoding(
    smear: Path, tmp_path: Path, run_cli
) -> None:
    result = run_cli(
        "train", smear, *FAST, "--neighbour-cells", "--output-dir", tmp_path, "--name", "nb"
    )
    assert result.code == 0, result.err
    payload = torch.load(tmp_path / "nb" / "last.pth", weights_only=True)
    assert payload["model"]["centre_range"] == 2.0 and payload["config"]["neighbour_cells"]


def test_a_class_without_training_objects_is_warned_about(tmp_path: Path, run_cli) -> None:
    ddf = write_dataset(tmp_path / "d", 8, (64, 96), seed=1, class_frequencies=(1, 0, 0))
    result = run_cli("train", ddf, *FAST, "--output-dir", tmp_path / "o")
    assert result.code == 0, result.err
    for name in ("ring", "trophozoite"):
        assert f"warning: no object of class '{name}' in the train split" in result.err


API = """
import logging, sys
import yogo
if sys.argv[2] == "configured":
    logging.basicConfig(level=logging.WARNING, format="mine: %(message)s")
yogo.train(yogo.TrainConfig(ddf=sys.argv[1], epochs=1, batch_size=4, num_workers=0,
                            wandb=False, output_dir=sys.argv[3]))
"""


def test_the_python_api_prints_what_the_cli_prints(smear: Path, tmp_path: Path) -> None:
    """yogo.train() trained silently: logging was never set up. A caller that set up logging
    keeps its own handlers."""
    started = {
        mode: subprocess.Popen(
            [sys.executable, "-c", API, str(smear), mode, str(tmp_path / mode)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in ("plain", "configured")  # side by side: each is mostly a start-up
    }
    runs = {}
    for mode, process in started.items():
        out, err = process.communicate(timeout=600)
        runs[mode] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        assert process.returncode == 0, err[-2000:]
    assert "epoch 1: loss" in runs["plain"].stderr and "run folder:" in runs["plain"].stderr
    assert "run folder:" not in runs["configured"].stderr  # INFO: below the caller's level


def test_the_hard_frame_pool_is_the_worst_share_of_the_frames_seen() -> None:
    from yogo.training.loop import hardest_frames

    sums = torch.tensor([1.0, 9.0, 5.0, 0.0, 30.0, 2.0])
    counts = torch.tensor([1.0, 1.0, 2.0, 0.0, 3.0, 1.0])  # frame 3 unseen; means 1 9 2.5 - 10 2
    assert hardest_frames(torch.stack([sums, counts]), 0.34) == [1, 2, 4]  # ceil(2.04) = 3
    assert hardest_frames(torch.stack([sums, counts]), 0.2) == [1, 4]  # ceil(1.2) = 2
    assert hardest_frames(torch.stack([sums, counts]), 0.9) == [0, 1, 2, 4, 5]  # seen only
