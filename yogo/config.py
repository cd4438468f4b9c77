"""Settings of every command: one dataclass each, the only place a default is written.

    cfg = TrainConfig(ddf="data.yml", epochs=20)
    cfg.require_valid()                    # UserError in the flag's words
    TrainConfig.from_dict(cfg.to_dict())   # what config.yaml and checkpoints hold
    TestConfig(checkpoint="run/best.pth", ddf="data.yml", split="val")

Field names are the command's flags without dashes. The CLI passes only the flags a user
gave and takes its shown defaults from these fields, so `yogo train` and `yogo.train(cfg)` run
the same thing. Every field is plain data (str, int, float, bool, None, lists), so it
round-trips through YAML and `torch.load(weights_only)`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from yogo.errors import UserError

PRECISIONS = ("auto", "32", "bf16", "fp16")
CACHE_MODES = ("auto", "ram", "disk", "none")
BadLabelsPolicy = Literal["error", "drop", "clip"]
BAD_LABELS_POLICIES: tuple[BadLabelsPolicy, ...] = ("error", "drop", "clip")


@dataclass
class TrainConfig:
    """Every value a training run uses. Field names are the flags without dashes."""

    ddf: str
    """Dataset definition file."""
    output_dir: str = "./trained_models"
    """Run folders are created here: OUTPUT_DIR/NAME/."""
    name: str | None = None
    """Run name (and folder name); generated from the time and DDF name when None."""
    from_pretrained: str | None = None
    """Start from this checkpoint's weights and model settings (yogo or YOGO 1.0.1 .pth)."""
    resume: str | None = None
    """Continue an unfinished run: a last.pth, or "auto" (OUTPUT_DIR/NAME/last.pth if
    unfinished, else a new run). The run's own config is used."""
    dataset_split_override: list[float] | None = None
    """TRAIN VAL TEST fractions re-splitting all data, test_paths included."""
    model: str = "base_model"
    """Network from the registry (yogo.model.network.MODELS)."""
    image_hw: list[int] | None = None
    """Model input H W; None: the size of the first training image."""
    rgb_images: bool = False
    """Three input channels instead of one."""
    normalize_images: bool = True
    """Divide pixels by 255 inside the model (YOGO's default was off; docs/design.md)."""
    anchor_w: float | None = None
    """Anchor width, normalised; None: mean box width of the training labels."""
    anchor_h: float | None = None
    """Anchor height, normalised; None: mean box height of the training labels."""
    neighbour_cells: bool = False
    """A new model's objects two or more cells wide also train the neighbour cells their box
    covers (its centres then decode up to half a cell beyond their cell, yogo.model.boxes.decode);
    off: the centre cell only, as YOGO 1.0.1. A --from-pretrained model keeps its decoding."""
    epochs: int = 64
    batch_size: int | None = None
    """Images per step and process; None: 64, or fewer (not below 8) when 64 would leave an
    epoch with fewer than 16 optimizer steps (see `default_batch_size`)."""
    learning_rate: float | None = None
    """Peak learning rate; None: by the run's length (`default_learning_rate`)."""
    lr_decay_factor: float = 10.0
    """Cosine decay from the learning rate to learning_rate / lr_decay_factor, per batch."""
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 over this many epochs (fractions allowed)."""
    weight_decay: float = 0.05
    label_smoothing: float = 0.01
    no_obj_weight: float = 0.5
    iou_weight: float = 5.0
    classify_weight: float = 1.0
    obj_loss: str = "mse"
    """Objectness loss: mse (squared error on the sigmoid, YOGO 1.0.1's) or bce (binary
    cross-entropy on the logit); see yogo.model.loss and docs/benchmarks.md."""
    obj_target: str = "one"
    """An object cell's objectness target: one (YOGO 1.0.1's) or iou (the IoU of its box with
    the label's, so objectness ranks well-placed boxes first; yogo.model.loss)."""
    class_weights: str = "auto"
    """auto (balanced: n / (C * n_c)), none, or w0,w1,... one per class."""
    grad_clip: float | None = None
    """Clip the gradient norm to this value."""
    grad_accum: int = 1
    """Accumulate gradients over this many batches per optimizer step."""
    precision: str = "auto"
    """auto (bf16 autocast where the GPU or CPU computes bf16 natively, else 32), 32, bf16 or
    fp16 (fp16 uses a gradient scaler); config.yaml records what auto chose."""
    channels_last: bool = True
    """Weights and activations in channels-last memory order (faster convolutions)."""
    compile: bool = False
    """torch.compile the network (the compile time is reported, not counted in images/s)."""
    copy_paste: float = 0.0
    """Probability that a training frame gets 1 to 3 objects pasted where they cover no other:
    the DDF's thumbnails when it has thumbnail_augmentation, else objects of the rare classes
    cut from other training frames (yogo.data.paste)."""
    sampler: str = "random"
    """random (every frame once per epoch) or balanced (frames holding rare classes drawn
    more often, yogo.training.priors.frame_weights)."""
    augment: bool = True
    """Augment the train split: flips (and 90-degree rotations on square inputs), and those of
    the strengths below that are above 0; off: none of them."""
    # The strengths of the augmentations beyond flips, AugmentSettings' fields (0: off).
    augment_translate: float = 0.0
    augment_scale: float = 0.0
    augment_brightness: float = 0.0
    augment_contrast: float = 0.0
    augment_gamma: float = 0.0
    augment_blur: float = 0.0
    augment_noise: float = 0.0
    device: str | None = None
    """cpu, cuda or cuda:N; None: cuda when available, else cpu."""
    seed: int = 0
    num_workers: int | None = None
    """Data loader processes; None: min(8, CPUs of this process - 1) (yogo.data.loader)."""
    cache: str = "auto"
    """Decoded frames kept for the next epochs: auto, ram, disk or none (yogo.data.cache)."""
    ema: bool = False
    """Validate, save and export an exponential moving average of the weights
    (yogo.training.ema)."""
    swa_epochs: int = 0
    """Validate, save and export the mean of the weights at the end of each of the last N
    epochs (stochastic weight averaging, yogo.training.ema); 0: off."""
    dist_timeout: float = 600.0
    """Seconds a collective waits for the other processes: a dead or hung rank ends the job
    after at most this long."""
    val_every: int = 1
    """Validate every N epochs (and after the last)."""
    patience: int | None = None
    """Stop after this many validations without a better val mAP@0.5."""
    subsample: float | None = None
    """Use this fraction of each split (deterministic)."""
    bad_labels: BadLabelsPolicy = "error"
    """error, drop or clip (see docs/check.md)."""
    min_label_confidence: float = 0.0
    """Leave out label rows whose confidence column (machine labels) is below this."""
    obj_thresh: float = 0.5
    """Objectness threshold for precision/recall/F1 and counts in validation."""
    iou_thresh: float = 0.5
    """NMS IoU threshold in validation."""
    note: str | None = None
    tags: list[str] = field(default_factory=list)
    wandb: bool | None = None
    """Log to Weights & Biases; None: when credentials exist, else offline."""
    wandb_entity: str | None = None
    wandb_project: str | None = None

    def require_valid(self) -> None:
        """Raise a UserError naming the flag of the first invalid value."""
        _require_positive(self, "epochs", "batch_size", "grad_accum", "val_every")
        for name in ("learning_rate", "lr_decay_factor"):
            value = getattr(self, name)
            _require(value is None or (math.isfinite(value) and value > 0), name, "> 0")
        for name in (
            "weight_decay",
            "no_obj_weight",
            "iou_weight",
            "classify_weight",
            "warmup_epochs",
            *AUGMENT_STRENGTHS,
        ):
            _require(math.isfinite(getattr(self, name)) and getattr(self, name) >= 0, name, ">= 0")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        _require(0 <= self.copy_paste <= 1, "copy_paste", "in [0, 1]")
        _require(self.swa_epochs >= 0, "swa_epochs", ">= 0")
        if self.ema and self.swa_epochs:
            raise UserError(
                "--ema and --swa-epochs both average the weights; choose one",
                fix="leave out --ema, or --swa-epochs",
            )
        if self.grad_clip is not None:
            _require(self.grad_clip > 0, "grad_clip", "> 0")
        if self.patience is not None:
            _require(self.patience >= 1, "patience", ">= 1")
        if self.subsample is not None:
            _require(0 < self.subsample <= 1, "subsample", "in (0, 1]")
        _require_fractions(self, "obj_thresh", "iou_thresh")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be auto, 32, bf16 or fp16, got '{self.precision}'")
        _require_policy(self.bad_labels)
        _require_fractions(self, "min_label_confidence")
        if self.image_hw is not None and (len(self.image_hw) != 2 or min(self.image_hw) < 8):
            raise UserError(f"--image-hw must be two sizes >= 8, got {self.image_hw}")
        for name in ("anchor_w", "anchor_h"):
            value = getattr(self, name)
            if value is not None:
                _require(0 < value <= 1, name, "in (0, 1]")
        _require(math.isfinite(self.dist_timeout) and self.dist_timeout > 0, "dist_timeout", "> 0")
        _require_workers(self.num_workers)
        if self.sampler not in ("random", "balanced"):
            raise UserError(f"--sampler must be random or balanced, got '{self.sampler}'")
        if self.obj_target not in ("one", "iou"):
            raise UserError(f"--obj-target must be one or iou, got '{self.obj_target}'")
        if self.obj_loss not in ("bce", "mse"):
            raise UserError(f"--obj-loss must be bce or mse, got '{self.obj_loss}'")
        if self.cache not in CACHE_MODES:
            raise UserError(f"--cache must be auto, ram, disk or none, got '{self.cache}'")
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
        return cls(**values)


@dataclass(frozen=True)
class AugmentSettings:
    """Strengths of the augmentations beyond flips and rotations (SPEC §4); 0 turns one off.
    Each draws its amount uniformly up to its strength, per sample."""

    translate: float = 0.0
    """Largest shift, as a fraction of the frame's height and width."""
    scale: float = 0.0
    """Largest zoom in or out: 0.1 draws a factor in [0.9, 1.1]."""
    brightness: float = 0.0
    """Largest brightness change, as a fraction of the full grey range."""
    contrast: float = 0.0
    """Largest contrast change: 0.2 draws a factor in [0.8, 1.2] around the frame's mean."""
    gamma: float = 0.0
    """Largest gamma change: 0.2 draws a gamma in [exp(-0.2), exp(0.2)]."""
    blur: float = 0.0
    """Largest Gaussian blur sigma, in pixels of the model input."""
    noise: float = 0.0
    """Largest Gaussian noise standard deviation, in grey levels (0-255)."""

    @property
    def geometric(self) -> bool:
        return self.translate > 0 or self.scale > 0

    @property
    def photometric(self) -> bool:
        return any(
            v > 0 for v in (self.brightness, self.contrast, self.gamma, self.blur, self.noise)
        )


# The TrainConfig fields that set AugmentSettings: `augment_` and its field's name.
AUGMENT_STRENGTHS = tuple(f"augment_{f.name}" for f in dataclasses.fields(AugmentSettings))


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

    checkpoint: str
    """A .pth checkpoint (yogo or YOGO 1.0.1)."""
    ddf: str
    """Dataset definition file; its class names must be the model's."""
    split: str = "test"
    """Which split to evaluate: test, val or train."""
    obj_thresh: float = 0.5
    """Objectness threshold for precision/recall/F1, counts and the confusion matrix."""
    iou_thresh: float = 0.5
    """NMS IoU threshold."""
    batch_size: int = 16
    device: str | None = None
    """cpu, cuda or cuda:N; None: cuda when available."""
    bad_labels: BadLabelsPolicy = "error"
    """error, drop or clip (docs/check.md)."""
    dataset_split_override: list[float] | None = None
    """TRAIN VAL TEST fractions re-splitting all data."""
    num_workers: int | None = None
    """Loader processes; None: this process's CPU share (yogo.data.loader)."""
    include_background: bool = True
    """Show the background row and column of the confusion matrix (the JSON always has it)."""
    include_mAP: bool = True  # YOGO 1.0.1 spelt the flag so
    """Accepted for YOGO 1.0.1 command lines: AP and mAP are always computed."""
    wandb: bool = False
    """Log the results to W&B (a new run, or --wandb-resume-id's)."""
    wandb_entity: str | None = None
    wandb_project: str | None = None
    wandb_resume_id: str | None = None
    """Append the results to this W&B run (a training run's id): implies --wandb."""
    note: str | None = None
    """A note for the W&B run and the JSON report."""
    tags: list[str] | None = None
    """Tags for the W&B run and the JSON report."""
    plots: str | None = None
    """Write the evaluation's pictures into this folder (yogo.evaluation.plots)."""
    worst: int | None = None
    """Also write the N frames with the most missed plus extra objects to --plots, and a CSV."""
    force: bool = False
    """Replace existing --json and --plots files."""

    def require_valid(self) -> None:
        if self.split not in ("train", "val", "test"):
            raise UserError(f"--split must be test, val or train, got '{self.split}'")
        _require_fractions(self, "obj_thresh", "iou_thresh")
        _require_positive(self, "batch_size")
        _require_policy(self.bad_labels)
        _require_workers(self.num_workers)
        if self.worst is not None:
            if self.worst < 1:
                raise UserError(f"--worst must be >= 1, got {self.worst}")
            if self.plots is None:
                raise UserError(
                    "--worst writes its frames into the --plots folder",
                    fix="add --plots DIR",
                )


@dataclass
class ExportConfig:
    """`yogo export`: a checkpoint to ONNX, verified before it is kept."""

    checkpoint: str
    """A .pth checkpoint (yogo or YOGO 1.0.1)."""
    output_filename: str | None = None
    """Where to write; None: the checkpoint's path with .onnx."""
    crop_height: float | None = None
    """Run on the centred band of round(F * H) rows (F in (0, 1])."""
    opset: int = 18
    """ONNX opset (7 to 23)."""
    dynamic_batch: bool = True
    """Any batch size (else 1)."""
    simplify: bool = True
    """Simplify the graph (onnxslim) when that leaves fewer nodes; the saved file is verified."""
    force: bool = False
    """Replace an existing file."""

    def require_valid(self) -> None:
        if self.crop_height is not None and not 0 < self.crop_height <= 1:
            raise UserError(f"--crop-height must be in (0, 1], got {self.crop_height}")
        if not 7 <= self.opset <= 23:
            raise UserError(
                f"--opset {self.opset} is not supported", fix="use an opset from 7 to 23"
            )


@dataclass
class InferConfig:
    """`yogo infer`: detect (and count) objects in images with a .pth or .onnx model."""

    model: str
    """A .pth checkpoint or an exported .onnx."""
    path_to_images: str | None = None
    """An image, or a folder of images."""
    path_to_zarr: str | None = None
    """A zarr store of frames (instead of --path-to-images)."""
    zarr_layout: str = "auto"
    """Axes of a zarr array: auto, hwn (YOGO 1.0.1's), nhw or nhwc."""
    output_dir: str = "yogo-infer"
    """Results go here (a new or empty folder for what is written)."""
    save_preds: bool = False
    """labels/*.txt (class xc yc w h confidence) and a ddf.yml that trains on them."""
    split_fractions: tuple[float, float, float] = (0.9, 0.1, 0.0)
    """dataset_split_fractions TRAIN VAL TEST of the ddf.yml --save-preds writes."""
    draw_boxes: bool = False
    """boxes/*: the images with their boxes."""
    output_img_filetype: str = "png"
    """File type of --draw-boxes images: png, tif or tiff."""
    line_width: int | None = None
    """Box lines of --draw-boxes images, in pixels of the drawing; None: from its size."""
    hide_labels: bool = False
    """--draw-boxes without class names on the boxes (a legend names the colours)."""
    hide_conf: bool = False
    """--draw-boxes without scores on the boxes."""
    count: bool = False
    """Per-class totals; counts.csv."""
    save_npy: bool = False
    """One array of every detection, as YOGO 1.0.1 wrote (docs/export-and-infer.md)."""
    label_studio: str | None = None
    """Write Label Studio tasks with the detections as pre-annotations to this JSON file."""
    label_studio_url_prefix: str | None = None
    """Image URLs in the tasks start with this; None: Label Studio's local-files URL."""
    recursive: bool = False
    """Also look in sub-folders."""
    obj_thresh: float = 0.5
    """Minimum objectness."""
    iou_thresh: float = 0.5
    """Class-agnostic NMS IoU."""
    min_class_confidence_threshold: float = 0.0
    """Minimum class probability."""
    batch_size: int = 16
    device: str | None = None
    """cpu or cuda; None: cuda when available."""
    half: bool = False
    """Reduced precision: fp16 on a GPU, bf16 on a CPU (.pth models)."""
    crop_height: float | None = None
    """Run on the centred band of round(F * H) rows (F in (0, 1])."""
    class_names: list[str] | None = None
    """Names to report instead of the model's (same number)."""
    num_workers: int | None = None
    """Frame reading processes; None: this process's CPU share."""
    use_tqdm: bool = True
    """A progress bar (on a terminal)."""
    heatmap_mask_path: str | None = None
    """Accepted for YOGO 1.0.1 command lines; ignored, with a note."""
    force: bool = False
    """Replace the files of an earlier run in output_dir (never an input image)."""

    def require_valid(self) -> None:
        _require_fractions(self, "obj_thresh", "iou_thresh", "min_class_confidence_threshold")
        _require_positive(self, "batch_size")
        _require_workers(self.num_workers)
        if self.crop_height is not None and not 0 < self.crop_height <= 1:
            raise UserError(f"--crop-height must be in (0, 1], got {self.crop_height}")
        if self.line_width is not None and self.line_width < 1:
            raise UserError(f"--line-width must be >= 1, got {self.line_width}")
        if self.output_img_filetype.lstrip(".") not in ("png", "tif", "tiff"):
            raise UserError(
                f"--output-img-filetype must be png, tif or tiff, got '{self.output_img_filetype}'"
            )
        if self.label_studio_url_prefix is not None and self.label_studio is None:
            raise UserError(
                "--label-studio-url-prefix is used by --label-studio",
                fix="add --label-studio FILE.json",
            )


@dataclass
class CheckConfig:
    """`yogo check`: what a run would train on, and every problem, without training."""

    ddf: str
    """Dataset definition file."""
    image_hw: list[int] | None = None
    """Model input H W for the grid-collision count; None: the first training image's size."""
    bad_labels: BadLabelsPolicy = "error"
    """What training would do with bad rows: error, drop or clip (docs/check.md)."""
    min_label_confidence: float = 0.0
    """Leave out label rows whose confidence column (machine labels) is below this."""
    decode: bool = False
    """Also decode every image fully, on all cores (slow)."""
    dataset_split_override: list[float] | None = None
    """TRAIN VAL TEST fractions re-splitting all data."""

    def require_valid(self) -> None:
        _require_policy(self.bad_labels)
        _require_fractions(self, "min_label_confidence")
        if self.image_hw is not None and (len(self.image_hw) != 2 or min(self.image_hw) < 1):
            raise UserError(f"--image-hw must be two positive numbers, got {self.image_hw}")


@dataclass
class SynthConfig:
    """`yogo synth`: synthetic smear-like frames, YOLO labels and a DDF
    (`yogo.data.synth.write_dataset` takes these fields as arguments)."""

    out_dir: str
    """A new (or empty) folder to write into."""
    num_images: int = 64
    image_hw: tuple[int, int] = (192, 256)
    """Frame size H W."""
    class_names: tuple[str, ...] = ("healthy", "ring", "trophozoite")
    """Class 0 is common, later ones rarer."""
    seed: int = 0
    """The same seed gives the same files."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """dataset_split_fractions TRAIN VAL TEST written into ddf.yml."""
    class_frequencies: list[float] | None = None
    """Relative frequency of each class; None: 1 for class 0, then 0.08, 0.04, ..."""
    image_format: str = "png"
    """png, tif, jpg or bmp."""
    cell_diameter: float | None = None
    """Cell diameter in pixels; None: 6% of the shorter side, at least 12."""
    class_sizes: list[float] | None = None
    """Diameter of each class relative to a cell's; None: 1 (1.5 for the nucleus look)."""
    class_looks: list[str] | None = None
    """Look of each class (yogo.data.synth.LOOKS); None: plain, ring, blob, ... cycling."""
    size_jitter: float = 0.06
    """Relative standard deviation of object diameters (clipped at +-20% or 3 deviations)."""
    coverage: float = 0.3
    """Fraction of the frame under objects (about 0.5 makes them crowd and touch)."""
    brightness_jitter: float = 0.1
    """Each object's darkness varies by up to this fraction."""


def _flag(name: str) -> str:
    return name.replace("_", "-")


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
        if not 0 <= value <= 1:
            raise UserError(f"--{_flag(name)} must be in [0, 1], got {value}")


def _require_policy(bad_labels: str) -> None:
    if bad_labels not in BAD_LABELS_POLICIES:
        raise UserError(f"--bad-labels must be error, drop or clip, got '{bad_labels}'")


def _require_workers(num_workers: int | None) -> None:
    if num_workers is not None and num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {num_workers}")


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
