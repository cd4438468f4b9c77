"""yogo.evaluation.counting: thresholds chosen on validation, Platt calibration and ECE, and
counts corrected with the validation confusion matrix, whose 95% intervals must cover the
truth in about 95% of repeated measurements."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from yogo.errors import UserError
from yogo.evaluation.counting import (
    CountModel,
    Ratio,
    choose_thresholds,
    expected_calibration_error,
    fit_count_model,
    fit_platt,
)
from yogo.evaluation.metrics import DetectionMetrics

NAMES = ("healthy", "ring", "troph")
# P(counted as healthy, ring, troph) per true class; the rest of each row is missed.
MIXING = np.array([[0.93, 0.02, 0.01], [0.08, 0.85, 0.02], [0.03, 0.05, 0.80]])
FALSE_PER_FRAME = np.array([0.3, 0.05, 0.1])
PER_FRAME = np.array([60, 3, 5])


def frame_confusion(true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One frame's confusion matrix in the simulated world."""
    n = len(true)
    confusion = np.zeros((n + 1, n + 1), dtype=np.int64)
    for i in range(n):
        confusion[i] = rng.multinomial(true[i], np.append(MIXING[i], 1 - MIXING[i].sum()))
    confusion[n, :n] = rng.poisson(FALSE_PER_FRAME)
    return confusion


def measure(rng: np.random.Generator, val_frames: int, frames: int) -> tuple:
    """A validation split and a specimen from the simulated world: the model fitted on the
    split, the specimen's true and counted totals."""
    val = np.stack([frame_confusion(rng.poisson(PER_FRAME), rng) for _ in range(val_frames)])
    model = CountModel(NAMES, (0.5,) * 3, ("unbiased",) * 3, ((1.0, 0.0),) * 3, val, "sim")
    true = rng.poisson(PER_FRAME, size=(frames, 3))
    counted = sum(frame_confusion(t, rng)[:, :3].sum(axis=0) for t in true)
    return model, true.sum(axis=0), counted


def test_the_95_intervals_cover_the_true_counts_in_about_95_percent_of_draws() -> None:
    """200 repeats of the whole measurement (a new validation split of 24 frames, a new
    specimen of 50 frames): each class's interval holds its true count in 90-99% of them, and
    the corrected counts are unbiased where the raw ones are not (rings 8% of them misread)."""
    rng = np.random.default_rng(7)
    inside, corrected_error, raw_error = [], [], []
    for _ in range(200):
        model, true, counted = measure(rng, val_frames=24, frames=50)
        counts = model.correct(counted, 50, seed=int(rng.integers(1 << 31)))
        assert counts.ci95 is not None and counts.corrected is not None
        inside.append((counts.ci95[:, 0] <= true) & (true <= counts.ci95[:, 1]))
        corrected_error.append(counts.corrected / true - 1)
        raw_error.append(counted / true - 1)
    coverage = np.mean(inside, axis=0)
    shown = ", ".join(f"{n} {c:.3f}" for n, c in zip(NAMES, coverage, strict=True))
    print(f"\n95% interval coverage over 200 draws: {shown}")
    assert ((coverage >= 0.90) & (coverage <= 0.99)).all(), coverage
    assert np.abs(np.mean(corrected_error, axis=0)).max() < 0.02
    assert np.abs(np.mean(raw_error, axis=0)).max() > 0.05  # what the correction removes


def test_without_a_fitted_model_counts_are_raw_and_have_no_interval() -> None:
    counts = CountModel.default(NAMES).correct([10, 2, 0], 5, [Ratio.parse("ring/healthy", NAMES)])
    plain = counts.to_plain()
    assert plain["per_class"]["ring"] == {"count": 2, "count_corrected": None, "count_ci95": None}
    assert plain["ratios"]["ring/healthy"] == {"value": None, "ci95": None}


