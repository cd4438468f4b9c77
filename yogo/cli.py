"""The `yogo` command line: each command maps its flags onto one library call.

    yogo check dataset_defs_example/example.yml --json report.json
    yogo synth out/ --num-images 64 --image-hw 192 256 --class-names healthy ring trophozoite

Errors: a UserError (bad flag, DDF, data, missing file) prints one message and exits 2, with a
traceback only when YOGO_DEBUG=1; anything else is a bug or a runtime failure and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from yogo import __version__
from yogo.config import (
    CheckConfig,
    ExportConfig,
    InferConfig,
    SynthConfig,
    TestConfig,
    TrainConfig,
    load_config,
)
from yogo.errors import Interrupted, RunError, UserError, display_path
from yogo.outputs import require_output_file, write_atomic

app = typer.Typer(
    name="yogo",
    help="Train, test, export and run small YOLO-style detectors for microscopy.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # click's plain help and errors: typer's rich tables cut option names short ("--min-cla…")
    # in narrow terminals; plain help wraps instead.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Command(TyperCommand):
    """Every command's class: click's usage line (`yogo check [OPTIONS] DDF`, not typer's
    `{ddf}`), and an option that takes several values says so when it gets fewer (click read
    `--image-hw 192 --epochs 3` as H 192, W "--epochs" and complained about an integer)."""

    # ctx: Any, because typer's Context base class lives in its private vendored click.
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or str(param.name).upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        options = {
            name: param
            for param in self.get_params(ctx)
            if isinstance(param, TyperOption)
            for name in (*param.opts, *param.secondary_opts)
        }
        for i, arg in enumerate(args):
            if arg == "--":
                break
            name, equals, first = arg.partition("=")  # --image-hw=192 256 is allowed too
            option = options.get(name)
            if option is None or option.nargs < 2:
                continue
            values = ([first] if equals else []) + args[i + 1 :]
            given = []
            for value in values[: option.nargs]:
                if value in options:
                    break
                given.append(value)
            if len(given) < option.nargs:
                count = {2: "two", 3: "three"}.get(option.nargs, str(option.nargs))
                got = f"'{' '.join(given)}'" if given else "none"
                ctx.fail(f"{name} takes {count} values: {option.metavar}, got {got}")
        return super().parse_args(ctx, args)


# Options that take several values (`--classes a b c`), as YOGO's argparse flags did. Click
# options take one value each, so `main` rewrites `--classes a b c` to repeated options.
VARIADIC_OPTIONS = ("--class-names", "--classes", "--tags")


def _unset(help_text: str, *names: str, metavar: str | None = None) -> Any:
    """An option whose unset value (None) the command decides: no "[default: None]"."""
    return typer.Option(*names, help=help_text, show_default=False, metavar=metavar)


def _as_typed(values: Sequence[object]) -> str:
    """A default of several values as it is typed (`192 256`), not as typer shows it."""
    return " ".join(str(v) for v in values)


# Options several commands share. Defaults come from each command's settings (yogo.config).
SplitOverride = Annotated[
    tuple[float, float, float] | None,
    _unset("Re-split all data into these fractions.", metavar="TRAIN VAL TEST"),
]
Device = Annotated[str | None, _unset("cpu, cuda or cuda:N (default: cuda if available).")]
NumWorkers = Annotated[
    int | None, _unset("Loader processes (default: this process's share of the CPUs).")
]
BadLabels = Annotated[str, typer.Option(help="error, drop or clip (docs/check.md).")]
MinLabelConfidence = Annotated[
    float,
    typer.Option(
        help="Leave out label rows whose 6th column (a confidence: machine labels) is below this."
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"yogo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Train, test, export and run small YOLO-style detectors for microscopy."""


