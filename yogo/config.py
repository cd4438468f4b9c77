"""Settings of every command: one dataclass each, the only place a default or a help text is
written.

    cfg = TrainConfig(ddf="data.yml", epochs=20)
    cfg.require_valid()                    # UserError in the flag's words
    TrainConfig.from_dict(cfg.to_dict())   # what config.yaml and checkpoints hold
    TestConfig(checkpoint="run/best.pth", ddf="data.yml", split="val")

Field names are the command's flags without dashes, and each field's docstring is its flag's
`--help` text (yogo.cli builds the commands from these classes; `option` declares short flags,
aliases and metavars beside the field). A `Literal` type lists a setting's choices once:
`require_choices` checks them and the help shows them. The CLI passes only the flags a user
gave, so `yogo train` and `yogo.train(cfg)` run the same thing. Every field is plain data (str,
int, float, bool, None, lists), so it round-trips through YAML and `torch.load(weights_only)`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from yogo.errors import UserError

Precision = Literal["auto", "32", "bf16", "fp16"]
ResolvedPrecision = Literal["32", "bf16", "fp16"]
CacheMode = Literal["auto", "ram", "disk", "none"]
ExportFormat = Literal["onnx", "openvino"]
ExportPrecision = Literal["fp32", "fp16", "int8"]
InputLayout = Literal["nchw", "nhwc"]
Sampler = Literal["random", "balanced"]
ObjLoss = Literal["mse", "bce"]
ObjTarget = Literal["one", "iou"]
BadLabelsPolicy = Literal["error", "drop", "clip"]
Split = Literal["test", "val", "train"]
AuditSplit = Literal["all", "train", "val", "test"]
ZarrLayout = Literal["auto", "hwn", "nhw", "nhwc", "nchw"]
DrawingFileType = Literal["png", "tif", "tiff", ".png", ".tif", ".tiff"]  # YOGO wrote ".png"
ImageFormat = Literal["png", "tif", "jpg", "bmp"]


def choices(literal: Any) -> tuple[str, ...]:
    """The values of a Literal type (of `Literal[...] | None` too)."""
    if typing.get_origin(literal) in (typing.Union, types.UnionType):
        return tuple(v for arg in typing.get_args(literal) for v in choices(arg))
    return typing.get_args(literal) if typing.get_origin(literal) is Literal else ()


BAD_LABELS_POLICIES = choices(BadLabelsPolicy)


def option(
    default: Any = dataclasses.MISSING,
    *flags: str,
    metavar: str | None = None,
    argument: bool = False,
    comma: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A field with how the command line spells it: `flags` replace --field-name (short forms
    and aliases: `"-bs", "--batch-size"`); `metavar` names its values, one word per value
    (`"H W"`: exactly two; `"TAG..."`: any number); `argument`: positional; `comma`: typed as
    comma-separated values (`1,0.5,0.25`)."""
    cli = {"flags": flags, "metavar": metavar, "argument": argument, "comma": comma}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={"cli": cli})
    return field(default=default, metadata={"cli": cli})