def test_ratios_sum_classes_and_carry_intervals() -> None:
    rng = np.random.default_rng(3)
    model, true, counted = measure(rng, val_frames=40, frames=100)
    ratio = Ratio.parse("ring+troph/healthy", NAMES)
    counts = model.correct(counted, 100, [ratio])
    assert counts.ratio_values is not None and counts.ratio_ci95 is not None
    truth = (true[1] + true[2]) / true[0]
    low, high = counts.ratio_ci95[0]
    assert low < counts.ratio_values[0] < high
    assert low <= truth <= high
    assert counts.ratio_values[0] == pytest.approx(truth, rel=0.15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ring", "exactly one '/'"),
        ("ring/healthy/troph", "exactly one '/'"),
        ("ring+gametocyte/healthy", "'gametocyte' is not a class"),
        ("ring+/healthy", "has an empty class name"),
    ],
)
def test_a_bad_ratio_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as e:
        Ratio.parse(text, NAMES)
    assert "healthy, ring, troph" in str(e.value)


def test_thresholds_make_the_count_unbiased_else_f1_optimal_else_default() -> None:
    objectness = [
        np.array([0.9, 0.8, 0.7, 0.4, 0.3]),  # 3 labels: keep the 3 most confident
        np.array([0.9, 0.2]),  # 4 labels, 2 detections: cannot match, F1
        np.array([0.6]),  # no labels
    ]
    hits = [np.array([1, 1, 0, 1, 0], bool), np.array([1, 0], bool), np.array([0], bool)]
    thresholds, rules = choose_thresholds(objectness, hits, np.array([3, 4, 0]))
    assert rules == ("unbiased", "f1", "default")
    assert thresholds[0] == pytest.approx(0.55)  # between 0.7 (kept) and 0.4 (dropped)
    # F1 with only the first (1 right of 4): 0.4; with both (1 right): 1/3
    assert thresholds[1] == pytest.approx(0.55)
    assert thresholds[2] == 0.5


