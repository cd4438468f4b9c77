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

from yogo.config import TestConfig
from yogo.data.dataset import DetectionDataset
from yogo.data.loader import Loaders, default_num_workers
from yogo.data.scan import DatasetScan, require_trainable, scan_dataset
from yogo.ddf import DatasetDefinition, ddf_inputs
from yogo.dist import resolve_device
from yogo.errors import UserError, display_path
from yogo.evaluation.evaluate import evaluate_model
from yogo.log import speak_unless_configured
from yogo.model.checkpoint import is_torch_file, load_checkpoint
from yogo.outputs import Inputs, OutputSet, write_atomic

log = logging.getLogger(__name__)


def test(cfg: TestConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a DDF: the report `yogo test` prints and writes."""
    speak_unless_configured()
    inputs = test_inputs(cfg)
    checkpoint = load_checkpoint(Path(cfg.checkpoint))
    model_config = checkpoint.model_config
    ddf = DatasetDefinition.from_yaml(Path(cfg.ddf), cfg.dataset_split_override)
    if ddf.class_names != model_config.class_names:
        raise UserError(
            f"the checkpoint's classes [{', '.join(model_config.class_names)}] differ from the "
            f"DDF's [{', '.join(ddf.class_names)}]",
            path=ddf.path,
            fix="test with a DDF that lists the model's class_names in the same order",
        )
    split = cfg.split
    if not ddf.splits[split]:
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
    scan = scan_dataset(ddf, cfg.bad_labels)
    _require_usable(scan, split)
    plots = _plot_outputs(cfg, split, inputs)
    device = resolve_device(cfg.device)
    model = checkpoint.build_model().to(device)
    dataset = DetectionDataset(scan.splits[split], model_config.image_hw, model_config.channels)
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    with Loaders() as loaders:
        loader = loaders.make(dataset, cfg.batch_size, workers, 0, device.type == "cuda")
        metrics, _ = evaluate_model(
            model, loader, device, model_config.class_names, cfg.obj_thresh, cfg.iou_thresh
        )
    if plots is not None:
        from yogo.evaluation.plots import first_frames, plot_evaluation

        with plots:
            prefix = Path(cfg.plots or "") / split
            plot_evaluation(metrics, prefix, first_frames(dataset, metrics))
            if cfg.worst is not None:
                write_worst(metrics, dataset, plots, prefix, cfg.worst)
    report = {
        "split": split,
        "checkpoint": cfg.checkpoint,
        "ddf": str(ddf.path),
        "iou_thresh": cfg.iou_thresh,
        "note": cfg.note,
        "tags": cfg.tags or [],
        **metrics.compute(),
    }
    if cfg.wandb or cfg.wandb_resume_id:
        _log_to_wandb(cfg, report)
    return report


def test_inputs(cfg: TestConfig) -> Inputs:
    """What `yogo test` reads (yogo.outputs): the checkpoint, the DDF and all it reads."""
    cfg.require_valid()
    if is_torch_file(Path(cfg.ddf)) and not is_torch_file(Path(cfg.checkpoint)):
        raise UserError(
            "the checkpoint and the dataset definition are swapped",
            path=cfg.ddf,
            fix=f"yogo test {cfg.ddf} {cfg.checkpoint} (the checkpoint comes first)",
        )
    return Inputs.of(cfg.checkpoint, cfg.ddf) | ddf_inputs(cfg.ddf)


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
        image = plot_frame(dataset.frame(i).numpy(), metrics.images[i], names, metrics.obj_thresh)
        save_picture(image, path)


def _log_to_wandb(cfg: TestConfig, report: dict[str, Any]) -> None:
    """The results as `SPLIT/...` values of a W&B run: a new one, or with --wandb-resume-id
    the training run it names (its files go into the checkpoint's folder, the run folder)."""
    from yogo.log import init_wandb

    split = report["split"]
    run = init_wandb(
        Path(cfg.checkpoint).resolve().parent,
        cfg.wandb_project,
        cfg.wandb_entity,
        name=None if cfg.wandb_resume_id else f"test {Path(cfg.checkpoint).name}",
        notes=cfg.note,
        tags=cfg.tags,
        config={"test": {"checkpoint": cfg.checkpoint, "ddf": cfg.ddf, "split": split}},
        run_id=cfg.wandb_resume_id,
        job_type="test",
    )
    if run is None:
        return
    values = {f"{split}/mAP50": report["mAP50"], f"{split}/mAP50_95": report["mAP50_95"]}
    for name, per_class in report["per_class"].items():
        for key in ("AP50", "AP50_95", "precision", "recall", "f1"):
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
        f"confusion matrix at objectness >= {report['obj_thresh']}, IoU 0.5 "
        "(rows true, columns predicted):"
    )
    lines.append(" " * (cell + 2) + " ".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:>{cell}}  " + " ".join(f"{n:>{cell}}" for n in row))
    return "\n".join(lines)
