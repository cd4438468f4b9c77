"""Folds by specimen: `yogo train --folds K --fold I` and `yogo test --folds RUN_DIR...`
(yogo.ddf.specimen_folds, yogo.evaluation.folds), on three synthetic specimens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import yogo
from yogo.data.synth import write_dataset
from yogo.ddf import DatasetDefinition

SPECIMENS = {"smear_a": 12, "smear_b": 10, "smear_c": 8}


@pytest.fixture(scope="module")
def specimens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DDF over three specimens (one folder pair each) and a test_paths pair."""
    root = tmp_path_factory.mktemp("folds")
    lines = ["class_names: [healthy, ring, trophozoite]", "dataset_paths:"]
    for seed, (name, n) in enumerate({**SPECIMENS, "held": 6}.items()):
        write_dataset(root / name, n, (64, 96), seed=seed)
        if name == "held":
            lines.append("test_paths:")
        lines += [f"  {name}:", f"    image_path: {name}/images", f"    label_path: {name}/labels"]
    (root / "ddf.yml").write_text("\n".join(lines) + "\n")
    return root / "ddf.yml"


def test_bad_fold_settings_stop_before_any_work(run_cli, specimens: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    for args, message in (
        (["--folds", "3"], "--folds K and --fold I go together"),
        (["--folds", "3", "--fold", "3"], "--fold 3 is not a fold of --folds 3"),
        (["--folds", "1", "--fold", "0"], "--folds must be at least 2"),
        (["--folds", "4", "--fold", "0"], "--folds 4 needs at least 4 specimens"),
        (
            ["--folds", "3", "--fold", "0", "--dataset-split-override", "0.8", "0.2", "0"],
            "--dataset-split-override",
        ),
    ):
        result = run_cli("train", specimens, *args, "--output-dir", out, "--no-wandb")
        assert result.code == 2 and message in result.err, (args, result.err)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow
def test_each_fold_trains_on_the_others_and_test_sums_up_the_folds(
    run_cli, specimens: Path, tmp_path: Path, trained_run
) -> None:
    runs = []
    for fold in range(3):
        run = yogo.train(
            yogo.TrainConfig(
                ddf=str(specimens), folds=3, fold=fold, epochs=2, batch_size=4, num_workers=0,
                wandb=False, output_dir=str(tmp_path / "runs"), name=f"fold{fold}",
            )
        )  # fmt: skip
        record = (run / "config.yaml").read_text()
        held_out = DatasetDefinition.from_yaml(specimens, folds=(3, fold)).splits["val"]
        assert f"val: {len(held_out)}" in record and "test: 6" in record
        runs.append(run)
    report_path = tmp_path / "folds.json"
    result = run_cli("test", "--folds", *runs, "--json", report_path)
    assert result.code == 0, result.err
    report = json.loads(report_path.read_text())
    assert report["folds"] == 3 and report["tested"] == [0, 1, 2]
    folds = report["fold_reports"]
    frames = [r["held_out"]["num_images"] for r in folds]
    assert sorted(frames) == sorted(SPECIMENS.values())  # each fold is one whole specimen
    assert [r["test"]["num_images"] for r in folds] == [6, 6, 6] and report["test_frames"] == 6
    healthy = report["per_class"]["healthy"]
    values = [v for v in healthy["AP50"]["values"] if v is not None]
    assert healthy["AP50"]["mean"] == pytest.approx(sum(values) / len(values))
    assert healthy["AP50"]["std"] is not None and healthy["AP50"]["std"] >= 0
    # Counts on the test split: each run's thresholds were fitted on its held-out fold.
    errors = [r["test"]["per_class"]["healthy"]["count_error"] for r in folds]
    assert healthy["count_error"]["values"] == errors
    assert "on the test split (6 frames)" in result.out and "± " in result.out

    # Runs of different cuts, a fold twice, and a run not trained with folds are refused.
    for args, message in (
        ([runs[0], runs[0]], "holds out fold 0, as"),
        ([runs[0], trained_run.run], "was not trained with --folds"),
        ([runs[0], "--model", runs[1] / "best.pth"], "cannot go with it"),
    ):
        refused = run_cli("test", "--folds", *args)
        assert refused.code == 2 and message in refused.err, (args, refused.err)
    missing = run_cli("test", specimens)
    assert missing.code == 2 and "needs a CHECKPOINT and a DDF" in missing.err
