"""`yogo test --folds RUN_DIR...`: the runs of `yogo train --folds K --fold I`, each tested on
the fold it held out, summed up per class as mean +- std over the folds.

    report = test_folds(TestConfig(folds=["runs/fold0", "runs/fold1", "runs/fold2"]))
    print(format_fold_report(report))

Is the model's quality a property of the data or of which specimens happened to be held out?
The spread over the folds says (docs/training.md, "Folds by specimen").
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yogo.config import Split, TestConfig, load_config
from yogo.ddf import DatasetDefinition, ddf_inputs
from yogo.errors import UserError
from yogo.evaluation.testing import test
from yogo.outputs import Inputs


@dataclass(frozen=True)
class FoldRun:
    """A run of `yogo train DDF --folds K --fold I`."""

    path: Path
    ddf: str
    folds: int
    fold: int


def _runs(run_dirs: list[str]) -> list[FoldRun]:
    """The runs in fold order; one DDF and one K for all, each fold once."""
    runs = []
    for path in map(Path, run_dirs):
        config = load_config(path / "config.yaml")
        if config.folds is None or config.fold is None:
            raise UserError(
                "was not trained with --folds",
                path=path,
                fix="give the run folders of `yogo train DDF --folds K --fold I` "
                "(scripts/submit_folds.sh)",
            )
        runs.append(FoldRun(path, config.ddf, config.folds, config.fold))
    first = runs[0]
    held_out: dict[int, Path] = {}
    for run in runs:
        if (Path(run.ddf).resolve(), run.folds) != (Path(first.ddf).resolve(), first.folds):
            raise UserError(
                f"was trained on {run.ddf} with --folds {run.folds}, and {first.path} on "
                f"{first.ddf} with --folds {first.folds}: folds of different cuts do not add up",
                path=run.path,
                fix="give the runs of one `scripts/submit_folds.sh` job",
            )
        if run.fold in held_out:
            raise UserError(
                f"holds out fold {run.fold}, as {held_out[run.fold]} does",
                path=run.path,
                fix="give each fold's run once",
            )
        held_out[run.fold] = run.path
    return sorted(runs, key=lambda run: run.fold)


def fold_inputs(run_dirs: list[str]) -> Inputs:
    """What `yogo test --folds` reads: each run's best.pth and config.yaml, and the DDF."""
    runs = _runs(run_dirs)
    files = [run.path / name for run in runs for name in ("best.pth", "config.yaml")]
    return Inputs.of(*files) | ddf_inputs(runs[0].ddf)


def test_folds(cfg: TestConfig) -> dict[str, Any]:
    """Each run's best.pth on the fold it held out (its val split) for AP@0.5, and on the
    test split (test_paths), when the DDF has one, for recall and count error: a run's
    thresholds were fitted on the fold it held out, so its counts there match by construction.
    Per class, the mean and standard deviation (n - 1) over the folds."""
    runs = _runs(cfg.folds or [])
    first = runs[0]
    cut = DatasetDefinition.from_yaml(first.ddf, folds=(first.folds, first.fold))
    test_frames = len(cut.splits["test"])
    held_out = [_test_run(cfg, run, "val") for run in runs]
    tested = [_test_run(cfg, run, "test") for run in runs] if test_frames else []
    per_class = {}
    for name in held_out[0]["per_class"]:
        per_class[name] = {"AP50": _spread([r["per_class"][name]["AP50"] for r in held_out])}
        for key in ("recall", "count_error") if tested else ():
            per_class[name][key] = _spread([r["per_class"][name][key] for r in tested])
    return {
        "ddf": first.ddf,
        "folds": first.folds,
        "tested": [run.fold for run in runs],
        "test_frames": test_frames,
        "mAP50": _spread([r["mAP50"] for r in held_out]),
        "per_class": per_class,
        "fold_reports": [
            {"fold": run.fold, "run": str(run.path), "held_out": held, "test": test_report}
            for run, held, test_report in itertools.zip_longest(runs, held_out, tested)
        ],
    }


def _test_run(cfg: TestConfig, run: FoldRun, split: Split) -> dict[str, Any]:
    """`yogo test RUN/best.pth DDF --split SPLIT` on the run's cut, with cfg's other flags."""
    checkpoint = str(run.path / "best.pth")
    one = dataclasses.replace(cfg, folds=None, checkpoint=checkpoint, ddf=run.ddf, split=split)
    return test(one, (run.folds, run.fold))


def _spread(values: list[float | None]) -> dict[str, Any]:
    """Mean and standard deviation (n - 1) of the folds that have a value (a class without
    objects in a fold has no AP there), and the values themselves."""
    present = np.asarray([v for v in values if v is not None], dtype=np.float64)
    mean = float(present.mean()) if len(present) else None
    std = float(present.std(ddof=1)) if len(present) > 1 else None
    return {"mean": mean, "std": std, "values": values}


def format_fold_report(report: dict[str, Any]) -> str:
    """The per-class table: mean +- std over the folds, then each fold's value."""

    def cell(spread: dict[str, Any], percent: bool = False) -> str:
        mean, std = spread["mean"], spread["std"]
        if mean is None:
            return "-"
        if percent:
            return f"{mean:+.1%}" + ("" if std is None else f" ± {std:.1%}")
        return f"{mean:.3f}" + ("" if std is None else f" ± {std:.3f}")

    tested, folds = report["tested"], report["folds"]
    none = {"mean": None, "std": None}
    lines = [
        f"{len(tested)} of {folds} folds of {report['ddf']} (folds {', '.join(map(str, tested))})",
        f"mAP@0.5 on each run's held-out fold {cell(report['mAP50'])}",
        "AP@0.5: on each run's held-out fold; "
        + (
            f"recall and count error: on the test split ({report['test_frames']} frames) at "
            "each run's thresholds"
            if report["test_frames"]
            else "recall and count error need test_paths in the DDF (each run's thresholds "
            "were fitted on the fold it held out, so its counts there say nothing)"
        ),
        "",
        f"{'class':<16}{'AP@0.5':>18}{'recall':>18}{'count error':>20}   AP@0.5 per fold",
    ]
    for name, values in report["per_class"].items():
        per_fold = " ".join("-" if v is None else f"{v:.3f}" for v in values["AP50"]["values"])
        recall, error = values.get("recall", none), values.get("count_error", none)
        lines.append(
            f"{name:<16}{cell(values['AP50']):>18}{cell(recall):>18}"
            f"{cell(error, percent=True):>20}   {per_fold}"
        )
    if len(tested) < folds:
        missing = sorted(set(range(folds)) - set(tested))
        lines.append(f"folds not given: {', '.join(map(str, missing))}")
    return "\n".join(lines)
