"""`yogo test`: evaluate a checkpoint on one split of a DDF.

    report = test(TestConfig(checkpoint="run/best.pth", ddf="data.yml", split="test"))
    print(format_test_report(report))

The report holds COCO-rule AP per class, mAP@0.5 and @0.5:0.95, precision/recall/F1 and counts
at `obj_thresh`, and a confusion matrix with background (yogo.evaluation.metrics).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yogo.config import TestConfig
from yogo.data.dataset import DetectionDataset
from yogo.data.index import open_cache
from yogo.data.loader import Loaders, default_num_workers
from yogo.data.scan import DatasetScan, LabelledSample, require_trainable, scan_dataset
from yogo.ddf import DatasetDefinition, ddf_inputs
from yogo.dist import resolve_device
from yogo.errors import UserError, display_path
from yogo.evaluation.counting import (
    CountModel,
    Ratio,
    calibration_errors,
    count_model_of,
    ensemble_counting,
    fit_count_model,
    thresholds_for,
)
from yogo.evaluation.evaluate import AP_OBJECTNESS_FLOOR, evaluate_detector
from yogo.evaluation.metrics import DetectionMetrics
from yogo.log import speak_unless_configured
from yogo.model.checkpoint import (
    Checkpoint,
    checkpoint_payload,
    is_torch_file,
    load_checkpoint,
    save_checkpoint,
)
from yogo.model.fusion import FLIPS, Run, detect_views, require_matching
from yogo.outputs import Inputs, OutputSet, plan_file, write_atomic

log = logging.getLogger(__name__)


def test(cfg: TestConfig, folds: tuple[int, int] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a DDF: the report `yogo test` prints and writes.
    `folds` (K, I): the DDF's splits as `yogo train --folds K --fold I` made them."""
    speak_unless_configured()
    inputs = test_inputs(cfg)
    checkpoint_path, ddf_path = map(Path, cfg.paths())
    checkpoint = load_checkpoint(checkpoint_path)
    model_config = checkpoint.model_config
    names = model_config.class_names
    others = [load_checkpoint(Path(path)) for path in cfg.models or []]
    model_paths = [checkpoint_path, *map(Path, cfg.models or [])]
    flips = FLIPS if cfg.tta else FLIPS[:1]
    counting = count_model_of(checkpoint)
    if others or cfg.tta:
        configs = [c.model_config for c in (checkpoint, *others)]
        require_matching(
            model_paths, [(c.class_names, c.image_hw, c.channels, c.bit_depth) for c in configs]
        )
        counting = ensemble_counting(counting, model_paths[0], len(model_paths) * len(flips))
    ratios = [Ratio.parse(text, names) for text in cfg.ratio or []]
    ddf = DatasetDefinition.from_yaml(ddf_path, cfg.dataset_split_override, folds)
    ddf.require_classes(
        names, "the checkpoint's", "test with a DDF that lists the model's class_names in order"
    )
    split = cfg.split
    _require_split(ddf, split)
    if cfg.fit_thresholds:
        _require_split(ddf, "val")
    scan = scan_dataset(ddf, cfg.bad_labels, cache=open_cache(None, inputs, None))
    _require_usable(scan, split)
    if cfg.fit_thresholds:
        _require_usable(scan, "val")
    fitted = (
        plan_file(
            Path(cfg.fit_thresholds), force=cfg.force, inputs=inputs, option="--fit-thresholds"
        )
        if cfg.fit_thresholds
        else None
    )
    html = (
        plan_file(Path(cfg.report), force=cfg.force, inputs=inputs, option="--report")
        if cfg.report
        else None
    )
    plots = _plot_outputs(cfg, split, inputs)
    device = resolve_device(cfg.device)
    runs = [_run(c, device) for c in (checkpoint, *others)]
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers

    def detect(images: np.ndarray) -> list[torch.Tensor]:
        return detect_views(runs, images, AP_OBJECTNESS_FLOOR, cfg.iou_thresh, flips=flips)

    def evaluate(
        samples: tuple[LabelledSample, ...],
    ) -> tuple[DetectionDataset, DetectionMetrics]:
        # A tiled model is scored as it was validated: on one fixed window per frame.
        tiled = model_config.tile_overlap is not None
        dataset = DetectionDataset(
            samples, model_config.image_hw, model_config.channels,
            bit_depth=model_config.bit_depth, tile=tiled,
        )  # fmt: skip
        with Loaders() as loaders:
            loader = loaders.make(dataset, cfg.batch_size, workers, 0, device.type == "cuda")
            metrics = evaluate_detector(detect, loader, names)
        return dataset, metrics

    if fitted is not None:
        _, val_metrics = evaluate(scan.splits["val"])
        source = f"{ddf.path.name} val split, {len(val_metrics.images)} frames"
        counting = fit_count_model(val_metrics, source)
        save_checkpoint(fitted, fitted_payload(checkpoint, counting))
        log.info(f"wrote {display_path(fitted)}: {counting.describe()}, fitted on the {source}")
    counting = thresholds_for(counting, cfg.obj_thresh)
    dataset, metrics = evaluate(scan.splits[split])
    metrics.thresholds = np.asarray(counting.thresholds)
    if plots is not None:
        from yogo.evaluation.plots import first_frames, plot_evaluation

        with plots:
            prefix = Path(cfg.plots or "") / split
            plot_evaluation(metrics, prefix, counting, first_frames(dataset, metrics))
            if cfg.worst is not None:
                write_worst(metrics, dataset, plots, prefix, cfg.worst)
    report = {
        "split": split,
        "checkpoint": str(checkpoint_path),
        **({"models": list(map(str, model_paths)), "tta": cfg.tta} if others or cfg.tta else {}),
        "ddf": str(ddf.path),
        "iou_thresh": cfg.iou_thresh,
        "note": cfg.note,
        "tags": cfg.tags or [],
        **metrics.compute(),
    }
    counted = count_report(metrics, counting, ratios, _specimens(ddf, dataset, metrics))
    for name, values in counted.pop("per_class").items():
        report["per_class"][name].update(values)
    report.update(counted)
    if html is not None:
        from yogo.evaluation.html_report import write_test_report

        write_test_report(html, report, metrics, counting, dataset)
    if cfg.wandb or cfg.wandb_resume_id:
        _log_to_wandb(cfg, report)
    return report