def test_platt_scaling_fixes_overconfident_scores() -> None:
    """Scores that claim 0.9 for detections right 60% of the time: the fit brings the ECE
    from ~0.3 to near 0."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.8, 0.99, 3000)
    right = rng.uniform(size=3000) < 0.6
    classes = np.zeros(3000, dtype=np.int64)
    (platt,) = fit_platt(scores, classes, right, 1)
    model = CountModel(("a",), (0.5,), ("unbiased",), (platt,), None, "")
    before = expected_calibration_error(scores, right)
    after = expected_calibration_error(model.calibrate(scores, classes), right)
    assert before is not None and after is not None
    assert before > 0.25 and after < 0.03


def test_fitting_on_detections_picks_thresholds_calibration_and_the_frame_matrices() -> None:
    """Two frames: a ring at objectness 0.3 is right, a false ring at 0.2 is not; the ring
    threshold goes between them (one label, one kept), the healthy one keeps its one cell."""
    metrics = DetectionMetrics(("healthy", "ring"))
    box = [0.1, 0.1, 0.2, 0.2]
    other = [0.5, 0.5, 0.6, 0.6]
    far = [0.8, 0.8, 0.9, 0.9]
    metrics.images = [
        (
            np.array([[*box, 0.9, 0.8, 0], [*other, 0.3, 0.9, 1], [*far, 0.2, 0.9, 1]]),
            np.array([[0, *box], [1, *other]]),
        ),
        (np.zeros((0, 7)), np.zeros((0, 5))),
    ]
    model = fit_count_model(metrics, "two frames")
    assert model.rules == ("unbiased", "unbiased")
    assert model.thresholds[1] == pytest.approx(0.25)
    assert model.confusion is not None and model.confusion.shape == (2, 3, 3)
    assert model.confusion[0].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert model.confusion[1].sum() == 0
    again = CountModel.from_plain(model.to_plain(), ("healthy", "ring"))
    assert again.thresholds == model.thresholds and again.platt == model.platt
    with pytest.raises(ValueError, match="does not match"):
        CountModel.from_plain(model.to_plain(), ("healthy", "ring", "troph"))


# --- through the commands (a trained model) ----------------------------------------------


def stripped(checkpoint: Path, out: Path) -> Path:
    """`checkpoint` as yogo wrote it before fitting thresholds: no counting entry."""
    payload = torch.load(checkpoint, weights_only=True)
    payload.pop("counting")
    torch.save(payload, out)
    return out


@pytest.mark.slow
def test_training_fits_the_counting_into_best_pth_and_test_uses_it(
    trained_run, run_cli, tmp_path: Path
) -> None:
    best = trained_run.run / "best.pth"
    stored = torch.load(best, weights_only=True)["counting"]
    assert len(stored["thresholds"]) == 3 and set(stored["rules"]) <= {"unbiased", "f1", "default"}
    assert (trained_run.run / "val_reliability.png").is_file()
    result = run_cli(
        "test", best, trained_run.ddf, "--json", tmp_path / "t.json", "--ratio", "ring/healthy"
    )
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["counting"]["corrected"] and "val split" in report["counting"]["fitted_on"]
    assert report["ece"] is not None and report["ece_raw"] is not None
    for name, c in report["per_class"].items():
        i = report["class_names"].index(name)
        assert c["threshold"] == pytest.approx(stored["thresholds"][i])
        assert {"count_error", "count_corrected", "count_ci95", "ece"} <= set(c)
        if c["count_corrected"] is not None:
            low, high = c["count_ci95"]
            assert low <= c["count_corrected"] <= high
    assert "ring/healthy" in report["ratios"]
    (entry,) = report["specimens"].values()  # the synthetic set is one DDF entry
    assert entry["frames"] == report["num_images"]
    # --obj-thresh replaces the thresholds for every class, says so, and corrects nothing
    given = run_cli(
        "test", best, trained_run.ddf, "--obj-thresh", "0.4", "--json", tmp_path / "g.json"
    )
    assert given.code == 0 and "--obj-thresh 0.4 for every class instead of" in given.err
    report = json.loads((tmp_path / "g.json").read_text())
    assert {c["threshold"] for c in report["per_class"].values()} == {0.4}
    assert all(c["count_corrected"] is None for c in report["per_class"].values())


@pytest.mark.slow
def test_fit_thresholds_writes_a_new_checkpoint_and_never_the_input(
    trained_run, run_cli, tmp_path: Path
) -> None:
    """An old checkpoint (no counting entry) gets 0.5 with a note; --fit-thresholds writes
    the fitted copy (the same weights) to a new file, never over its input or an existing
    file without --force."""
    old = stripped(trained_run.run / "best.pth", tmp_path / "old.pth")
    before = old.read_bytes()
    plain = run_cli("test", old, trained_run.ddf, "--json", tmp_path / "o.json")
    assert plain.code == 0 and "no thresholds fitted on validation" in plain.err
    report = json.loads((tmp_path / "o.json").read_text())
    assert {c["threshold"] for c in report["per_class"].values()} == {0.5}
    for force in ([], ["--force"]):
        onto = run_cli("test", old, trained_run.ddf, "--fit-thresholds", old, *force)
        assert onto.code == 2 and "input" in onto.err
    fitted = tmp_path / "fitted.pth"
    made = run_cli("test", old, trained_run.ddf, "--fit-thresholds", fitted)
    assert made.code == 0, made.err
    assert old.read_bytes() == before
    new = torch.load(fitted, weights_only=True)
    original = torch.load(trained_run.run / "best.pth", weights_only=True)
    assert new["counting"]["thresholds"] == pytest.approx(original["counting"]["thresholds"])
    assert all(torch.equal(new["state_dict"][k], v) for k, v in original["state_dict"].items())
    again = run_cli("test", old, trained_run.ddf, "--fit-thresholds", fitted)
    assert again.code == 2 and "--force" in again.err


def test_a_yogo_1_0_1_model_counts_at_0_5_with_a_note() -> None:
    from yogo.deploy.predictor import load_predictor
    from yogo.evaluation.counting import old_checkpoint_note

    fixture = Path(__file__).parent / "fixtures" / "yogo-v1" / "base_model_7cls_772x1032.pth"
    predictor = load_predictor(fixture, "cpu")
    assert predictor.counting.thresholds == (0.5,) * 7 and not predictor.counting.fitted
    note = old_checkpoint_note(predictor.counting)
    assert note is not None and "0.5 for every class" in note


@pytest.mark.slow
def test_infer_counts_per_specimen_with_the_models_thresholds_pth_and_onnx_alike(
    trained_run, run_cli, tmp_path: Path
) -> None:
    """Two folders of frames are two specimens; counts.json has the raw and corrected counts
    with intervals for each and for all; the .onnx carries the same counting as the .pth."""
    from yogo.data.scan import scan_dataset
    from yogo.ddf import DatasetDefinition

    samples = scan_dataset(DatasetDefinition.from_yaml(trained_run.ddf)).splits["test"]
    frames = tmp_path / "frames"
    for i, sample in enumerate(samples):
        (frames / f"slide{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(sample.image, frames / f"slide{i % 2}" / sample.image.name)
    best = trained_run.run / "best.pth"
    onnx = tmp_path / "m.onnx"
    assert run_cli("export", best, "--output-filename", onnx).code == 0
    documents = {}
    for model in (best, onnx):
        out = tmp_path / model.suffix.strip(".")
        result = run_cli(
            "infer", model, "--path-to-images", frames, "--recursive", "--output-dir", out,
            "--count", "--ratio", "ring+trophozoite/healthy",
        )  # fmt: skip
        assert result.code == 0, result.err
        assert "counts at per-class objectness thresholds" in result.out
        documents[model.suffix] = json.loads((out / "counts.json").read_text())
        detections = json.loads((out / "predictions.json").read_text())["images"][0]
        assert all(0 <= d["calibrated_confidence"] <= 1 for d in detections["detections"])
    counts = documents[".pth"]
    assert counts == documents[".onnx"]
    assert sorted(counts["specimens"]) == ["slide0", "slide1"]
    assert counts["all"]["frames"] == len(samples)
    for name, c in counts["all"]["per_class"].items():
        parts = [s["per_class"][name]["count"] for s in counts["specimens"].values()]
        assert c["count"] == sum(parts)
    assert "ring+trophozoite/healthy" in counts["all"]["ratios"]


@pytest.mark.slow
def test_bad_counting_inputs_are_one_message_each(trained_run, run_cli, tmp_path: Path) -> None:
    """A damaged counting entry names the file and how to fit it again; --fit-thresholds
    needs a val split to fit on; --ratio names a class the model has."""
    payload = torch.load(trained_run.run / "best.pth", weights_only=True)
    payload["counting"]["thresholds"] = [0.5, 2.0, 0.5]
    damaged = tmp_path / "damaged.pth"
    torch.save(payload, damaged)
    result = run_cli("test", damaged, trained_run.ddf)
    assert result.code == 2 and "damaged.pth" in result.err
    assert "damaged counting entry" in result.err and "--fit-thresholds NEW.pth" in result.err
    no_val = run_cli(
        "test", trained_run.run / "best.pth", trained_run.ddf, "--fit-thresholds",
        tmp_path / "new.pth", "--dataset-split-override", "0.5", "0", "0.5",
    )  # fmt: skip
    assert no_val.code == 2 and "val split" in no_val.err and not (tmp_path / "new.pth").exists()
    ratio = run_cli("test", trained_run.run / "best.pth", trained_run.ddf, "--ratio", "ring/rbc")
    assert ratio.code == 2 and "'rbc' is not a class of this model" in ratio.err
