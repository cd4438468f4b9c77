"""`yogo test --folds RUN_DIR...`: the runs of `yogo train --folds K --fold I`, each tested on
the fold it held out, summed up per class as mean +- std over the folds.

    report = test_folds(TestConfig(folds=["runs/fold0", "runs/fold1", "runs/fold2"]))
    print(format_fold_report(report))

Is the model's quality a property of the data or of which specimens happened to be held out?
The spread over the folds says (docs/training.md, "Folds by specimen").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from yogo.config import TestConfig, TrainConfig, load_config
from yogo.ddf import ddf_inputs
from yogo.errors import UserError
from yogo.evaluation.testing import test
from yogo.outputs import Inputs

SUMMED = ("AP50", "recall", "count_error")  # per class, over the folds


def _runs(run_dirs: list[str]) -> list[tuple[Path, TrainConfig]]:
    """Each run folder with its training settings; one DDF and one K for all, each fold once."""
    runs = []
    for run in map(Path, run_dirs):
        config = load_config(run / "config.yaml")
        if config.folds is None or config.fold is None:
            raise UserError(
                "was not trained with --folds",
                path=run,
                fix="give the run folders of `yogo train DDF --folds K --fold I` "
                "(scripts/submit_folds.sh)",
            )
        runs.append((run, config))
    first_run, first = runs[0]
    held_out: dict[int, Path] = {}
    for run, config in runs:
        if (Path(config.ddf).resolve(), config.folds) != (Path(first.ddf).resolve(), first.folds):
            raise UserError(
                f"was trained on {config.ddf} with --folds {config.folds}, and {first_run} on "
                f"{first.ddf} with --folds {first.folds}: folds of different cuts do not add up",
                path=run,
                fix="give the runs of one `scripts/submit_folds.sh` job",
            )
        assert config.fold is not None
        if config.fold in held_out:
            raise UserError(
                f"holds out fold {config.fold}, as {held_out[config.fold]} does",
                path=run,
                fix="give each fold's run once",
            )
        held_out[config.fold] = run
    return runs


def fold_inputs(run_dirs: list[str]) -> Inputs:
    """What `yogo test --folds` reads: each run's best.pth and config.yaml, and the DDF."""
    runs = _runs(run_dirs)
    files = [p for run, _ in runs for p in (run / "best.pth", run / "config.yaml")]
    return Inputs.of(*files) | ddf_inputs(runs[0][1].ddf)


def test_folds(cfg: TestConfig) -> dict[str, Any]:
    """Each run's best.pth on the fold it held out (its val split), and per class the mean
    and standard deviation (n - 1) over the folds of AP@0.5, recall and count error."""
    runs = _runs(cfg.folds or [])
    reports = []
    for run, config in sorted(runs, key=lambda pair: pair[1].fold or 0):
        one = dataclasses.replace(
            cfg, folds=None, checkpoint=str(run / "best.pth"), ddf=config.ddf, split="val"
        )
        assert config.folds is not None and config.fold is not None
        reports.append(
            {"fold": config.fold, "run": str(run), **test(one, (config.folds, config.fold))}
        )
    names = list(reports[0]["per_class"])
    per_class = {
        name: {key: _spread([r["per_class"][name][key] for r in reports]) for key in SUMMED}
        for name in names
    }
    folds = runs[0][1].folds
    return {
        "ddf": runs[0][1].ddf,
        "folds": folds,
        "tested": [r["fold"] for r in reports],
        "mAP50": _spread([r["mAP50"] for r in reports]),
        "per_class": per_class,
        "fold_reports": reports,
    }


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
    lines = [
        f"{len(tested)} of {folds} folds of {report['ddf']} (each run on the fold it held out: "
        f"{', '.join(map(str, tested))})",
        f"mAP@0.5 {cell(report['mAP50'])}",
        "",
        f"{'class':<16}{'AP@0.5':>18}{'recall':>18}{'count error':>20}   AP@0.5 per fold",
    ]
    for name, values in report["per_class"].items():
        per_fold = " ".join("-" if v is None else f"{v:.3f}" for v in values["AP50"]["values"])
        lines.append(
            f"{name:<16}{cell(values['AP50']):>18}{cell(values['recall']):>18}"
            f"{cell(values['count_error'], percent=True):>20}   {per_fold}"
        )
    if len(tested) < folds:
        missing = sorted(set(range(folds)) - set(tested))
        lines.append(f"folds not given: {', '.join(map(str, missing))}")
    return "\n".join(lines)