def _run(checkpoint: Checkpoint, device: torch.device) -> Run:
    """A checkpoint's model as a function: uint8 frames -> its decoded output, on the CPU."""
    model = checkpoint.build_model().to(device).eval()

    def run(images: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return model.predict(torch.from_numpy(images).to(device)).float().cpu()

    return run


def _require_split(ddf: DatasetDefinition, split: str) -> None:
    if ddf.splits[split]:
        return
    # Suggest only splits that hold samples, never the one just asked for.
    others = [f"use --split {s}" for s in ("val", "test") if s != split and ddf.splits[s]]
    add = (
        "add test_paths or a test fraction to dataset_split_fractions"
        if split == "test"
        else f"give {split} a fraction in dataset_split_fractions"
    )
    raise UserError(
        f"the DDF has no {split} split (no test_paths and no {split} fraction)"
        if split == "test"
        else f"the {split} split of the DDF is empty",
        path=ddf.path,
        fix=", or ".join([add, *others, "re-split with --dataset-split-override"]),
    )


def fitted_payload(checkpoint: Checkpoint, counting: CountModel) -> dict[str, Any]:
    """A checkpoint's content with `counting` in it: a yogo checkpoint keeps its settings
    (not a last.pth's resume state: the file is a model, not a run to continue); a YOGO
    1.0.1 file becomes a yogo checkpoint with the same weights."""
    if checkpoint.source == "yogo":
        kept = {k: v for k, v in checkpoint.payload.items() if k not in ("resume", "format")}
        kept["finished"] = True
    else:
        kept = checkpoint_payload(checkpoint.build_model(), converted_from=checkpoint.source)
    return {**kept, "counting": counting.to_plain()}


def count_report(
    metrics: DetectionMetrics,
    counting: CountModel,
    ratios: list[Ratio],
    specimens: dict[str, list[int]],
) -> dict[str, Any]:
    """The counting part of `yogo test`'s report: per class the corrected count of the
    split with its 95% interval and the calibration error; the same per specimen (DDF
    entry); the ratios; where the thresholds come from."""
    names = metrics.class_names
    errors = metrics.frame_errors()
    frame_counts = np.array([e["pred"] for e in errors]).reshape(-1, len(names))
    true_counts = np.array([e["true"] for e in errors]).reshape(-1, len(names))
    whole = counting.correct(frame_counts.sum(axis=0), len(frame_counts), ratios)
    ece = calibration_errors(metrics, counting)
    per_class = {}
    for name, counted in whole.to_plain()["per_class"].items():
        per_class[name] = {
            "threshold_rule": counting.rules[names.index(name)],
            "count_corrected": counted["count_corrected"],
            "count_ci95": counted["count_ci95"],
            "count_corrected_error": None
            if counted["count_corrected"] is None or not true_counts[:, names.index(name)].sum()
            else counted["count_corrected"] / true_counts[:, names.index(name)].sum() - 1,
            "ece": ece[name]["calibrated"],
            "ece_raw": ece[name]["raw"],
        }
    by_specimen = {}
    for entry, frames in specimens.items():
        counts = counting.correct(frame_counts[frames].sum(axis=0), len(frames), ratios)
        plain = counts.to_plain()
        for i, name in enumerate(names):
            plain["per_class"][name]["num_true"] = int(true_counts[frames, i].sum())
        by_specimen[entry] = {"frames": len(frames), **plain}
    return {
        "counting": {
            "thresholds": counting.describe(),
            "fitted_on": counting.source or None,
            "corrected": counting.fitted,
        },
        "ece": ece["all"]["calibrated"],
        "ece_raw": ece["all"]["raw"],
        "per_class": per_class,
        "ratios": whole.to_plain()["ratios"],
        "specimens": by_specimen,
    }


def _specimens(
    ddf: DatasetDefinition, dataset: DetectionDataset, metrics: DetectionMetrics
) -> dict[str, list[int]]:
    """The evaluated frames of each DDF entry (a folder pair: one specimen), by entry name;
    none when frames were skipped (then they are out of step with the dataset)."""
    if len(metrics.images) != len(dataset):
        log.warning("frames were skipped while evaluating: no counts per DDF entry")
        return {}
    entries = (*ddf.dataset_paths, *ddf.test_paths)
    pairs = [(pair.name, pair.label_path.resolve()) for pair in entries]
    out: dict[str, list[int]] = {}
    for i, sample in enumerate(dataset.samples):
        label = sample.label.resolve()
        name = next((n for n, folder in pairs if label.is_relative_to(folder)), "other")
        out.setdefault(name, []).append(i)
    return out


def test_inputs(cfg: TestConfig) -> Inputs:
    """What `yogo test` reads (yogo.outputs): the checkpoint, the DDF and all it reads."""
    cfg.require_valid()
    checkpoint, ddf = cfg.paths()
    if is_torch_file(Path(ddf)) and not is_torch_file(Path(checkpoint)):
        raise UserError(
            "the checkpoint and the dataset definition are swapped",
            path=ddf,
            fix=f"yogo test {ddf} {checkpoint} (the checkpoint comes first)",
        )
    return Inputs.of(checkpoint, *(cfg.models or []), ddf) | ddf_inputs(ddf)


def _plot_outputs(cfg: TestConfig, split: str, inputs: Inputs) -> OutputSet | None:
    """`--plots DIR`: DIR/<split>_*.png (and with --worst, DIR/<split>_worst.csv and
    DIR/<split>_worst/), one set of files, checked before the evaluation."""
    if cfg.plots is None:
        return None
    from yogo.evaluation.plots import planned

    prefix = Path(cfg.plots) / split
    worst = cfg.worst is not None
    return OutputSet(
        Path(cfg.plots),
        f"test-{split}",
        [*planned(prefix), *([Path(f"{prefix}_worst.csv")] if worst else [])],
        force=cfg.force,
        inputs=inputs,
        option="--plots",
        subfolders=[Path(f"{prefix}_worst")] if worst else [],
    )


def write_worst(
    metrics: Any, dataset: DetectionDataset, outputs: OutputSet, prefix: Path, count: int
) -> None:
    """The `count` frames with the most missed plus extra objects (ties: the more confident
    extras first), drawn as labels | predictions into `<prefix>_worst/`, and every frame's
    errors in `<prefix>_worst.csv`, worst first (a guide for relabelling)."""
    import csv
    import io

    from yogo.evaluation.plots import plot_frame, save_picture

    if len(metrics.images) != len(dataset):
        log.warning("--worst: frames were skipped while evaluating; no worst frames written")
        return
    errors = metrics.frame_errors()
    order = sorted(
        range(len(errors)),
        key=lambda i: (-(errors[i]["misses"] + errors[i]["extras"]), -errors[i]["extra_score"]),
    )
    names = metrics.class_names
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(
        ["frame", "misses", "extras", *(f"true_{n}" for n in names), *(f"pred_{n}" for n in names)]
    )
    for i in order:
        e = errors[i]
        row = [str(dataset.samples[i].image), e["misses"], e["extras"]]
        writer.writerow([*row, *e["true"].tolist(), *e["pred"].tolist()])
    write_atomic(Path(f"{prefix}_worst.csv"), table.getvalue())
    folder = Path(f"{prefix}_worst")
    pictures = {
        i: folder / f"{rank:02d}_{dataset.samples[i].image.stem}_{errors[i]['misses']}missed_"
        f"{errors[i]['extras']}extra.png"
        for rank, i in enumerate(order[:count], start=1)
    }
    outputs.extend(list(pictures.values()))  # listed before they are written
    folder.mkdir(exist_ok=True)
    for i, path in pictures.items():
        image = plot_frame(dataset.frame(i).numpy(), metrics.images[i], names, metrics.thresholds)
        save_picture(image, path)


def _log_to_wandb(cfg: TestConfig, report: dict[str, Any]) -> None:
    """The results as `SPLIT/...` values of a W&B run: a new one, or with --wandb-resume-id
    the training run it names (its files go into the checkpoint's folder, the run folder)."""
    from yogo.log import init_wandb

    split = report["split"]
    checkpoint = report["checkpoint"]
    run = init_wandb(
        Path(checkpoint).resolve().parent,
        cfg.wandb_project,
        cfg.wandb_entity,
        name=None if cfg.wandb_resume_id else f"test {Path(checkpoint).name}",
        notes=cfg.note,
        tags=cfg.tags,
        config={"test": {"checkpoint": checkpoint, "ddf": report["ddf"], "split": split}},
        run_id=cfg.wandb_resume_id,
        job_type="test",
    )
    if run is None:
        return
    values = {f"{split}/mAP50": report["mAP50"], f"{split}/mAP50_95": report["mAP50_95"]}
    values[f"{split}/ece"] = report["ece"]
    for name, per_class in report["per_class"].items():
        for key in ("AP50", "AP50_95", "precision", "recall", "f1", "count_error", "ece"):
            values[f"{split}/{name}/{key}"] = per_class[key]
    run.summary.update({k: v for k, v in values.items() if v is not None})
    run.log({k: v for k, v in values.items() if v is not None})
    if cfg.tags and cfg.wandb_resume_id:
        run.tags = (*run.tags, *cfg.tags)
    run.finish()


def _require_usable(scan: DatasetScan, split: str) -> None:
    """Under `--bad-labels error`, every problem stops the evaluation (as in training); the
    split under test must keep some samples (the train split may be empty)."""
    if scan.policy == "error" and scan.errors:
        require_trainable(scan)
    if not scan.splits[split]:
        raise UserError(f"no usable samples in the {split} split")


def format_test_report(report: dict[str, Any], include_background: bool = True) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        f"{report['split']}: {report['num_images']} images, {report['num_objects']} objects; "
        f"mAP@0.5 {fmt(report['mAP50'])}, mAP@0.5:0.95 {fmt(report['mAP50_95'])} "
        f"({display_path(report['checkpoint'])})",
    ]
    width = max(len("class"), *(len(n) for n in report["class_names"]))
    lines.append(
        f"{'class':<{width}}  {'AP50':>6} {'AP50:95':>7} {'prec':>6} {'recall':>6} {'f1':>6} "
        f"{'true':>6} {'pred':>6}"
    )
    for name, c in report["per_class"].items():
        lines.append(
            f"{name:<{width}}  {fmt(c['AP50']):>6} {fmt(c['AP50_95']):>7} "
            f"{fmt(c['precision']):>6} {fmt(c['recall']):>6} {fmt(c['f1']):>6} "
            f"{c['num_true']:>6} {c['num_pred']:>6}"
        )
    names = [*report["class_names"], "background"]
    matrix = report["confusion_matrix"]
    if not include_background:
        names, matrix = names[:-1], [row[:-1] for row in matrix[:-1]]
    cell = max(6, *(len(n) for n in names))
    lines.append(
        f"confusion matrix at {report['thresholds']}, IoU 0.5 (rows true, columns predicted):"
    )
    lines.append(" " * (cell + 2) + " ".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:>{cell}}  " + " ".join(f"{n:>{cell}}" for n in row))
    if "counting" in report:
        lines += _format_counting(report, width)
    return "\n".join(lines)