@app.command(cls=_Command)
def check(
    ctx: typer.Context,
    ddf: Annotated[str, typer.Argument(help="Dataset definition file (YAML).", metavar="DDF")],
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the report as JSON to this file ('-': stdout)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --json file.")] = False,
    image_hw: Annotated[
        tuple[int, int] | None,
        _unset(
            "Model input size for the grid-collision count (default: first train image).",
            metavar="H W",
        ),
    ] = None,
    bad_labels: BadLabels = CheckConfig.bad_labels,
    min_label_confidence: MinLabelConfidence = CheckConfig.min_label_confidence,
    decode: Annotated[
        bool, typer.Option(help="Also decode every image fully, on all cores (slow).")
    ] = CheckConfig.decode,
    dataset_split_override: SplitOverride = None,
) -> None:
    """Validate a dataset without training: counts, sizes, anchor, collisions, every problem.

    Exits 0 when a run could train on it, 2 when not.
    """
    from yogo.dataset_check import check as check_dataset
    from yogo.dataset_check import format_report

    cfg = CheckConfig(**_given(ctx, "json_path", "force"))
    cfg.require_valid()
    _require_json_output(json_path, force, [Path(ddf)])
    report = check_dataset(cfg)
    typer.echo(format_report(report), err=_json_to_stdout(json_path))
    _write_json(json_path, report)
    if not report["trainable"]:
        raise typer.Exit(2)


