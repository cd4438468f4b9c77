"""Several models and test-time flips in `yogo test` and `yogo infer` (yogo.deploy.ensemble,
yogo.model.fusion), with a trained model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from yogo.data.scan import scan_dataset
from yogo.ddf import DatasetDefinition

pytestmark = pytest.mark.slow  # every test runs a trained model


def report_of(run_cli, tmp_path: Path, name: str, *args: object) -> dict:
    out = tmp_path / f"{name}.json"
    result = run_cli("test", *args, "--json", out)
    assert result.code == 0, result.err
    report: dict = json.loads(out.read_text())
    return report


def test_a_model_with_itself_is_the_model_and_flips_keep_what_it_finds(
    trained_run, run_cli, tmp_path: Path
) -> None:
    best, last = trained_run.run / "best.pth", trained_run.run / "last.pth"
    alone = report_of(run_cli, tmp_path, "alone", best, trained_run.ddf)
    twice = report_of(run_cli, tmp_path, "twice", best, trained_run.ddf, "--model", best)
    assert twice["models"] == [str(best), str(best)] and "models" not in alone
    for name, values in alone["per_class"].items():
        assert twice["per_class"][name]["AP50"] == pytest.approx(values["AP50"], abs=1e-9)
    # Boxes found on flipped frames land on the objects again: no class loses its AP (a box
    # mapped back wrongly would match nothing).
    flips = report_of(run_cli, tmp_path, "flips", best, trained_run.ddf, "--tta")
    assert flips["tta"] is True
    both = report_of(run_cli, tmp_path, "both", best, trained_run.ddf, "--model", last, "--tta")
    assert alone["mAP50"] > 0.5
    for report in (flips, both):
        for name, values in alone["per_class"].items():
            assert report["per_class"][name]["AP50"] >= values["AP50"] - 0.1, (name, report)


def test_infer_fuses_models_and_flips_into_every_output(
    trained_run, run_cli, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    samples = scan_dataset(DatasetDefinition.from_yaml(trained_run.ddf)).splits["test"]
    for s in samples:
        shutil.copy(s.image, frames / s.image.name)
    best, last = trained_run.run / "best.pth", trained_run.run / "last.pth"
    common = ("--path-to-images", frames, "--save-preds", "--count")
    single = run_cli("infer", best, *common, "--output-dir", tmp_path / "one")
    fused = run_cli(
        "infer", best, "--model", last, "--tta", *common, "--output-dir", tmp_path / "many"
    )
    assert single.code == 0 and fused.code == 0, fused.err
    assert "2 model(s) x 4 flip(s), wbf" in fused.out
    comment = (tmp_path / "many" / "ddf.yml").read_text().splitlines()[0]
    assert "best.pth + last.pth with flips (--tta)" in comment
    one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    many = json.loads((tmp_path / "many" / "predictions.json").read_text())
    assert many["model_files"] == [str(best), str(last)] and many["tta"] is True
    count = [sum(len(f["detections"]) for f in p["images"]) for p in (one, many)]
    truth = sum(len(s.boxes) for s in samples)
    assert abs(count[1] - truth) <= max(abs(count[0] - truth), 0.1 * truth), (count, truth)
    assert len(list((tmp_path / "many" / "labels").glob("*.txt"))) == len(samples)


def test_models_that_do_not_match_and_fitting_an_ensemble_are_refused(
    trained_run, run_cli, tmp_path: Path
) -> None:
    best = trained_run.run / "best.pth"
    payload = torch.load(best, weights_only=True)
    names = payload["model"]["class_names"]
    payload["model"]["class_names"] = payload["counting"]["class_names"] = [*names[:-1], "x"]
    renamed = tmp_path / "renamed.pth"
    torch.save(payload, renamed)
    before = {p: p.read_bytes() for p in (best, renamed)}
    for command in (
        ("test", best, trained_run.ddf, "--model", renamed),
        ("infer", best, "--model", renamed, "--path-to-images", trained_run.ddf.parent),
    ):
        result = run_cli(*command)
        assert result.code == 2, result
        assert "must share their class names" in result.err and "renamed.pth" in result.err
    refused = run_cli(
        "test", best, trained_run.ddf, "--model", best, "--fit-thresholds", tmp_path / "f.pth"
    )
    assert refused.code == 2 and "fit each checkpoint on its own" in refused.err
    missing = run_cli("test", best, trained_run.ddf, "--model", tmp_path / "nowhere.pth")
    assert missing.code == 2 and "nowhere.pth" in missing.err
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "f.pth").exists()
    assert yaml.safe_load(trained_run.ddf.read_text())  # the DDF is untouched and readable