def _format_counting(report: dict[str, Any], width: int) -> list[str]:
    """The counts part of the printed report (docs/counting.md)."""
    counting = report["counting"]
    lines = [
        f"counts at {counting['thresholds']}"
        + (f", corrected with the {counting['fitted_on']}:" if counting["corrected"] else ":"),
        f"{'class':<{width}}  {'true':>6} {'counted':>8} {'error':>7} {'corrected':>10} "
        f"{'95% interval':>20} {'ECE raw':>8} {'calib.':>7}",
    ]
    for name, c in report["per_class"].items():
        error = "-" if c["count_error"] is None else f"{c['count_error']:+.1%}"
        corrected, interval = "-", "-"
        if c["count_corrected"] is not None:
            corrected = f"{c['count_corrected']:.1f}"
            interval = f"[{c['count_ci95'][0]:.1f}, {c['count_ci95'][1]:.1f}]"
        ece = ["-" if v is None else f"{v:.3f}" for v in (c["ece_raw"], c["ece"])]
        lines.append(
            f"{name:<{width}}  {c['num_true']:>6} {c['num_pred']:>8} {error:>7} "
            f"{corrected:>10} {interval:>20} {ece[0]:>8} {ece[1]:>7}"
        )
    overall = ["-" if v is None else f"{v:.3f}" for v in (report["ece_raw"], report["ece"])]
    lines.append(f"calibration error (ECE, 15 bins): {overall[0]} raw, {overall[1]} calibrated")
    for text, r in report["ratios"].items():
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        bounds = "" if r["ci95"] is None else f" [{r['ci95'][0]:.4g}, {r['ci95'][1]:.4g}]"
        lines.append(f"{text}: {value}{bounds}")
    if not counting["corrected"]:
        lines.append("(counts not corrected: docs/counting.md)")
    return lines