@app.command(cls=_Command, context_settings={"show_default": True})
def train(
    ctx: typer.Context,
    ddf: Annotated[
        Path | None,
        typer.Argument(
            help="Dataset definition file (optional with --config).",
            show_default=False,
            metavar="DDF",
        ),
    ] = None,
    config: Annotated[
        Path | None, _unset("A run's config.yaml: repeat that run; flags given here override it.")
    ] = None,
    resume: Annotated[
        str | None,
        _unset("Continue an unfinished run: its last.pth, or 'auto' (the run named --name)."),
    ] = None,
    from_pretrained: Annotated[
        Path | None, _unset("Start from this checkpoint (yogo or YOGO 1.0.1 .pth).")
    ] = None,
    dataset_split_override: SplitOverride = None,
    batch_size: Annotated[
        int | None,
        _unset(
            "Images per step (default: 64; fewer for small training sets, see docs).",
            "-bs",
            "--batch-size",
        ),
    ] = None,
    learning_rate: Annotated[
        float | None,
        _unset(
            "Peak learning rate (default: 1e-3 for runs up to 1,000 steps, 3e-4 from 10,000).",
            "-lr",
            "--learning-rate",
            "--lr",
        ),
    ] = None,
    lr_decay_factor: Annotated[
        float, typer.Option(help="Cosine decay to lr / factor.")
    ] = TrainConfig.lr_decay_factor,
    label_smoothing: Annotated[
        float, typer.Option(help="Label smoothing of the class term.")
    ] = TrainConfig.label_smoothing,
    weight_decay: Annotated[
        float,
        typer.Option("-wd", "--weight-decay", help="AdamW weight decay (not on biases or norms)."),
    ] = TrainConfig.weight_decay,
    epochs: Annotated[
        int, typer.Option(help="Passes over the training split.")
    ] = TrainConfig.epochs,
    no_obj_weight: Annotated[
        float, typer.Option(help="Objectness weight on empty cells.")
    ] = TrainConfig.no_obj_weight,
    iou_weight: Annotated[
        float, typer.Option(help="Weight of the box (CIoU) term.")
    ] = TrainConfig.iou_weight,
    classify_weight: Annotated[
        float, typer.Option(help="Weight of the class term.")
    ] = TrainConfig.classify_weight,
    normalize_images: Annotated[
        bool, typer.Option(help="Divide pixels by 255 inside the model.")
    ] = TrainConfig.normalize_images,
    image_hw: Annotated[
        tuple[int, int] | None,
        _unset("Model input size (default: first training image).", metavar="H W"),
    ] = None,
    anchor_w: Annotated[float | None, _unset("Anchor width (default: mean box width).")] = None,
    anchor_h: Annotated[float | None, _unset("Anchor height (default: mean box height).")] = None,
    neighbour_cells: Annotated[
        bool,
        typer.Option(help="Objects >= 2 cells wide also train the neighbour cells they cover."),
    ] = TrainConfig.neighbour_cells,
    rgb_images: Annotated[
        bool, typer.Option(help="Three input channels.")
    ] = TrainConfig.rgb_images,
    model: Annotated[str, typer.Option(help="Network from the registry.")] = TrainConfig.model,
    half: Annotated[bool, typer.Option(help="Same as --precision fp16.")] = False,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 where the GPU/CPU has native bf16, else 32), 32, bf16, fp16."
        ),
    ] = TrainConfig.precision,
    channels_last: Annotated[
        bool, typer.Option(help="Channels-last memory order (faster convolutions).")
    ] = TrainConfig.channels_last,
    compile: Annotated[
        bool, typer.Option(help="torch.compile the network (compile time not in images/s).")
    ] = TrainConfig.compile,
    device: Device = None,
    output_dir: Annotated[str, typer.Option(help="Run folders go here.")] = TrainConfig.output_dir,
    name: Annotated[str | None, _unset("Run name (default: time and DDF name).")] = None,
    note: Annotated[str | None, _unset("A note for the W&B run.")] = None,
    tags: Annotated[
        list[str] | None, _unset("Tags for the W&B run (--tags a b c).", metavar="TAG...")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Random seed (weights, shuffling, augmentation).")
    ] = TrainConfig.seed,
    num_workers: NumWorkers = None,
    cache: Annotated[
        str,
        typer.Option(
            help="Keep decoded frames for later epochs: auto (RAM if they fit half the free "
            "memory, else disk), ram, disk or none."
        ),
    ] = TrainConfig.cache,
    ema: Annotated[bool, typer.Option(help="Keep an average of the weights.")] = TrainConfig.ema,
    swa_epochs: Annotated[
        int, typer.Option(help="Average the weights of the last N epochs (0: off).")
    ] = TrainConfig.swa_epochs,
    dist_timeout: Annotated[
        float, typer.Option(help="Seconds a process waits for the others (dead/hung rank).")
    ] = TrainConfig.dist_timeout,
    val_every: Annotated[
        int, typer.Option(help="Validate every N epochs.")
    ] = TrainConfig.val_every,
    patience: Annotated[
        int | None,
        _unset("Stop after N validations without a better val mAP@0.5 (default: off)."),
    ] = None,
    obj_thresh: Annotated[
        float, typer.Option(help="Objectness threshold for validation P/R/F1.")
    ] = TrainConfig.obj_thresh,
    iou_thresh: Annotated[
        float, typer.Option(help="NMS IoU threshold in validation.")
    ] = TrainConfig.iou_thresh,
    warmup_epochs: Annotated[
        float, typer.Option(help="Linear learning-rate warm-up from 0 over this many epochs.")
    ] = TrainConfig.warmup_epochs,
    grad_clip: Annotated[float | None, _unset("Clip the gradient norm.")] = None,
    grad_accum: Annotated[
        int, typer.Option(help="Batches per optimizer step.")
    ] = TrainConfig.grad_accum,
    subsample: Annotated[float | None, _unset("Use this fraction of each split.")] = None,
    class_weights: Annotated[
        str, typer.Option(help="auto (balanced), none, or w0,w1,... for the class term.")
    ] = TrainConfig.class_weights,
    obj_loss: Annotated[
        str, typer.Option(help="Objectness loss: mse (YOGO 1.0.1's) or bce.")
    ] = TrainConfig.obj_loss,
    obj_target: Annotated[
        str, typer.Option(help="Objectness target of object cells: one, or iou (box fit).")
    ] = TrainConfig.obj_target,
    bad_labels: BadLabels = TrainConfig.bad_labels,
    min_label_confidence: MinLabelConfidence = TrainConfig.min_label_confidence,
    copy_paste: Annotated[
        float,
        typer.Option(help="Chance a train frame gets pasted objects (thumbnails, else rare ones)."),
    ] = TrainConfig.copy_paste,
    sampler: Annotated[
        str, typer.Option(help="random, or balanced (frames with rare classes more often).")
    ] = TrainConfig.sampler,
    augment: Annotated[
        bool, typer.Option(help="Augment train: flips, rotations, the strengths below.")
    ] = TrainConfig.augment,
    augment_translate: Annotated[
        float, typer.Option(help="Largest shift, fraction of the frame's sides (0: off).")
    ] = TrainConfig.augment_translate,
    augment_scale: Annotated[
        float, typer.Option(help="Largest zoom: 0.1 draws a factor in [0.9, 1.1] (0: off).")
    ] = TrainConfig.augment_scale,
    augment_brightness: Annotated[
        float, typer.Option(help="Largest brightness change, fraction of the grey range.")
    ] = TrainConfig.augment_brightness,
    augment_contrast: Annotated[
        float, typer.Option(help="Largest contrast change: 0.2 draws a factor in [0.8, 1.2].")
    ] = TrainConfig.augment_contrast,
    augment_gamma: Annotated[
        float, typer.Option(help="Largest gamma change: 0.2 draws gamma in [exp(-0.2), exp(0.2)].")
    ] = TrainConfig.augment_gamma,
    augment_blur: Annotated[
        float, typer.Option(help="Largest Gaussian blur sigma, in model-input pixels.")
    ] = TrainConfig.augment_blur,
    augment_noise: Annotated[
        float, typer.Option(help="Largest Gaussian noise std, in grey levels.")
    ] = TrainConfig.augment_noise,
    wandb: Annotated[
        bool | None, _unset("Log to W&B (default: on with credentials, else offline).")
    ] = None,
    wandb_entity: Annotated[
        str | None, _unset("W&B team or user (default: $WANDB_ENTITY, else your default).")
    ] = None,
    wandb_project: Annotated[
        str | None, _unset("W&B project (default: $WANDB_PROJECT, else yogo).")
    ] = None,
) -> None:
    """Train a detector; every value used is saved in the run folder."""
    from yogo.dist import slurm_job_id
    from yogo.training.loop import train as run_training

    given = _train_flags(ctx)
    values = dict(given)
    if config is not None:
        base = load_config(config).to_dict()
        base["name"] = None  # a repeat is a new run
        values = {**base, **given}
    elif ddf is None and resume is None:
        raise UserError("give a dataset definition file (DDF), or --config RUN/config.yaml")
    job = slurm_job_id()
    if job is not None:
        # A requeued job runs the same command again: the same name and --resume auto let it
        # continue where it stopped, with no flag from the user.
        if "name" not in given:
            values["name"] = f"slurm-{job}"
        if "resume" not in given:
            values["resume"] = "auto"
    values.setdefault("ddf", "")  # with --resume, the run's own config names the DDF
    run_training(TrainConfig.from_dict(values))


