"""`yogo test`: evaluate a checkpoint on one split of a DDF.

    report = test(TestConfig(checkpoint="run/best.pth", ddf="data.yml", split="test"))
    print(format_test_report(report))

The report holds COCO-rule AP per class, mAP@0.5 and @0.5:0.95, precision/recall/F1 and counts
at `obj_thresh`, and a confusion matrix with background (yogo.metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yogo.checkpoint import is_torch_file, load_checkpoint
from yogo.config import TestConfig
from yogo.data.dataset import DetectionDataset
from yogo.data.loader import Loaders, default_num_workers
from yogo.data.scan import DatasetScan, require_trainable, scan_dataset
from yogo.ddf import DatasetDefinition
from yogo.dist import resolve_device
from yogo.errors import UserError, display_path
from yogo.evaluate import evaluate_model


def test(cfg: TestConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a DDF: the report `yogo test` prints and writes."""
    cfg.require_valid()
    if is_torch_file(Path(cfg.ddf)) and not is_torch_file(Path(cfg.checkpoint)):
        raise UserError(
            "the checkpoint and the dataset definition are swapped",
            path=cfg.ddf,
            fix=f"yogo test {cfg.ddf} {cfg.checkpoint} (the checkpoint comes first)",
        )
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
    plots = _plot_prefix(cfg, split)
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
        from yogo.plots import first_frames, plot_evaluation

        plot_evaluation(metrics, plots, first_frames(dataset, metrics))
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


def _plot_prefix(cfg: TestConfig, split: str) -> Path | None:
    """`--plots DIR`: DIR/<split>_*.png, checked before the evaluation (a folder that can be
    written; no existing picture unless --force; never an input)."""
    if cfg.plots is None:
        return None
    from yogo.outputs import require_output_file, require_output_folder
    from yogo.plots import planned

    folder = Path(cfg.plots)
    require_output_folder(folder, option="--plots")
    prefix = folder / split
    if folder.is_dir():  # a new folder holds nothing to replace
        for path in planned(prefix):
            inputs = [Path(cfg.checkpoint), Path(cfg.ddf)]
            require_output_file(path, force=cfg.force, inputs=inputs, option="--plots")
    folder.mkdir(parents=True, exist_ok=True)
    return prefix


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