@functools.cache
def field_docs(settings: type) -> dict[str, str]:
    """The docstring under each field of a settings class (and its bases), whitespace
    collapsed: each flag's `--help` text. Read from the source, as Python keeps no field
    docstrings."""
    docs: dict[str, str] = {}
    for cls in reversed(settings.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        body = _classes(inspect.getfile(cls))[cls.__qualname__].body
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@functools.cache
def _classes(source_file: str) -> dict[str, ast.ClassDef]:
    """The top-level classes of a source file, parsed once (`inspect.getsource` of a class
    parses its whole module each time)."""
    tree = ast.parse(Path(source_file).read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def require_choices(cfg: object) -> None:
    """Raise a UserError for the first Literal-typed field whose value is not one of its
    choices."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        require_choice(f.name, getattr(cfg, f.name), hints[f.name])


def require_choice(name: str, value: Any, literal: Any) -> None:
    """`--precision must be auto, 32, bf16 or fp16, got 'fp8'` unless `value` is one of the
    values of `literal` (or None, or `literal` is no Literal)."""
    allowed = choices(literal)
    if allowed and value is not None and value not in allowed:
        listed = ", ".join(allowed[:-1]) + " or " + allowed[-1]
        raise UserError(f"--{_flag(name)} must be {listed}, got '{value}'")


@dataclass
class TrainConfig:
    """Every value a training run uses. Field names are the flags without dashes."""

    ddf: str = option(argument=True, metavar="DDF")
    """Dataset definition file (optional with --config or --resume)."""
    output_dir: str = "./trained_models"
    """Run folders are created here: OUTPUT_DIR/NAME."""
    name: str | None = None
    """Run name and folder name (default: the time and the DDF's name; inside SLURM,
    slurm-JOBID)."""
    from_pretrained: str | None = None
    """Start from this checkpoint's weights and model settings (a yogo or YOGO 1.0.1 .pth)."""
    resume: str | None = None
    """Continue an unfinished run with its own settings: its last.pth, or 'auto' (the run
    named --name if it is unfinished, else a new one)."""
    dataset_split_override: list[float] | None = option(None, metavar="TRAIN VAL TEST")
    """Re-split all the DDF's data (test_paths included) into these fractions."""
    folds: int | None = option(None, metavar="K")
    """Cross-validation: cut dataset_paths into K folds by specimen (a folder pair, or the
    pairs sharing a `specimen:` key) and train on all but --fold; test_paths stay the test
    split (docs/training.md, "Folds by specimen")."""
    fold: int | None = option(None, metavar="I")
    """With --folds: the fold held out as the validation split, 0 to K-1 (SLURM:
    $SLURM_ARRAY_TASK_ID; scripts/submit_folds.sh)."""
    model: str = "base_model"
    """Network: base_model (YOGO 1.0.1's, ~0.4M parameters); half_filters, quarter_filters,
    double_filters (its filters x0.5, x0.25, x2); shallow_model (its last 3x3 block left
    out); deep_model (two more 3x3 blocks)."""
    image_hw: list[int] | None = option(None, metavar="H W")
    """Model input size; frames are resized to it (default: the first training image's)."""
    tile: list[int] | None = option(None, metavar="H W")
    """Train on random H x W windows of the frames at their own resolution instead of resizing
    them (the model's input becomes the tile); infer and test then read larger frames as
    overlapping tiles (docs/training.md, "Frames larger than the model")."""
    tile_overlap: int | None = None
    """With --tile: pixels by which infer's tiles overlap, saved in the model (default: twice
    the largest training box side, at least 16, at most half the tile)."""
    rgb_images: bool = False
    """Three input channels instead of one (the same as --channels 3)."""
    channels: int | None = option(None, metavar="N")
    """Input channels per frame (default 1, or 3 with --rgb-images): N other than 1 and 3
    reads each frame's N pages (a TIFF stack) or N samples per pixel, and fits a per-channel
    normalisation on the training frames (docs/training.md, "Channels and bit depth")."""
    normalize_images: bool = True
    """Divide pixels by 255 inside the model (YOGO 1.0.1's default was off)."""
    anchor_w: float | None = None
    """Anchor width, a fraction of the image (default: the mean box width of train)."""
    anchor_h: float | None = None
    """Anchor height, a fraction of the image (default: the mean box height of train)."""
    neighbour_cells: bool = False
    """Objects two or more cells wide also train the neighbour cells their box covers (their
    centres then decode up to half a cell beyond their cell); off: the centre cell only, as
    YOGO 1.0.1. A --from-pretrained model keeps its own."""
    epochs: int = 64
    """Passes over the training split."""
    batch_size: int | None = option(None, "-bs", "--batch-size")
    """Images per step and process (default: 64, or fewer, not below 8, when a small training
    set would get fewer than 16 optimizer steps per epoch)."""
    learning_rate: float | None = option(None, "-lr", "--learning-rate", "--lr")
    """Peak learning rate (default: 1e-3 for runs of up to 1,000 optimizer steps, 3e-4 from
    10,000, log-linear in between)."""
    lr_decay_factor: float = 10.0
    """Cosine decay, per step, from the learning rate to learning rate / this."""
    warmup_epochs: float = 0.0
    """Linear learning-rate warm-up from 0 over this many epochs (fractions allowed)."""
    weight_decay: float = option(0.05, "-wd", "--weight-decay")
    """AdamW weight decay (not on biases and norm layers)."""
    label_smoothing: float = 0.01
    """Label smoothing of the class term."""
    no_obj_weight: float = 0.5
    """Weight of the objectness term on empty cells."""
    iou_weight: float = 5.0
    """Weight of the box (complete-IoU) term."""
    classify_weight: float = 1.0
    """Weight of the class term."""
    obj_loss: ObjLoss = "mse"
    """Objectness loss: mse (squared error on the sigmoid, YOGO 1.0.1's) or bce (binary
    cross-entropy on the logit)."""
    obj_target: ObjTarget = "one"
    """Objectness target of an object's cell: one (YOGO 1.0.1's) or iou (how well its box
    fits the label's, so objectness ranks well-placed boxes first)."""
    class_weights: str = "auto"
    """Class term weights: auto (balanced: n / (C * n_c)), none, or w0,w1,... one per class."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value (default: no clipping)."""
    grad_accum: int = 1
    """Accumulate the gradients of this many batches per optimizer step."""
    precision: Precision = "auto"
    """auto (bf16 autocast where the GPU or CPU computes bf16 natively, else 32), 32, bf16 or
    fp16 (with a gradient scaler); config.yaml records what auto chose."""
    channels_last: bool = True
    """Weights and activations in channels-last memory order (faster convolutions)."""
    compile: bool = False
    """torch.compile the network (its compile time is reported, not counted in images/s)."""
    copy_paste: float = 0.0
    """Chance that a training frame gets 1 to 3 objects pasted where they cover no other: the
    DDF's thumbnail_augmentation when it has one, else rare-class objects cut from other
    training frames."""
    sampler: Sampler = "random"
    """random (every frame once per epoch) or balanced (frames holding rare classes drawn
    more often)."""
    hard_frames: float = 0.0
    """Share of each batch drawn from the hardest frames of the last epoch (the top share of
    frames by their training loss); 0: off (docs/training.md, "Hard frames")."""
    augment: bool = True
    """Augment the train split: flips (and 90-degree rotations of square inputs) and the
    augmentations below whose strength is above 0; off: none of them."""
    augment_translate: float = 0.0
    """Largest shift, a fraction of the frame's height and width (0: off)."""
    augment_scale: float = 0.0
    """Largest zoom in or out: 0.1 draws a factor in [0.9, 1.1] (0: off)."""
    augment_brightness: float = 0.0
    """Largest brightness change, a fraction of the full grey range (0: off)."""
    augment_contrast: float = 0.0
    """Largest contrast change: 0.2 draws a factor in [0.8, 1.2] around the frame's mean."""
    augment_gamma: float = 0.0
    """Largest gamma change: 0.2 draws a gamma in [exp(-0.2), exp(0.2)] (0: off)."""
    augment_blur: float = 0.0
    """Largest Gaussian blur sigma, in pixels of the model input (0: off)."""
    augment_noise: float = 0.0
    """Largest Gaussian noise standard deviation, in grey levels 0-255 (x257 on 16-bit frames;
    0: off)."""
    device: str | None = None
    """cpu, cuda or cuda:N (default: cuda if available, else cpu; under torchrun or srun each
    process its own GPU)."""
    seed: int = 0
    """Random seed of the weights, the shuffling and the augmentation."""
    num_workers: int | None = None
    """Loader processes (default: this process's share of the CPUs, at most 8)."""
    cache: CacheMode = "auto"
    """Keep decoded frames for the later epochs: auto (in RAM when they fit in half the free
    memory, else on disk), ram, disk or none."""
    ema: bool = False
    """Validate, save and export an exponential moving average of the weights."""
    swa_epochs: int = 0
    """Validate, save and export the mean of the weights at the end of each of the last N
    epochs (stochastic weight averaging; 0: off)."""
    dist_timeout: float = 600.0
    """Seconds a process waits for the others: a dead or hung rank ends the job after at most
    this long."""
    val_every: int = 1
    """Validate every N epochs (and after the last)."""
    patience: int | None = None
    """Stop after this many validations without a better val mAP@0.5 (default: off)."""
    subsample: float | None = None
    """Use this fraction of each split, evenly spaced (default: all of it)."""
    bad_labels: BadLabelsPolicy = "error"
    """What to do with bad label rows (docs/check.md)."""
    min_label_confidence: float = 0.0
    """Leave out label rows whose 6th column, a confidence (machine labels), is below this."""
    cache_dir: str | None = None
    """Folder of the label index shared by every run of the same data (default:
    $YOGO_CACHE_DIR, else OUTPUT_DIR/.yogo-cache; docs/training.md)."""
    obj_thresh: float = 0.5
    """Objectness threshold of validation's precision, recall, F1 and counts."""
    iou_thresh: float = 0.5
    """NMS IoU threshold in validation."""
    note: str | None = None
    """A note for the W&B run."""
    tags: list[str] = option(metavar="TAG...", default_factory=list)
    """Tags for the W&B run (--tags a b c)."""
    wandb: bool | None = None
    """Log to Weights & Biases (default: online with credentials, else offline into the run
    folder)."""
    wandb_entity: str | None = None
    """W&B team or user (default: $WANDB_ENTITY, else your default)."""
    wandb_project: str | None = None
    """W&B project (default: $WANDB_PROJECT, else yogo)."""

    def require_valid(self) -> None:
        """Raise a UserError naming the flag of the first invalid value."""
        require_choices(self)
        _require_positive(self, "epochs", "batch_size", "grad_accum", "val_every")
        require_folds(self.folds, self.fold, self.dataset_split_override)
        if self.name is not None and (self.name in ("", ".", "..") or "/" in self.name):
            raise UserError(
                f"--name must name one new folder inside --output-dir, got '{self.name}'",
                fix="give a name without '/', or leave --name out for a generated one",
            )
        _require_finite(self, "learning_rate", "lr_decay_factor", *NON_NEGATIVE)
        for name in ("learning_rate", "lr_decay_factor"):
            value = getattr(self, name)
            _require(value is None or value > 0, name, "> 0")
        for name in NON_NEGATIVE:
            _require(getattr(self, name) >= 0, name, ">= 0")
        for name, top in AUGMENT_LIMITS.items():
            _require(getattr(self, name) <= top, name, f"at most {top:g}")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        _require(0 <= self.copy_paste <= 1, "copy_paste", "in [0, 1]")
        _require(0 <= self.hard_frames < 1, "hard_frames", "in [0, 1)")
        _require(self.swa_epochs >= 0, "swa_epochs", ">= 0")
        if self.ema and self.swa_epochs:
            raise UserError(
                "--ema and --swa-epochs both average the weights; choose one",
                fix="leave out --ema, or --swa-epochs",
            )
        if self.swa_epochs > self.epochs:
            raise UserError(
                f"--swa-epochs {self.swa_epochs} averages more epochs than the run has "
                f"(--epochs {self.epochs})",
                fix=f"give --swa-epochs {self.epochs} or fewer",
            )
        if self.grad_clip is not None:
            _require(self.grad_clip > 0, "grad_clip", "> 0")
        if self.patience is not None:
            _require(self.patience >= 1, "patience", ">= 1")
        if self.subsample is not None:
            _require(0 < self.subsample <= 1, "subsample", "in (0, 1]")
        _require_fractions(self, "obj_thresh", "iou_thresh", "min_label_confidence")
        if self.image_hw is not None and (len(self.image_hw) != 2 or min(self.image_hw) < 8):
            raise UserError(f"--image-hw must be two sizes >= 8, got {self.image_hw}")
        _require_positive(self, "channels")
        if self.rgb_images and self.channels not in (None, 3):
            raise UserError(
                f"--rgb-images means 3 channels, but --channels is {self.channels}",
                fix="give one of them",
            )
        require_tile(self.tile, self.tile_overlap)
        if self.tile is not None and self.image_hw not in (None, self.tile):
            raise UserError(
                "--tile and --image-hw both set the model's input size", fix="give one of them"
            )
        if self.tile is not None and self.copy_paste > 0:
            raise UserError(
                "--copy-paste does not work with --tile yet", fix="leave --copy-paste out"
            )
        for name in ("anchor_w", "anchor_h"):
            value = getattr(self, name)
            if value is not None:
                _require(0 < value <= 1, name, "in (0, 1]")
        _require(math.isfinite(self.dist_timeout) and self.dist_timeout > 0, "dist_timeout", "> 0")
        _require_workers(self.num_workers)
        if self.class_weights not in ("none", "auto"):
            try:
                weights = [float(w) for w in self.class_weights.split(",")]
            except ValueError:
                weights = [-1.0]
            if min(weights) < 0 or not all(map(math.isfinite, weights)):
                raise UserError(
                    "--class-weights must be none, auto or comma-separated non-negative "
                    f"numbers, got '{self.class_weights}'"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from plain data; unknown keys are a UserError naming `source`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"unknown setting(s) {', '.join(unknown)}",
                path=source,
                fix=f"known settings: {', '.join(sorted(known))}",
            )
        if "ddf" not in values:
            raise UserError("the setting 'ddf' is required", path=source)
        hints = typing.get_type_hints(cls)
        return cls(**{k: _typed(k, v, hints[k], source) for k, v in values.items()})


@dataclass
class ResolvedTrainConfig(TrainConfig):
    """A TrainConfig as a run resolved it (yogo.training.setup.resolved_config): what the run
    decided is filled in, so config.yaml and every checkpoint repeat it exactly."""

    name: str = ""
    batch_size: int = 0
    learning_rate: float = 0.0
    precision: ResolvedPrecision = "32"
    image_hw: list[int] = field(default_factory=list)
    anchor_w: float = 0.0
    anchor_h: float = 0.0


@dataclass(frozen=True)
class AugmentSettings:
    """Strengths of the augmentations beyond flips and rotations (0: off), each drawn
    uniformly up to its strength per sample: TrainConfig's augment_* fields say what each
    means."""

    translate: float = 0.0
    scale: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0
    blur: float = 0.0
    noise: float = 0.0

    @property
    def geometric(self) -> bool:
        return self.translate > 0 or self.scale > 0

    @property
    def photometric(self) -> bool:
        return any(
            v > 0 for v in (self.brightness, self.contrast, self.gamma, self.blur, self.noise)
        )


# `yogo train --help` in sections (lr-find's too); a test checks that every field has one.
TRAIN_HELP_SECTIONS = {
    "Data": (
        "ddf", "dataset_split_override", "folds", "fold", "subsample", "bad_labels",
        "min_label_confidence", "cache", "cache_dir", "num_workers",
    ),
    "Model": (
        "model", "from_pretrained", "image_hw", "tile", "tile_overlap", "rgb_images", "channels",
        "normalize_images", "anchor_w", "anchor_h", "neighbour_cells",
    ),
    "Optimisation": (
        "epochs", "batch_size", "learning_rate", "lr_decay_factor", "warmup_epochs",
        "weight_decay", "grad_clip", "grad_accum", "ema", "swa_epochs",
    ),
    "Loss": (
        "label_smoothing", "no_obj_weight", "iou_weight", "classify_weight", "obj_loss",
        "obj_target", "class_weights", "sampler", "hard_frames",
    ),
    "Augmentation": (
        "augment", "copy_paste", "augment_translate", "augment_scale", "augment_brightness",
        "augment_contrast", "augment_gamma", "augment_blur", "augment_noise",
    ),
    "Run": (
        "output_dir", "name", "resume", "seed", "val_every", "patience", "obj_thresh",
        "iou_thresh",
    ),
    "Speed and cluster": ("device", "precision", "channels_last", "compile", "dist_timeout"),
    "Logging": ("wandb", "wandb_entity", "wandb_project", "note", "tags"),
}  # fmt: skip


def help_section(settings: type, name: str) -> str | None:
    """The `--help` section of a setting (None: the command's plain "Options")."""
    if settings is not TrainConfig:
        return None
    for section, names in TRAIN_HELP_SECTIONS.items():
        if name in names:
            return section
    raise TypeError(f"TrainConfig.{name} is in no section of TRAIN_HELP_SECTIONS")


# The TrainConfig fields that set AugmentSettings: `augment_` and its field's name.
AUGMENT_STRENGTHS = tuple(f"augment_{f.name}" for f in dataclasses.fields(AugmentSettings))
# The largest strength of each that still makes a frame: a shift of half the frame, a zoom
# factor above 0, a change of the whole grey range, gamma in [exp(-3), exp(3)], a blur and
# a noise far beyond any microscope's.
AUGMENT_LIMITS = {
    "augment_translate": 0.5,
    "augment_scale": 0.9,
    "augment_brightness": 1.0,
    "augment_contrast": 1.0,
    "augment_gamma": 3.0,
    "augment_blur": 16.0,
    "augment_noise": 255.0,
}


def augment_settings(cfg: TrainConfig) -> AugmentSettings:
    """The strengths of `cfg`'s augmentations (all 0 with --no-augment)."""
    if not cfg.augment:
        return AugmentSettings()
    return AugmentSettings(
        **{name.removeprefix("augment_"): getattr(cfg, name) for name in AUGMENT_STRENGTHS}
    )


DEFAULT_BATCH_SIZE = 64
MIN_AUTO_BATCH_SIZE = 8
MIN_STEPS_PER_EPOCH = 16


# The learning rate unset: YOGO 1.0.1's 3e-4 for long runs (it was tuned on large sets), 1e-3
# for short ones, log-linear between (docs/design.md: a 240-step run at 3e-4 is undertrained).
LONG_RUN_STEPS, LONG_RUN_LR = 10_000, 3e-4
SHORT_RUN_STEPS, SHORT_RUN_LR = 1_000, 1e-3


def default_learning_rate(total_steps: int) -> float:
    """The peak learning rate used when none is given, for a run of `total_steps` optimizer
    steps: 1e-3 up to 1,000 steps, 3e-4 from 10,000, log-linear in between. AdamW moves a
    weight by about the learning rate per step, so a short run needs larger steps to get
    anywhere (Ultralytics' auto optimiser makes the same call below 10,000 iterations)."""
    if total_steps <= SHORT_RUN_STEPS:
        return SHORT_RUN_LR
    if total_steps >= LONG_RUN_STEPS:
        return LONG_RUN_LR
    position = math.log(total_steps / SHORT_RUN_STEPS) / math.log(LONG_RUN_STEPS / SHORT_RUN_STEPS)
    return float(SHORT_RUN_LR * (LONG_RUN_LR / SHORT_RUN_LR) ** position)


def default_batch_size(num_train_images: int, grad_accum: int = 1) -> int:
    """The batch size used when none is given: 64, unless a small training set would then get
    fewer than 16 optimizer steps per epoch. What limits short runs on small sets is the
    number of optimizer steps (docs/benchmarks.md: 192 frames, 20 epochs: batch 64 -> val
    mAP@0.5 0.48, batch 8 -> 0.96), so the batch shrinks, never below 8."""
    fitting = num_train_images // (MIN_STEPS_PER_EPOCH * grad_accum)
    return max(MIN_AUTO_BATCH_SIZE, min(DEFAULT_BATCH_SIZE, fitting))


@dataclass
class TestConfig:
    """`yogo test`: evaluate a checkpoint on one split of a DDF."""

    __test__ = False  # not a pytest test class, whatever its name says

    checkpoint: str | None = option(None, argument=True, metavar="CHECKPOINT")
    """A .pth checkpoint (yogo or YOGO 1.0.1)."""
    ddf: str | None = option(None, argument=True, metavar="DDF")
    """Dataset definition file; its class names must be the model's."""
    folds: list[str] | None = option(None, metavar="RUN_DIR...")
    """Instead of CHECKPOINT DDF: the runs of `yogo train --folds K --fold I`, each tested on
    the fold it held out (AP) and on the test split (recall, count error); per class the mean
    +- std over the folds (docs/training.md, "Folds by specimen")."""
    models: list[str] | None = option(None, "--model", metavar="MODEL.pth")
    """Another checkpoint to test together with CHECKPOINT (repeatable): the ensemble's
    detections are fused by weighted box fusion (docs/export-and-infer.md "Ensembles")."""
    tta: bool = False
    """Test-time flips: run each model on every frame as it is and flipped left-right,
    top-bottom and both, and fuse the four (4x the time)."""
    split: Split = "test"
    """The split to evaluate."""
    obj_thresh: float | None = None
    """One objectness threshold for every class, for precision, recall, F1, the counts and
    the confusion matrix (default: the model's per-class thresholds, fitted on validation;
    0.5 for a model without them). docs/counting.md"""
    fit_thresholds: str | None = option(None, metavar="NEW.pth")
    """Fit the per-class thresholds, calibration and count correction on the DDF's val split
    and write the checkpoint with them to NEW.pth (never the input); then test with them."""
    ratio: list[str] | None = option(None, metavar="A[+B]/C")
    """A ratio of corrected counts to report with its 95% interval, e.g. ring+troph/healthy
    (repeatable)."""
    report: str | None = option(None, metavar="FILE.html")
    """Write a self-contained HTML report: counts with intervals, predicted against true
    counts per frame, reliability diagram, confusion matrix, detections per class."""
    iou_thresh: float = 0.5
    """NMS IoU threshold."""
    batch_size: int = option(16, "-bs", "--batch-size")
    """Images per batch."""
    device: str | None = None
    """cpu, cuda or cuda:N (default: cuda if available, else cpu)."""
    bad_labels: BadLabelsPolicy = "error"
    """What to do with bad label rows (docs/check.md)."""
    dataset_split_override: list[float] | None = option(None, metavar="TRAIN VAL TEST")
    """Re-split all the DDF's data (test_paths included) into these fractions."""
    num_workers: int | None = None
    """Loader processes (default: this process's share of the CPUs, at most 8)."""
    include_background: bool = True
    """Show the confusion matrix's background row and column (the JSON always has them)."""
    include_mAP: bool = option(True, "--include-mAP/--no-include-mAP")  # YOGO 1.0.1's spelling
    """Accepted for YOGO 1.0.1 command lines: AP and mAP are always computed."""
    wandb: bool = False
    """Log the results to W&B (a new run, or --wandb-resume-id's)."""
    wandb_entity: str | None = None
    """W&B team or user (default: $WANDB_ENTITY, else your default)."""
    wandb_project: str | None = None
    """W&B project (default: $WANDB_PROJECT, else yogo)."""
    wandb_resume_id: str | None = None
    """Append the results to this W&B run, a training run's id (implies --wandb)."""
    note: str | None = None
    """A note for the W&B run and the JSON report."""
    tags: list[str] | None = option(None, metavar="TAG...")
    """Tags for the W&B run and the JSON report (--tags a b c)."""
    plots: str | None = None
    """Write the evaluation's pictures (PR curves, P/R/F1 against the threshold, the confusion
    matrix, AP per class, labels beside predictions) into this folder."""
    worst: int | None = option(None, metavar="N")
    """Also draw the N frames with the most missed plus extra objects into --plots, with a
    CSV of every frame's errors."""
    force: bool = False
    """Replace existing --json and --plots files."""

    def require_valid(self) -> None:
        require_choices(self)
        _require_fractions(self, "obj_thresh", "iou_thresh")
        _require_positive(self, "batch_size")
        _require_workers(self.num_workers)
        self.paths()
        if self.fit_thresholds and (self.models or self.tta):
            raise UserError(
                "--fit-thresholds fits one checkpoint's thresholds, calibration and count "
                "correction; --model and --tta test several views fused",
                fix="fit each checkpoint on its own (yogo test CHECKPOINT DDF --fit-thresholds "
                "NEW.pth), then test the ensemble of the fitted ones",
            )
        if self.worst is not None:
            if self.worst < 1:
                raise UserError(f"--worst must be >= 1, got {self.worst}")
            if self.plots is None:
                raise UserError(
                    "--worst writes its frames into the --plots folder",
                    fix="add --plots DIR",
                )

    def paths(self) -> tuple[str, str]:
        """CHECKPOINT and DDF; a UserError when they are missing, or given with --folds."""
        if self.folds:
            given = [f for f in ("checkpoint", "ddf", "models", "fit_thresholds", "plots",
                                 "report") if getattr(self, f)]  # fmt: skip
            if given:
                raise UserError(
                    f"--folds tests each run's best.pth on its own held-out fold; "
                    f"{', '.join(given)} cannot go with it",
                    fix="yogo test --folds RUN_DIR... alone, or test one run: yogo test "
                    "RUN/best.pth DDF",
                )
            return "", ""
        if self.checkpoint is None or self.ddf is None:
            raise UserError(
                "yogo test needs a CHECKPOINT and a DDF",
                fix="yogo test RUN/best.pth DDF (or --folds RUN_DIR... for folds)",
            )
        return self.checkpoint, self.ddf


def require_folds(folds: int | None, fold: int | None, split_override: list[float] | None) -> None:
    """--folds K with --fold I in 0..K-1, or neither; never with --dataset-split-override."""
    if folds is None and fold is None:
        return
    if folds is None or fold is None:
        raise UserError(
            "--folds K and --fold I go together",
            fix="give both: --folds 5 --fold 0 trains fold 0 of 5",
        )
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise UserError(
            f"--fold {fold} is not a fold of --folds {folds}",
            fix=f"give --fold 0 to {folds - 1}",
        )
    if split_override is not None:
        raise UserError(
            "--folds decides the train and val splits; --dataset-split-override would too",
            fix="leave out --dataset-split-override",
        )


def require_tile(tile: list[int] | None, tile_overlap: int | None) -> None:
    """--tile is two sizes >= 8; --tile-overlap leaves each tile a core (under half of it)."""
    if tile is not None and (len(tile) != 2 or min(tile) < 8):
        raise UserError(f"--tile must be two sizes >= 8, got {tile}")
    if tile_overlap is None:
        return
    if tile_overlap < 0:
        raise UserError(f"--tile-overlap must be >= 0, got {tile_overlap}")
    if tile is not None and 2 * tile_overlap >= min(tile):
        raise UserError(
            f"--tile-overlap must be under half the tile's shorter side ({min(tile)}), "
            f"got {tile_overlap}"
        )


def require_crop_height(value: float | None) -> None:
    """--crop-height (or load_predictor's crop_height): None, or in (0, 1]."""
    if value is not None and not 0 < value <= 1:
        raise UserError(f"--crop-height must be in (0, 1], got {value}")


MIN_OPSET, MAX_OPSET = 16, 23  # measured: docs/export-and-infer.md


@dataclass
class ExportConfig:
    """`yogo export`: a checkpoint to ONNX or OpenVINO, verified before it is kept."""

    checkpoint: str = option(argument=True, metavar="CHECKPOINT")
    """A .pth checkpoint (yogo or YOGO 1.0.1)."""
    output_filename: str | None = None
    """Where to write (default: the checkpoint's path with .onnx, or .xml for openvino)."""
    crop_height: float | None = option(None, metavar="F")
    """Run on the centred band of round(F * H) rows, F in (0, 1] (default: the whole frame)."""
    format: ExportFormat = "onnx"
    """onnx (onnxruntime and most runtimes), or openvino (an OpenVINO IR .xml with its .bin,
    for the scope's device; needs `pip install 'yogo[openvino]'`)."""
    precision: ExportPrecision = "fp32"
    """fp32; fp16 (openvino: half-size weights, computed in fp16 where the device can); or
    int8 (post-training quantisation, calibrated on --calibration's frames: NNCF for
    openvino, onnxruntime's static quantisation for onnx)."""
    calibration: str | None = option(None, metavar="DDF")
    """The DDF whose train (else val) frames calibrate int8, and whose --verify-split checks
    the file (default: the checkpoint's own DDF)."""
    calibration_frames: int = 300
    """How many frames calibrate int8 (spread over the split)."""
    verify_split: Split = "test"
    """The split the exported file is compared with PyTorch on (mAP@0.5, counts)."""
    max_map_drop: float = 0.01
    """Refuse a file whose mAP@0.5 on --verify-split is this much below PyTorch's (or whose
    count of any class moves by more than 2%)."""
    force_accuracy: bool = False
    """Keep a file that fails those limits (say so, and keep the figures)."""
    input_layout: InputLayout = "nchw"
    """uint8 frames as (B, C, H, W), or (B, H, W, C) as cameras and OpenCV give them."""
    opset: int = 18
    """ONNX opset, 16 to 23 (the exporter writes 18; others are converted from it, and below
    16 the converter fails on yogo's graphs)."""
    dynamic_batch: bool = True
    """Any batch size (else 1)."""
    simplify: bool = True
    """Simplify the graph (onnxslim) when that leaves fewer nodes; the saved file is the one
    verified."""
    force: bool = False
    """Replace an existing file."""

    def require_valid(self) -> None:
        require_choices(self)
        require_crop_height(self.crop_height)
        _require_positive(self, "calibration_frames")
        _require_fractions(self, "max_map_drop")
        if self.precision == "fp16" and self.format != "openvino":
            raise UserError(
                "--precision fp16 is for --format openvino (an ONNX file stays fp32)",
                fix="add --format openvino",
            )
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UserError(
                f"--opset {self.opset} is not supported",
                fix=f"use an opset from {MIN_OPSET} to {MAX_OPSET} (18, the default, runs "
                "on every onnxruntime and OpenVINO since 2023)",
            )


@dataclass
class InferConfig:
    """`yogo infer`: detect (and count) objects in images with a .pth or .onnx model."""

    model: str = option(argument=True, metavar="MODEL")
    """A .pth checkpoint, or an exported .onnx or OpenVINO .xml."""
    models: list[str] | None = option(None, "--model", metavar="MODEL")
    """Another model to run together with MODEL (repeatable): the ensemble's detections are
    fused by weighted box fusion (docs/export-and-infer.md "Ensembles")."""
    tta: bool = False
    """Test-time flips: run each model on every frame as it is and flipped left-right,
    top-bottom and both, and fuse the four (4x the time)."""
    path_to_images: str | None = option(None, "--path-to-images", "--path-to-image")
    """An image, or a folder of PNG, JPEG, TIFF or BMP images."""
    path_to_zarr: str | None = None
    """A zarr store of frames, a folder or a .zip (instead of --path-to-images)."""
    zarr_layout: ZarrLayout = "auto"
    """Axes of a zarr array: auto (from its shape and chunks), hwn (YOGO 1.0.1's), nhw, nhwc,
    or nchw (frames of several channels, e.g. phase and fluorescence)."""
    output_dir: str = "yogo-infer"
    """Results go here (a new folder, or one without the files this run writes)."""
    save_preds: bool = False
    """Write labels/*.txt (class xc yc w h confidence) and a ddf.yml that trains on them."""
    split_fractions: tuple[float, float, float] = option((0.9, 0.1, 0.0), metavar="TRAIN VAL TEST")
    """dataset_split_fractions of the ddf.yml that --save-preds writes."""
    draw_boxes: bool = False
    """Write boxes/*: the frames with their boxes."""
    output_img_filetype: DrawingFileType = "png"
    """File type of the --draw-boxes images."""
    line_width: int | None = None
    """Box lines of --draw-boxes images, in pixels of the drawing (default: from its size)."""
    hide_labels: bool = False
    """--draw-boxes without class names on the boxes (a legend names the colours)."""
    hide_conf: bool = False
    """--draw-boxes without scores on the boxes."""
    count: bool = False
    """Print per-class totals and write counts.csv (one row per frame)."""
    save_npy: bool = False
    """Write one .npy array of every detection, as YOGO 1.0.1 did (docs/export-and-infer.md)."""
    label_studio: str | None = None
    """Write Label Studio tasks with the detections as pre-annotations to this JSON file."""
    label_studio_url_prefix: str | None = None
    """Image URLs in the tasks start with this (default: Label Studio's local-files URL)."""
    recursive: bool = False
    """Also look in sub-folders."""
    obj_thresh: float | None = None
    """Minimum objectness of a detection, for every class (default: the model's per-class
    thresholds, fitted on validation; 0.5 for a model without them). docs/counting.md"""
    ratio: list[str] | None = option(None, metavar="A[+B]/C")
    """A ratio of corrected counts to report per specimen with its 95% interval, e.g.
    ring+troph/healthy (repeatable; needs --count)."""
    report: str | None = option(None, metavar="FILE.html")
    """Write a self-contained HTML report of the counts per specimen (needs --count)."""
    iou_thresh: float = 0.5
    """Class-agnostic NMS IoU threshold."""
    min_class_confidence_threshold: float = 0.0
    """Minimum class probability of a detection."""
    batch_size: int = option(16, "-bs", "--batch-size")
    """Images per batch."""
    device: str | None = None
    """cpu, cuda or cuda:N (default: cuda if available, else cpu)."""
    precision: Precision = "auto"
    """Arithmetic of a .pth model: auto (bf16 where the GPU or CPU computes it natively, else
    32), 32, bf16 or fp16. Counts under bf16 match fp32's within a few percent
    (docs/export-and-infer.md "Speed")."""
    half: bool = False
    """Reduced precision whatever the device: fp16 on a GPU, bf16 on a CPU (.pth models; on a
    CPU without native bf16 it is slower than 32)."""
    crop_height: float | None = option(None, metavar="F")
    """Run on the centred band of round(F * H) rows, F in (0, 1] (default: the whole frame)."""
    tiles: bool | None = None
    """Read frames as overlapping tiles of the model's input size, at their own resolution,
    merged into one frame's detections (default: frames larger than the input of a model
    trained with --tile; --no-tiles resizes them). See docs/export-and-infer.md, "Large frames"."""
    tile_overlap: int | None = None
    """Pixels by which the tiles overlap (default: the model's, from --tile training)."""
    class_names: list[str] | None = option(None, metavar="NAME...")
    """Names to report instead of the model's (as many)."""
    num_workers: int | None = None
    """Frame-reading processes (default: this process's share of the CPUs, at most 8; a zarr
    store is read in this process)."""
    use_tqdm: bool = True
    """A progress bar (on a terminal)."""
    heatmap_mask: Literal["auto"] | None = None
    """auto: mask the grid cells where a class is detected in more than --heatmap-min-fraction
    of the frames (stuck cells, debris); their detections are counted apart, and the mask is
    written as heatmap_mask.npy and heatmap.png."""
    heatmap_min_fraction: float = 0.8
    """With --heatmap-mask auto: the share of frames above which a class's cell is masked."""
    heatmap_mask_path: str | None = None
    """A mask to apply (.npy, boolean): grid- or frame-sized, for every class or per class."""
    force: bool = False
    """Replace the files of an earlier run in --output-dir (never an input image)."""

    def require_valid(self) -> None:
        require_choices(self)
        _require_fractions(
            self, "obj_thresh", "iou_thresh", "min_class_confidence_threshold",
            "heatmap_min_fraction",
        )  # fmt: skip
        if self.half and self.precision != "auto":
            raise UserError(
                f"--half and --precision {self.precision} both choose the precision",
                fix="give one of them",
            )
        if self.heatmap_mask is not None and self.heatmap_mask_path is not None:
            raise UserError(
                "--heatmap-mask auto and --heatmap-mask-path both choose the mask",
                fix="give one of them",
            )
        _require_positive(self, "batch_size")
        _require_workers(self.num_workers)
        require_crop_height(self.crop_height)
        require_tile(None, self.tile_overlap)
        if self.tiles and self.crop_height is not None:
            raise UserError("--tiles and --crop-height cannot be combined", fix="give one")
        if self.line_width is not None and self.line_width < 1:
            raise UserError(f"--line-width must be >= 1, got {self.line_width}")
        if self.label_studio_url_prefix is not None and self.label_studio is None:
            raise UserError(
                "--label-studio-url-prefix is used by --label-studio",
                fix="add --label-studio FILE.json",
            )


@dataclass
class CheckConfig:
    """`yogo check`: what a run would train on, and every problem, without training."""

    ddf: str = option(argument=True, metavar="DDF")
    """Dataset definition file (YAML)."""
    image_hw: list[int] | None = option(None, metavar="H W")
    """Model input size for the grid-collision count (default: the first train image's)."""
    bad_labels: BadLabelsPolicy = "error"
    """What training would do with bad label rows (docs/check.md)."""
    min_label_confidence: float = 0.0
    """Leave out label rows whose 6th column, a confidence (machine labels), is below this."""
    decode: bool = False
    """Also decode every image fully, on all cores (slow)."""
    cache_dir: str | None = None
    """Read and update the label index in this folder (default: $YOGO_CACHE_DIR, else
    ./trained_models/.yogo-cache when it exists: the one `yogo train` makes by default)."""
    dataset_split_override: list[float] | None = option(None, metavar="TRAIN VAL TEST")
    """Re-split all the DDF's data (test_paths included) into these fractions."""

    def require_valid(self) -> None:
        require_choices(self)
        _require_fractions(self, "min_label_confidence")
        if self.image_hw is not None and (len(self.image_hw) != 2 or min(self.image_hw) < 1):
            raise UserError(f"--image-hw must be two positive numbers, got {self.image_hw}")


@dataclass
class SynthConfig:
    """`yogo synth`: synthetic smear-like frames, YOLO labels and a DDF
    (`yogo.data.synth.write_dataset` takes these fields as arguments)."""

    out_dir: str = option(argument=True, metavar="OUT_DIR")
    """A new (or empty) folder to write into."""
    num_images: int = 64
    """Number of frames."""
    image_hw: tuple[int, int] = option((192, 256), metavar="H W")
    """Frame size."""
    class_names: tuple[str, ...] = option(
        ("healthy", "ring", "trophozoite"), "--class-names", "--classes", metavar="NAME..."
    )
    """Class names; class 0 is common, later ones rarer."""
    seed: int = 0
    """Random seed; the same seed gives the same files."""
    split_fractions: tuple[float, float, float] = option((0.8, 0.1, 0.1), metavar="TRAIN VAL TEST")
    """dataset_split_fractions written into ddf.yml."""
    class_frequencies: list[float] | None = option(None, comma=True, metavar="NUMBERS")
    """Relative frequency of each class, comma-separated (default: 1 for class 0, then 0.08,
    0.04, ...)."""
    image_format: ImageFormat = "png"
    """Image file format."""
    cell_diameter: float | None = None
    """Cell diameter in pixels (default: 6% of the shorter side, at least 12)."""
    class_sizes: list[float] | None = option(None, comma=True, metavar="NUMBERS")
    """Diameter of each class relative to a cell's, comma-separated, e.g. 1,1,0.35,2
    (default: 1, and 1.5 for the nucleus look)."""
    class_looks: list[str] | None = option(None, comma=True, metavar="LOOKS")
    """Look of each class, comma-separated: plain, ring, blob, dots, crescent, nucleus, speck,
    dark or pale (default: plain, ring, blob, ... in turn)."""
    size_jitter: float = 0.06
    """Relative standard deviation of object diameters (clipped at 20% or 3 deviations)."""
    coverage: float = 0.3
    """Fraction of the frame under objects (about 0.5: they crowd and touch)."""
    brightness_jitter: float = 0.1
    """Each object's darkness varies by up to this fraction."""

    def require_valid(self) -> None:
        require_choices(self)


@dataclass
class AuditConfig:
    """`yogo audit`: rank every label by how much the model disagrees with it, with thumbnails
    to sort by hand; `--apply` writes the sorted corrections as a new label set."""

    checkpoint: str | None = option(None, argument=True, metavar="CHECKPOINT")
    """A .pth checkpoint, or an exported .onnx or .xml, trained on the DDF's classes."""
    ddf: str | None = option(None, argument=True, metavar="DDF")
    """The dataset definition whose labels to audit (with --apply, optional: it must be the
    one the audit was made from)."""
    split: AuditSplit = "all"
    """The split to audit (all: every labelled frame)."""
    output_dir: str = "audit"
    """A new folder for audit.csv, the thumbnails (one folder per class, and delete/) and the
    contact sheets."""
    max_thumbnails: int = 1000
    """Thumbnails for the most suspect rows, at most this many (audit.csv ranks every row)."""
    bad_labels: BadLabelsPolicy = "drop"
    """Label rows with problems (docs/check.md): drop leaves them out of the audit (`yogo
    check` lists them), error stops."""
    apply: str | None = option(None, metavar="AUDIT_DIR")
    """Write the corrections sorted in AUDIT_DIR (thumbnails moved between class folders, or
    into delete/) as a new label set in --out, with a DDF over it; no model is run."""
    out: str | None = option(None, metavar="NEW_DIR")
    """With --apply: a new folder for the corrected labels and their ddf.yml."""
    accept_extras: bool = False
    """With --apply: add the model's unlabelled detections left in their class folder as
    machine labels (with their confidence); moved ones are added either way, deleted ones
    never."""
    batch_size: int = option(16, "-bs", "--batch-size")
    """Frames per batch."""
    device: str | None = None
    """cpu, cuda or cuda:N (default: cuda if available, else cpu)."""
    num_workers: int | None = None
    """Frame-reading processes (default: this process's share of the CPUs, at most 8)."""
    force: bool = False
    """Replace the files of an earlier audit in --output-dir (or --out)."""

    def require_valid(self) -> None:
        require_choices(self)
        _require_positive(self, "max_thumbnails", "batch_size")
        _require_workers(self.num_workers)
        if self.apply is not None and self.out is None:
            raise UserError("--apply needs --out NEW_DIR", fix="add --out NEW_DIR, a new folder")
        if self.apply is None and (self.out is not None or self.accept_extras):
            raise UserError(
                "--out and --accept-extras go with --apply AUDIT_DIR",
                fix="yogo audit --apply AUDIT_DIR --out NEW_DIR",
            )
        if self.apply is None and (self.checkpoint is None or self.ddf is None):
            raise UserError(
                "yogo audit needs a CHECKPOINT and a DDF (or --apply AUDIT_DIR --out NEW_DIR)",
                fix="yogo audit run/best.pth data.yml",
            )
        if self.apply is not None and self.checkpoint and not self.ddf:
            self.checkpoint, self.ddf = None, self.checkpoint  # `yogo audit DDF --apply ...`
        if self.apply is not None and self.checkpoint:
            raise UserError(
                "--apply reads the audit folder (and the DDF it names); it runs no model",
                fix="yogo audit --apply AUDIT_DIR --out NEW_DIR",
            )


def _flag(name: str) -> str:
    return name.replace("_", "-")


# TrainConfig's settings that must be finite numbers >= 0.
NON_NEGATIVE = (
    "weight_decay",
    "no_obj_weight",
    "iou_weight",
    "classify_weight",
    "warmup_epochs",
    *AUGMENT_STRENGTHS,
)


def _require_finite(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not math.isfinite(value):
            raise UserError(f"--{_flag(name)} must be a finite number, got {value}")


def _require(ok: bool, name: str, condition: str) -> None:
    if not ok:
        raise UserError(f"--{_flag(name)} must be {condition}")


def _require_positive(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise UserError(f"--{_flag(name)} must be >= 1, got {value}")


def _require_fractions(cfg: object, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not 0 <= value <= 1:
            raise UserError(f"--{_flag(name)} must be in [0, 1], got {value}")


def _require_workers(num_workers: int | None) -> None:
    if num_workers is not None and num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {num_workers}")


def _typed(name: str, value: Any, hint: Any, source: str) -> Any:
    """`value` as a setting of type `hint` (an int is a float too; a tuple is a list), or a
    UserError naming the setting and what it needs (a hand-edited config.yaml)."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    inner = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:  # its choices are checked with the flags'
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        wanted = "one of " + ", ".join(args)
    elif inner and typing.get_origin(hint) in (types.UnionType, typing.Union):
        return _typed(name, value, inner[0], source)
    elif typing.get_origin(hint) is list:
        if isinstance(value, list | tuple):
            return [_typed(name, v, args[0], source) for v in value]
        wanted = f"a list of {args[0].__name__} values"
    elif hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    else:
        wanted = {bool: "true or false", int: "a whole number", float: "a number"}.get(hint, "text")
    raise UserError(
        f"the setting '{name}' must be {wanted}, got {value!r}",
        path=source,
        fix="correct the value, or set it with its flag instead (flags override the file)",
    )


def load_config(path: Path) -> TrainConfig:
    """A TrainConfig from a run's config.yaml (its `config:` section)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if not path.is_file():
        raise UserError(
            "is a folder, not a config.yaml" if path.is_dir() else "does not exist",
            path=path,
            fix="give a run's config.yaml (RUN/config.yaml)",
        )
    try:
        document = YAML(typ="safe", pure=True).load(path.read_text())
    except (OSError, YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the run configuration: {e}", path=path) from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise UserError("is not a yogo config.yaml (no 'config:' section)", path=path)
    return TrainConfig.from_dict(document["config"], source=str(path))
