"""The `yogo` command line: each command maps its flags onto one library call.

    yogo check dataset_defs_example/example.yml --json report.json
    yogo synth out/ --num-images 64 --image-hw 192 256 --class-names healthy ring trophozoite

Errors: a UserError (bad flag, DDF, data, missing file) prints one message and exits 2, with a
traceback only when YOGO_DEBUG=1; anything else is a bug or a runtime failure and exits 1.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import signal
import sys
import threading
import traceback
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from yogo import __version__
from yogo.config import (
    TRAIN_HELP_SECTIONS,
    AuditConfig,
    CheckConfig,
    ExportConfig,
    InferConfig,
    SynthConfig,
    TestConfig,
    TrainConfig,
    choices,
    field_docs,
    help_section,
    load_config,
)
from yogo.errors import (
    Interrupted,
    RunError,
    Stopped,
    UserError,
    display_path,
    stop_by_raising,
)
from yogo.outputs import Inputs, plan_file, write_atomic

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

    def get_short_help_str(self, limit: int = 45) -> str:
        """`yogo --help`'s line for the command: its whole first paragraph, wrapped by the
        formatter (click cut it at ~45 characters with "...")."""
        return " ".join((self.help or "").split("\n\n")[0].split())

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Arguments, then options in their sections (`yogo train --help` has ~60: data, model,
        optimisation, ...; yogo.config.TRAIN_HELP_SECTIONS), the command's own ones last."""
        order = ["Arguments", *TRAIN_HELP_SECTIONS, "Options"]
        sections: dict[str, list[tuple[str, str]]] = {name: [] for name in order}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                sections["Arguments"].append(record)
            else:
                section = getattr(param, "rich_help_panel", None) or "Options"
                sections.setdefault(section, []).append(record)
        sections["Options"] = sections.pop("Options")  # the command's own, and --help, last
        for name, rows in sections.items():
            if rows:
                with formatter.section(name):
                    formatter.write_dl(rows)

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


SETTINGS = (
    CheckConfig,
    TrainConfig,
    TestConfig,
    ExportConfig,
    InferConfig,
    SynthConfig,
    AuditConfig,
)


def with_settings(
    settings: type, *, optional: tuple[str, ...] = ()
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one parameter per field of `settings` (yogo.config) besides its own
    (`ctx` and flags that are not settings): the field's docstring is the help text, its
    type the option's (a Literal's choices are the metavar), `yogo.config.option` its short
    flags, aliases, metavar or position. `optional` names arguments the command may lack."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.name != "ctx" else p
            for p in inspect.signature(command, eval_str=True).parameters.values()
            if p.kind != inspect.Parameter.VAR_KEYWORD
        ]
        hints = typing.get_type_hints(settings)
        fields = dataclasses.fields(settings)
        params = {
            f.name: _parameter(settings, f, hints[f.name], f.name in optional) for f in fields
        }
        arguments = [f.name for f in fields if f.metadata.get("cli", {}).get("argument")]
        # ctx, the arguments, the command's own options, then the settings (typer lists them so).
        command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                own[0],
                *(params[name] for name in arguments),
                *own[1:],
                *(p for name, p in params.items() if name not in arguments),
            ]
        )
        return command

    return decorate


def _parameter(
    settings: type, f: dataclasses.Field[Any], annotation: Any, optional: bool
) -> inspect.Parameter:
    cli = f.metadata.get("cli", {})
    doc = field_docs(settings).get(f.name)
    if not doc:
        raise TypeError(f"{settings.__name__}.{f.name} has no docstring (its --help text)")
    kind, metavar = _cli_type(annotation, cli)
    if cli.get("argument"):
        info: Any = typer.Argument(help=doc, metavar=metavar, show_default=False)
        default = None if optional else inspect.Parameter.empty
        return inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=Annotated[kind | None if optional else kind, info],
        )
    default = None if f.default is dataclasses.MISSING else f.default
    shown: bool | str = default is not None
    if isinstance(default, tuple | list):
        shown = " ".join(str(v) for v in default)  # as it is typed
    info = typer.Option(
        *cli.get("flags", ()),
        help=doc,
        metavar=metavar,
        show_default=shown,
        rich_help_panel=help_section(settings, f.name),
    )
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, info]
    )