def _train_flags(ctx: typer.Context) -> dict[str, Any]:
    """The train flags given, as TrainConfig values (`--half` is `--precision fp16`)."""
    given = _given(ctx, "config", "half")
    if ctx.params.get("half") and "precision" not in given:
        given["precision"] = "fp16"
    return given


@app.command(
    name="lr-find",
    cls=_Command,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def lr_find_command(
    ctx: typer.Context,
    ddf: Annotated[str, typer.Argument(help="Dataset definition file (YAML).", metavar="DDF")],
    steps: Annotated[int, typer.Option(help="Optimizer steps of the range test.")] = 200,
    start_lr: Annotated[float, typer.Option(help="Learning rate of the first step.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="Learning rate of the last step.")] = 1.0,
    plot: Annotated[
        str | None, _unset("Where to write the picture (default: OUTPUT_DIR/lr_find.png).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing picture.")] = False,
) -> None:
    """A learning-rate range test with the run's own model, loss, data and optimiser; prints
    the suggested learning rate. Any `yogo train` flag may follow (e.g. --batch-size)."""
    from yogo.training.lr_find import lr_find, plot_lr_find

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    train_ctx = command.make_context("yogo lr-find", [ddf, *ctx.args], parent=ctx.parent)
    cfg = TrainConfig.from_dict({"ddf": ddf, **_train_flags(train_ctx)})
    picture = Path(plot) if plot is not None else Path(cfg.output_dir) / "lr_find.png"
    inputs = [Path(ddf)]
    require_output_file(picture, force=force, inputs=inputs, option="--plot", create_folder=True)
    result = lr_find(cfg, steps, start_lr, end_lr)
    picture.parent.mkdir(parents=True, exist_ok=True)
    plot_lr_find(result, picture)
    typer.echo(f"suggested lr: {result.suggested:.3g}")
    typer.echo(
        f"(steepest descent of the smoothed loss over {len(result.losses)} steps; lowest loss "
        f"at {result.minimum:.3g}); picture: {display_path(picture)}"
    )


@app.command(name="test", cls=_Command)
def test_command(
    ctx: typer.Context,
    checkpoint: Annotated[
        str, typer.Argument(help="A .pth checkpoint (yogo or YOGO 1.0.1).", metavar="CHECKPOINT")
    ],
    ddf: Annotated[str, typer.Argument(help="Dataset definition file.", metavar="DDF")],
    split: Annotated[str, typer.Option(help="test, val or train.")] = TestConfig.split,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the report as JSON to this file ('-': stdout)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace existing --json and --plots files.")
    ] = TestConfig.force,
    obj_thresh: Annotated[
        float, typer.Option(help="Objectness threshold for P/R/F1.")
    ] = TestConfig.obj_thresh,
    iou_thresh: Annotated[float, typer.Option(help="NMS IoU threshold.")] = TestConfig.iou_thresh,
    batch_size: Annotated[
        int, typer.Option("-bs", "--batch-size", help="Images per batch.")
    ] = TestConfig.batch_size,
    device: Device = None,
    bad_labels: BadLabels = TestConfig.bad_labels,
    dataset_split_override: SplitOverride = None,
    num_workers: NumWorkers = None,
    include_background: Annotated[
        bool, typer.Option(help="Show the confusion matrix's background row and column.")
    ] = TestConfig.include_background,
    include_mAP: Annotated[
        bool,
        typer.Option(
            "--include-mAP/--no-include-mAP",
            help="Accepted for YOGO 1.0.1 lines: AP and mAP are always computed.",
        ),
    ] = TestConfig.include_mAP,
    dump_to_disk: Annotated[
        bool, typer.Option(help="Write the report to test_metrics.json (unless --json).")
    ] = False,
    wandb: Annotated[
        bool, typer.Option(help="Log the results to W&B (a new run).")
    ] = TestConfig.wandb,
    wandb_entity: Annotated[str | None, _unset("W&B entity (default: WANDB_ENTITY).")] = None,
    wandb_project: Annotated[
        str | None, _unset("W&B project (default: WANDB_PROJECT, else yogo).")
    ] = None,
    wandb_resume_id: Annotated[
        str | None, _unset("Append the results to this W&B run (a training run's id).")
    ] = None,
    note: Annotated[str | None, _unset("A note for the W&B run and the JSON report.")] = None,
    tags: Annotated[
        list[str] | None, _unset("Tags for the W&B run and the JSON report.", metavar="TAG...")
    ] = None,
    plots: Annotated[
        str | None,
        _unset("Write the pictures (PR, P/R/F1 curves, confusion matrix, AP) into this folder."),
    ] = None,
    worst: Annotated[
        int | None,
        _unset(
            "Draw the N frames with the most missed plus extra objects (into --plots).", metavar="N"
        ),
    ] = None,
) -> None:
    """Evaluate a checkpoint on a split: COCO-rule AP, P/R/F1, confusion matrix, counts."""
    from yogo.evaluation.testing import format_test_report, test

    cfg = TestConfig(**_given(ctx, "json_path", "dump_to_disk"))
    cfg.require_valid()
    if dump_to_disk and json_path is None:
        json_path = Path("test_metrics.json")  # YOGO 1.0.1 wrote test_metrics.pkl here
    _require_json_output(json_path, force, [Path(checkpoint), Path(ddf)])
    report = test(cfg)
    text = format_test_report(report, cfg.include_background)
    typer.echo(text, err=_json_to_stdout(json_path))
    _write_json(json_path, report)


@app.command(cls=_Command, context_settings={"show_default": True})
def export(
    ctx: typer.Context,
    checkpoint: Annotated[
        str, typer.Argument(help="A .pth checkpoint (yogo or YOGO 1.0.1).", metavar="CHECKPOINT")
    ],
    output_filename: Annotated[
        str | None,
        typer.Option(
            help="Where to write (default: the checkpoint with .onnx).", show_default=False
        ),
    ] = None,
    crop_height: Annotated[
        float | None,
        typer.Option(help="Run on the centred band of round(F * H) rows.", show_default=False),
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = ExportConfig.opset,
    dynamic_batch: Annotated[
        bool, typer.Option(help="Any batch size (else 1).")
    ] = ExportConfig.dynamic_batch,
    simplify: Annotated[
        bool, typer.Option(help="Simplify the graph (onnxslim) when that makes it smaller.")
    ] = ExportConfig.simplify,
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = ExportConfig.force,
) -> None:
    """Write an ONNX model (uint8 frames in, decoded predictions out), verified with
    onnxruntime against PyTorch before it is kept."""
    from yogo.deploy.export import export_onnx

    result = export_onnx(ExportConfig(**_given(ctx)))
    typer.echo(
        f"wrote {display_path(result.path)}: input images uint8 {list(result.input_shape)}, "
        f"output predictions {list(result.output_shape)}\n"
        f"verified with onnxruntime on {result.images}: max abs error "
        f"{result.max_abs_error:.2e} (tolerance {result.tolerance[0]:.2g}), w/h relative error "
        f"{result.max_wh_relative_error:.2e} (tolerance {result.tolerance[1]:.2g})"
    )
    if result.nodes is not None:
        before, after = result.nodes
        typer.echo(
            f"simplified: {before} -> {after} graph nodes"
            if after < before
            else f"--simplify: no smaller graph found; kept the export as it is ({before} nodes)"
        )


@app.command(cls=_Command, context_settings={"show_default": True})
def infer(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="A .pth checkpoint or an exported .onnx.", metavar="MODEL")
    ],
    path_to_images: Annotated[
        str | None,
        _unset(
            "An image, or a folder of PNG/JPEG/TIFF/BMP images.",
            "--path-to-images",
            "--path-to-image",
        ),
    ] = None,
    path_to_zarr: Annotated[
        str | None, _unset("A zarr store of frames (a folder or a .zip).")
    ] = None,
    zarr_layout: Annotated[
        str, typer.Option(help="Axes of a zarr array: auto, hwn (YOGO's), nhw or nhwc.")
    ] = InferConfig.zarr_layout,
    output_dir: Annotated[str, typer.Option(help="Results go here.")] = InferConfig.output_dir,
    save_preds: Annotated[
        bool,
        typer.Option(
            help="labels/*.txt (class xc yc w h confidence) and a ddf.yml that trains on them."
        ),
    ] = InferConfig.save_preds,
    split_fractions: Annotated[
        tuple[float, float, float],
        typer.Option(
            help="Split fractions of the --save-preds ddf.yml.",
            metavar="TRAIN VAL TEST",
            show_default=_as_typed(InferConfig.split_fractions),
        ),
    ] = InferConfig.split_fractions,
    draw_boxes: Annotated[
        bool, typer.Option(help="boxes/*: the frames with their boxes.")
    ] = InferConfig.draw_boxes,
    output_img_filetype: Annotated[
        str, typer.Option(help="File type of --draw-boxes images: png, tif or tiff.")
    ] = InferConfig.output_img_filetype,
    line_width: Annotated[
        int | None, _unset("Box lines of --draw-boxes images in px (default: from the size).")
    ] = None,
    hide_labels: Annotated[
        bool, typer.Option(help="--draw-boxes without class names (a legend names colours).")
    ] = InferConfig.hide_labels,
    hide_conf: Annotated[
        bool, typer.Option(help="--draw-boxes without scores.")
    ] = InferConfig.hide_conf,
    count: Annotated[
        bool, typer.Option(help="Print per-class totals; write counts.csv.")
    ] = InferConfig.count,
    save_npy: Annotated[
        bool, typer.Option(help="One .npy array of every detection, as YOGO 1.0.1 wrote.")
    ] = InferConfig.save_npy,
    label_studio: Annotated[
        str | None,
        _unset("Write Label Studio tasks with the detections as pre-annotations (JSON file)."),
    ] = None,
    label_studio_url_prefix: Annotated[
        str | None,
        _unset("Image URLs in the tasks start with this (default: Label Studio local files)."),
    ] = None,
    recursive: Annotated[
        bool, typer.Option(help="Also look in sub-folders.")
    ] = InferConfig.recursive,
    obj_thresh: Annotated[float, typer.Option(help="Minimum objectness.")] = InferConfig.obj_thresh,
    iou_thresh: Annotated[
        float, typer.Option(help="Class-agnostic NMS IoU.")
    ] = InferConfig.iou_thresh,
    min_class_confidence_threshold: Annotated[
        float, typer.Option(help="Minimum class probability.")
    ] = InferConfig.min_class_confidence_threshold,
    batch_size: Annotated[
        int, typer.Option("-bs", "--batch-size", help="Images per batch.")
    ] = InferConfig.batch_size,
    device: Device = None,
    half: Annotated[
        bool, typer.Option(help="Reduced precision: fp16 on a GPU, bf16 on a CPU (.pth).")
    ] = InferConfig.half,
    crop_height: Annotated[
        float | None, _unset("Run on the centred band of round(F * H) rows.", metavar="F")
    ] = None,
    class_names: Annotated[
        list[str] | None, _unset("Names to print instead of the model's.", metavar="NAME...")
    ] = None,
    num_workers: NumWorkers = None,
    use_tqdm: Annotated[
        bool, typer.Option(help="A progress bar (on a terminal).")
    ] = InferConfig.use_tqdm,
    heatmap_mask_path: Annotated[
        str | None, _unset("Ignored (it had no effect in YOGO 1.0.1 either).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Replace the files of an earlier run in --output-dir.")
    ] = InferConfig.force,
) -> None:
    """Detect (and count) objects in frames; predictions.json always, more on request."""
    from yogo.deploy.infer import format_counts
    from yogo.deploy.infer import infer as run_inference

    summary = run_inference(InferConfig(**_given(ctx)))
    if count:
        typer.echo(format_counts(summary))
    typer.echo(
        f"{summary.images} image(s), {summary.detections} detection(s) in "
        f"{summary.seconds:.1f} s ({summary.kind}); results in {display_path(output_dir)}"
    )
    for path in summary.written:
        if path.name == "ddf.yml":
            typer.echo(f"pre-train on these labels: yogo train {display_path(path)}")
        elif label_studio is not None and path == Path(label_studio):
            typer.echo(f"Label Studio tasks: {display_path(path)} (docs/labelling-loop.md)")
    if summary.images and not summary.detections:
        typer.echo(
            f"nothing found at --obj-thresh {obj_thresh:g}: lower it (e.g. --obj-thresh "
            f"{obj_thresh / 2:g}) to see less certain objects",
            err=True,
        )
    if summary.unreadable:
        typer.echo(
            f"{len(summary.unreadable)} image(s) could not be read and were skipped:", err=True
        )
        for name, reason in summary.unreadable:
            typer.echo(f"  {name}: {reason}", err=True)
        raise typer.Exit(1)


def _given(ctx: typer.Context, *cli_only: str) -> dict[str, Any]:
    """The arguments and options the user gave, as config values (paths as text, tuples as
    lists); options left at their defaults are not passed, so the config's defaults apply.
    `cli_only` names options that are not config fields (output files of the command)."""
    given = {}
    for name, value in ctx.params.items():
        if name in cli_only or not _from_command_line(ctx, name):
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple | list):
            value = list(value)
        given[name] = value
    return given


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


@app.command(cls=_Command)
def synth(
    ctx: typer.Context,
    out_dir: Annotated[
        str, typer.Argument(help="New (or empty) folder to write into.", metavar="OUT_DIR")
    ],
    num_images: Annotated[int, typer.Option(help="Number of frames.")] = SynthConfig.num_images,
    image_hw: Annotated[
        tuple[int, int],
        typer.Option(
            help="Frame size.", metavar="H W", show_default=_as_typed(SynthConfig.image_hw)
        ),
    ] = SynthConfig.image_hw,
    class_names: Annotated[
        list[str],
        typer.Option(
            "--class-names",
            "--classes",
            help="Class names; class 0 is common, later ones rarer.",
            metavar="NAME...",
            show_default=_as_typed(SynthConfig.class_names),
        ),
    ] = list(SynthConfig.class_names),  # noqa: B006 (typer reads it; never mutated)
    class_frequencies: Annotated[
        str | None, _unset("Comma-separated relative frequencies, one per class.")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same files.")
    ] = SynthConfig.seed,
    split_fractions: Annotated[
        tuple[float, float, float],
        typer.Option(
            help="dataset_split_fractions written into ddf.yml.",
            metavar="TRAIN VAL TEST",
            show_default=_as_typed(SynthConfig.split_fractions),
        ),
    ] = SynthConfig.split_fractions,
    image_format: Annotated[
        str, typer.Option(help="png, tif, jpg or bmp.")
    ] = SynthConfig.image_format,
    cell_diameter: Annotated[
        float | None, _unset("Cell diameter in pixels (default: 6% of the shorter side, >= 12).")
    ] = None,
    class_sizes: Annotated[
        str | None,
        _unset("Comma-separated diameters relative to a cell's, one per class (e.g. 1,1,0.35,2)."),
    ] = None,
    class_looks: Annotated[
        str | None,
        _unset(
            "Comma-separated looks, one per class: plain, ring, blob, dots, crescent, nucleus, "
            "speck, dark, pale."
        ),
    ] = None,
    size_jitter: Annotated[
        float, typer.Option(help="Relative standard deviation of object diameters.")
    ] = SynthConfig.size_jitter,
    coverage: Annotated[
        float, typer.Option(help="Fraction of the frame under objects (~0.5: touching).")
    ] = SynthConfig.coverage,
    brightness_jitter: Annotated[
        float, typer.Option(help="Each object's darkness varies by up to this fraction.")
    ] = SynthConfig.brightness_jitter,
) -> None:
    """Write synthetic blood-smear-like frames, YOLO labels and a ddf.yml."""
    import dataclasses

    from yogo.data.synth import write_dataset

    values = _given(ctx)
    for name, text in (("class_frequencies", class_frequencies), ("class_sizes", class_sizes)):
        if text is not None:
            values[name] = _numbers(text, "--" + name.replace("_", "-"))
    if class_looks is not None:
        values["class_looks"] = [v.strip() for v in class_looks.split(",")]
    if "class_names" in values:
        values["class_names"] = tuple(class_names)
    cfg = SynthConfig(**values)
    ddf = write_dataset(**dataclasses.asdict(cfg))
    typer.echo(f"wrote {cfg.num_images} frames and {ddf}")