def _cli_type(annotation: Any, cli: dict[str, Any]) -> tuple[Any, str | None]:
    """The command-line type of a setting's type, and its metavar."""
    metavar = cli.get("metavar")
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else annotation
    if cli.get("comma"):
        kind: Any = str
    elif choices(base):
        kind, metavar = str, metavar or "|".join(choices(base))
    elif typing.get_origin(base) in (list, tuple):
        element = typing.get_args(base)[0]
        words = (metavar or "").split()
        if len(words) > 1 and not words[-1].endswith("..."):
            kind = tuple[(element,) * len(words)]  # type: ignore[misc]
        else:
            kind = list[element]  # type: ignore[valid-type]
    else:
        kind = base
    return (kind | None if optional else kind), metavar


def _given(ctx: typer.Context, settings: type) -> dict[str, Any]:
    """The settings the user gave on the command line, as `settings` values (paths as text,
    several values as the field's list or tuple, comma-separated text split); settings left
    out are not passed, so the config's defaults apply."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    hints = typing.get_type_hints(settings)
    given = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if name not in fields or source is None or source.name != "COMMANDLINE":
            continue
        if fields[name].metadata.get("cli", {}).get("comma"):
            value = _split(value, name, hints[name])
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple | list):
            origin = next(
                typing.get_origin(a)
                for a in (hints[name], *typing.get_args(hints[name]))
                if typing.get_origin(a) in (list, tuple)
            )
            value = origin(value)
        given[name] = value
    return given


def _split(text: str, name: str, annotation: Any) -> list[Any]:
    """`1,0.5,0.25` as the list of numbers (or of names) a comma-separated setting holds."""
    numbers = "float" in str(annotation)
    try:
        return [float(v) if numbers else v.strip() for v in text.split(",")]
    except ValueError:
        raise UserError(
            f"--{name.replace('_', '-')} must be comma-separated numbers, got '{text}'"
        ) from None


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
@with_settings(CheckConfig)
def check(
    ctx: typer.Context,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the report as JSON to this file ('-': stdout)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --json file.")] = False,
    **settings: Any,
) -> None:
    """Validate a dataset without training: counts, sizes, anchor, collisions, every problem.

    Exits 0 when a run could train on it, 2 when not.
    """
    from yogo.dataset_check import check as check_dataset
    from yogo.dataset_check import format_report
    from yogo.ddf import ddf_inputs

    cfg = CheckConfig(**_given(ctx, CheckConfig))
    cfg.require_valid()
    _require_json_output(json_path, force, Inputs.of(cfg.ddf) | ddf_inputs(cfg.ddf))
    report = check_dataset(cfg)
    typer.echo(format_report(report), err=_json_to_stdout(json_path))
    _write_json(json_path, report)
    if not report["trainable"]:
        raise typer.Exit(2)


@app.command(cls=_Command)
@with_settings(TrainConfig, optional=("ddf",))
def train(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            help="A run's config.yaml: repeat that run; flags given here override it.",
            show_default=False,
        ),
    ] = None,
    half: Annotated[bool, typer.Option(help="Same as --precision fp16.")] = False,
    **settings: Any,
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
    elif "ddf" not in given and "resume" not in given:
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
    given = _given(ctx, TrainConfig)
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
        str | None,
        typer.Option(
            help="Where to write the picture (default: OUTPUT_DIR/lr_find.png).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing picture.")] = False,
) -> None:
    """A learning-rate range test with the run's own model, loss, data and optimiser; prints
    the suggested learning rate. Any `yogo train` flag may follow (e.g. --batch-size)."""
    from yogo.ddf import ddf_inputs
    from yogo.training.lr_find import lr_find, plot_lr_find

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    train_ctx = command.make_context("lr-find", [ddf, *ctx.args], parent=ctx.parent)
    for flag in ("config", "resume"):
        if train_ctx.params.get(flag) is not None:
            raise UserError(
                f"yogo lr-find does not take --{flag}: it tests a new run's set-up",
                fix="give the DDF and the train flags to test (e.g. --batch-size)",
            )
    cfg = TrainConfig.from_dict({"ddf": ddf, **_train_flags(train_ctx)})
    picture = Path(plot) if plot is not None else Path(cfg.output_dir) / "lr_find.png"
    if picture.suffix.lower() != ".png":
        raise UserError(
            f"--plot must name a .png file, got '{plot}'", fix="give a name ending in .png"
        )
    inputs = Inputs.of(ddf, cfg.from_pretrained) | ddf_inputs(ddf)
    plan_file(picture, force=force, inputs=inputs, option="--plot", create_folder=True)
    result = lr_find(cfg, steps, start_lr, end_lr)
    picture.parent.mkdir(parents=True, exist_ok=True)
    plot_lr_find(result, picture)
    typer.echo(f"suggested lr: {result.suggested:.3g}")
    typer.echo(
        f"(steepest descent of the smoothed loss over {len(result.losses)} steps; lowest loss "
        f"at {result.minimum:.3g}); picture: {display_path(picture)}"
    )


@app.command(name="test", cls=_Command)
@with_settings(TestConfig, optional=("checkpoint", "ddf"))
def test_command(
    ctx: typer.Context,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the report as JSON to this file ('-': stdout)."),
    ] = None,
    dump_to_disk: Annotated[
        bool, typer.Option(help="Write the report to test_metrics.json (unless --json).")
    ] = False,
    **settings: Any,
) -> None:
    """Evaluate a checkpoint (or an ensemble: --model, --tta) on a split: COCO-rule AP,
    P/R/F1, confusion matrix, counts; or with --folds, cross-validation runs per class."""
    from yogo.evaluation.folds import fold_inputs, format_fold_report, test_folds
    from yogo.evaluation.testing import format_test_report, test, test_inputs

    cfg = TestConfig(**_given(ctx, TestConfig))
    cfg.require_valid()
    option = "--json"
    if dump_to_disk and json_path is None:
        json_path = Path("test_metrics.json")  # YOGO 1.0.1 wrote test_metrics.pkl here
        option = "--dump-to-disk"
    inputs = fold_inputs(cfg.folds) if cfg.folds else test_inputs(cfg)
    _require_json_output(json_path, cfg.force, inputs, option)
    if cfg.folds:
        report = test_folds(cfg)
        text = format_fold_report(report)
    else:
        report = test(cfg)
        text = format_test_report(report, cfg.include_background)
    typer.echo(text, err=_json_to_stdout(json_path))
    _write_json(json_path, report)


@app.command(cls=_Command)
@with_settings(ExportConfig)
def export(ctx: typer.Context, **settings: Any) -> None:
    """Write an ONNX or OpenVINO model (uint8 or uint16 frames in, decoded predictions out), fp32,
    fp16 or int8, verified against PyTorch before it is kept."""
    from yogo.deploy.export import export_onnx

    cfg = ExportConfig(**_given(ctx, ExportConfig))
    result = export_onnx(cfg)
    typer.echo(
        f"wrote {display_path(result.path)}: input images {result.input_type} "
        f"{list(result.input_shape)}, "
        f"output predictions {list(result.output_shape)}"
    )
    if cfg.precision == "fp32" or result.accuracy is None:  # else judged by accuracy alone
        typer.echo(
            f"verified with {result.runtime} on {result.images}: max abs error "
            f"{result.max_abs_error:.2e} (tolerance {result.tolerance[0]:.2g}), w/h relative "
            f"error {result.max_wh_relative_error:.2e} (tolerance {result.tolerance[1]:.2g})"
        )
    if (accuracy := result.accuracy) is not None:
        counts = ", ".join(f"{n} {a} ({b})" for n, (b, a) in accuracy.count_shifts().items())
        typer.echo(
            f"accuracy beside PyTorch on {accuracy.frames} labelled frames: mAP@0.5 "
            f"{accuracy.exported['mAP50']:.4f} ({accuracy.pytorch['mAP50']:.4f}); counts "
            f"{counts} (PyTorch's in brackets)"
        )
    if result.nodes is not None:
        before, after = result.nodes
        typer.echo(
            f"simplified: {before} -> {after} graph nodes"
            if after < before
            else f"--simplify: no smaller graph found; kept the export as it is ({before} nodes)"
        )


@app.command(cls=_Command)
@with_settings(InferConfig)
def infer(ctx: typer.Context, **settings: Any) -> None:
    """Detect (and count) objects in frames; predictions.json always, more on request."""
    from yogo.deploy.infer import format_counts
    from yogo.deploy.infer import infer as run_inference

    cfg = InferConfig(**_given(ctx, InferConfig))
    summary = run_inference(cfg)
    if summary.counts:
        typer.echo(format_counts(summary))
    typer.echo(
        f"{summary.images} image(s), {summary.detections} detection(s) in "
        f"{summary.seconds:.1f} s ({summary.kind}); results in {display_path(cfg.output_dir)}"
    )
    for path in summary.written:
        if path.name == "ddf.yml":
            typer.echo(f"pre-train on these labels: yogo train {display_path(path)}")
        elif cfg.label_studio is not None and path == Path(cfg.label_studio):
            typer.echo(f"Label Studio tasks: {display_path(path)} (docs/labelling-loop.md)")
    if summary.images and not summary.detections:
        lower = (
            f"lower it (e.g. --obj-thresh {cfg.obj_thresh / 2:g})"
            if cfg.obj_thresh is not None
            else "give a lower one for every class (e.g. --obj-thresh 0.2)"
        )
        typer.echo(
            f"nothing found at {summary.thresholds}: {lower} to see less certain objects", err=True
        )
    if summary.unreadable:
        typer.echo(
            f"{len(summary.unreadable)} image(s) could not be read and were skipped:", err=True
        )
        for name, reason in summary.unreadable:
            typer.echo(f"  {name}: {reason}", err=True)
        raise typer.Exit(1)


@app.command(cls=_Command)
@with_settings(SynthConfig)
def synth(ctx: typer.Context, **settings: Any) -> None:
    """Write synthetic blood-smear-like frames, YOLO labels and a ddf.yml."""
    from yogo.data.synth import write_dataset

    cfg = SynthConfig(**_given(ctx, SynthConfig))
    cfg.require_valid()
    ddf = write_dataset(**dataclasses.asdict(cfg))
    typer.echo(f"wrote {cfg.num_images} frames and {ddf}")


@app.command(cls=_Command)
@with_settings(AuditConfig, optional=("checkpoint", "ddf"))
def audit(ctx: typer.Context, **settings: Any) -> None:
    """Rank every label by how much the model disagrees with it (missed, extra, other class,
    poor box), with thumbnails to sort by hand; --apply writes the sorted corrections."""
    cfg = AuditConfig(**_given(ctx, AuditConfig))
    cfg.require_valid()
    if cfg.apply is not None:
        from yogo.curation.apply import apply_audit, format_changes

        typer.echo(format_changes(apply_audit(cfg)))
        return
    from yogo.curation.audit import format_audit, run_audit

    typer.echo(format_audit(run_audit(cfg)))


def _json_to_stdout(json_path: Path | None) -> bool:
    """`--json -`: the JSON goes to stdout (for pipes), the readable report to stderr."""
    return json_path is not None and str(json_path) == "-"


def _require_json_output(
    json_path: Path | None, force: bool, inputs: Inputs, option: str = "--json"
) -> None:
    """Refuse a JSON report file that cannot or must not be written, before the work."""
    if json_path is not None and not _json_to_stdout(json_path):
        plan_file(json_path, force=force, inputs=inputs, option=option)


def _write_json(json_path: Path | None, report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=2) + "\n"
    if _json_to_stdout(json_path):
        sys.stdout.write(text)
    elif json_path is not None:
        write_atomic(json_path, text)


def variadic_options() -> set[str]:
    """The flags that take several values (`--classes a b c`, as YOGO's argparse flags did):
    settings whose metavar ends with "..."."""
    return {
        flag
        for settings in SETTINGS
        for f in dataclasses.fields(settings)
        if (f.metadata.get("cli", {}).get("metavar") or "").endswith("...")
        for flag in f.metadata["cli"]["flags"] or ("--" + f.name.replace("_", "-"),)
    }


def expand_variadic(args: Sequence[str]) -> list[str]:
    """`--classes a b c` -> `--classes a --classes b --classes c` (click options take one
    value each; values end at the next token that starts with '-')."""
    variadic = variadic_options()
    out: list[str] = []
    option: str | None = None
    for arg in args:
        if arg in variadic:
            option = arg
            continue
        if option is not None and not arg.startswith("-"):
            out += [option, arg]
            continue
        option = None
        out.append(arg)
    return out


STOPS = (signal.SIGTERM, signal.SIGUSR1)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; exits with 0, 1 (runtime failure) or 2 (user mistake).

    typer handles its own usage errors (exit 2); a UserError from a command is printed here.
    """
    from yogo.log import configure_console

    configure_console()
    args = expand_variadic(sys.argv[1:] if argv is None else argv)
    previous: dict[int, Any] = {}
    if "train" not in args[:1] and threading.current_thread() is threading.main_thread():
        # Training saves and stops at a step (yogo.signals); the other commands stop at once,
        # their temporary files removed on the way out.
        previous = {sig: signal.signal(sig, stop_by_raising) for sig in STOPS}
    try:
        app(args=args, prog_name="yogo")
    except Interrupted as e:  # training has said where it stopped
        sys.exit(e.exit_code)
    except Stopped as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except (UserError, RunError) as e:
        if os.environ.get("YOGO_DEBUG") == "1":
            traceback.print_exc()
        typer.echo(f"error: {e}", err=True)
        sys.exit(2 if isinstance(e, UserError) else 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