def _numbers(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated numbers, got '{text}'") from None


def _json_to_stdout(json_path: Path | None) -> bool:
    """`--json -`: the JSON goes to stdout (for pipes), the readable report to stderr."""
    return json_path is not None and str(json_path) == "-"


def _require_json_output(json_path: Path | None, force: bool, inputs: list[Path]) -> None:
    """Refuse a --json file that cannot or must not be written, before the work."""
    if json_path is not None and not _json_to_stdout(json_path):
        require_output_file(json_path, force=force, inputs=inputs, option="--json")


def _write_json(json_path: Path | None, report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=2) + "\n"
    if _json_to_stdout(json_path):
        sys.stdout.write(text)
    elif json_path is not None:
        write_atomic(json_path, text)


def expand_variadic(args: Sequence[str]) -> list[str]:
    """`--classes a b c` -> `--classes a --classes b --classes c` (values end at the next
    token that starts with '-')."""
    out: list[str] = []
    option: str | None = None
    for arg in args:
        if arg in VARIADIC_OPTIONS:
            option = arg
            continue
        if option is not None and not arg.startswith("-"):
            out += [option, arg]
            continue
        option = None
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; exits with 0, 1 (runtime failure) or 2 (user mistake).

    typer handles its own usage errors (exit 2); a UserError from a command is printed here.
    """
    from yogo.log import configure_console

    configure_console()
    args = expand_variadic(sys.argv[1:] if argv is None else argv)

    try:
        app(args=args, prog_name="yogo")
    except Interrupted as e:  # training has said where it stopped
        sys.exit(e.exit_code)
    except (UserError, RunError) as e:
        if os.environ.get("YOGO_DEBUG") == "1":
            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        sys.exit(2 if isinstance(e, UserError) else 1)
