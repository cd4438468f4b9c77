"""A model ready to predict, from a .pth checkpoint or an exported .onnx file: what `yogo
infer` runs and what `yogo export` verifies its file with.

    predictor = load_predictor(Path("best.onnx"))           # or best.pth; device optional
    decoded = predictor.run(frames)    # uint8 (B, C, H, W) at predictor.image_hw
                                       # -> (B, 5 + C, Sy, Sx) decoded (yogo.model.boxes.decode)
    found = predictor.detect(frames, predictor.counting.thresholds)  # per frame (N, 7)

`detect` is what the commands call: an ensemble (yogo.deploy.ensemble) fuses its views there.

`Deployed` is the computation both kinds share: the ONNX graph is exported from it, and a .pth
runs through it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yogo.config import Precision, ResolvedPrecision, require_crop_height
from yogo.dist import reduced_precision, resolve_device, resolve_precision
from yogo.errors import UserError
from yogo.evaluation.counting import CountModel, count_model_of, read_count_model
from yogo.model.checkpoint import load_checkpoint
from yogo.model.network import YOGO, fused_for_inference

log = logging.getLogger(__name__)


class Deployed(nn.Module):
    """What an exported ONNX file computes, and what a .pth runs as: uint8 frames in (any
    range the model was trained on), decoded predictions out, optionally on the centred band
    of round(crop_height * H) rows (outputs stay in full-frame coordinates)."""

    def __init__(
        self, model: YOGO, crop_height: float | None = None, channels_last: bool = False
    ) -> None:
        super().__init__()
        self.model = model.eval()
        height = model.config.image_hw[0]
        self.band = round(crop_height * height) if crop_height is not None else height
        self.top = (height - self.band) // 2
        self.height = height
        self.channels_last = channels_last  # frames come as (B, H, W, C)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.permute(0, 3, 1, 2)
        if self.band == self.height:
            return self.model.predict(images)
        decoded = self.model.predict(images[:, :, self.top : self.top + self.band])
        # Band rows back to full-frame rows; w, h are anchor multiples in full-frame units.
        yc = (self.top + decoded[:, 1:2] * self.band) / self.height
        return torch.cat([decoded[:, :1], yc, decoded[:, 2:]], dim=1)


@dataclass(frozen=True)
class Detections:
    """What a model found in one image, highest objectness first (N detections)."""

    boxes: np.ndarray  # (N, 4) float: x0, y0, x1, y1 in pixels of the image given
    scores: np.ndarray  # (N,) objectness x class probability, the score AP ranks by
    calibrated: np.ndarray  # (N,) the score through the model's calibration: P(right)
    classes: np.ndarray  # (N,) int class index
    class_names: list[str]  # (N,) the class of each detection by name
    objectness: np.ndarray  # (N,)
    class_probability: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Predictor:
    """A model ready to run: uint8 (B, C, H, W) at `image_hw` -> decoded (B, 5 + C, Sy, Sx)
    with `run`, or images of any size to detections with `predict`."""

    run: Callable[[np.ndarray], torch.Tensor]
    class_names: tuple[str, ...]
    image_hw: tuple[int, int]
    channels: int
    kind: str  # "pytorch" or "onnxruntime", and on what
    counting: CountModel  # thresholds, calibration, count correction (docs/counting.md)
    bit_depth: int = 8  # frames in are uint8 (8) or uint16 (16)
    tile_overlap: int | None = None  # trained with --tile: larger frames are read as tiles

    @property
    def pixel_type(self) -> type[np.unsignedinteger[Any]]:
        """The numpy type of the frames `run` takes."""
        return np.uint16 if self.bit_depth == 16 else np.uint8

    def detect(
        self,
        images: np.ndarray,
        obj_thresh: float | Sequence[float],
        iou_thresh: float = 0.5,
        min_class_confidence: float = 0.0,
        class_probs: bool = False,
    ) -> list[torch.Tensor]:
        """uint8 (B, C, H, W) frames at `image_hw` -> per frame the (N, 7) detections of
        `yogo.model.boxes.postprocess` (with `class_probs`, (N, 7 + C))."""
        from yogo.model.boxes import postprocess

        decoded = self.run(images)
        return postprocess(decoded, obj_thresh, iou_thresh, min_class_confidence, class_probs)

    def detect_tiled(
        self,
        frame: np.ndarray,
        overlap: int,
        obj_thresh: float | Sequence[float],
        iou_thresh: float = 0.5,
        min_class_confidence: float = 0.0,
        class_probs: bool = False,
        batch_size: int = 16,
    ) -> torch.Tensor:
        """One uint8 (C, H, W) frame of any size, read as `image_hw` tiles overlapping by
        `overlap` pixels, -> its (N, 7) detections normalised to the frame, each object once
        (yogo.model.tiles)."""
        from yogo.model.tiles import cut_tiles, merge_tiles, plan_windows

        height, width = frame.shape[1:]
        windows = plan_windows((height, width), self.image_hw, overlap)
        tiles = cut_tiles(torch.from_numpy(frame), windows, self.image_hw).numpy()
        found: list[torch.Tensor] = []
        for start in range(0, len(tiles), batch_size):
            found += self.detect(
                tiles[start : start + batch_size],
                obj_thresh,
                iou_thresh,
                min_class_confidence,
                class_probs,
            )
        return merge_tiles(found, windows, self.image_hw, (height, width), iou_thresh)

    def overlap(self, tile_overlap: int | None) -> int:
        """The tiles' overlap: `tile_overlap` if given, else the model's, else an eighth of
        the tile's shorter side (a model trained without --tile)."""
        if tile_overlap is not None:
            return tile_overlap
        return self.tile_overlap if self.tile_overlap is not None else min(self.image_hw) // 8

    def predict(
        self,
        images: Sequence[np.ndarray | str | Path],
        obj_thresh: float | None = None,
        iou_thresh: float = 0.5,
        min_class_confidence: float = 0.0,
        batch_size: int = 16,
    ) -> list[Detections]:
        """Detections per image, after the post-processing of `yogo infer` (the model's
        per-class thresholds unless `obj_thresh` gives one for all, class-agnostic NMS, boxes
        clipped to the image). Each image is a path or an array:
        uint8 or uint16, (H, W) or (H, W, C); any size (resized to the model's, boxes in the
        image's own pixels). Frames reach the model at its bit depth (yogo.data.channels)."""
        from yogo.data.images import ImageError, array_to_frame, decode_image
        from yogo.data.transforms import resize

        items = _require_images(images, self.channels)
        for name, value in (("obj_thresh", obj_thresh), ("iou_thresh", iou_thresh)):
            if value is not None and not 0 <= value <= 1:
                raise UserError(f"{name} must be in [0, 1], got {value}")
        if not 0 <= min_class_confidence <= 1:
            raise UserError(f"min_class_confidence must be in [0, 1], got {min_class_confidence}")
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        out: list[Detections] = []
        for start in range(0, len(items), batch_size):
            try:
                frames = [
                    decode_image(Path(item), self.channels, self.bit_depth)
                    if isinstance(item, (str, Path))
                    else array_to_frame(np.asarray(item), self.channels, self.bit_depth)
                    for item in items[start : start + batch_size]
                ]
            except ImageError as e:
                raise UserError(str(e)) from None
            batch = np.stack([resize(torch.from_numpy(f), self.image_hw).numpy() for f in frames])
            thresholds = self.counting.thresholds if obj_thresh is None else obj_thresh
            found = self.detect(batch, thresholds, iou_thresh, min_class_confidence)
            for frame, rows in zip(frames, found, strict=True):
                height, width = frame.shape[1:]
                r = rows.numpy().astype(np.float64)
                boxes = r[:, :4].clip(0, 1) * [width, height, width, height]
                classes = r[:, 6].astype(np.int64)
                out.append(
                    Detections(
                        boxes=boxes,
                        scores=r[:, 4] * r[:, 5],
                        calibrated=self.counting.calibrate(r[:, 4] * r[:, 5], classes),
                        classes=classes,
                        class_names=[self.class_names[c] for c in classes],
                        objectness=r[:, 4],
                        class_probability=r[:, 5],
                    )
                )
        return out


def _require_images(images: Any, channels: int) -> list[Any]:
    """The images `predict` takes, as `yogo infer` reads them: paths, or uint8/uint16 arrays
    of (H, W) or (H, W, C) with C 1, 3, 4 or the model's `channels`. Anything else is a
    UserError that says what to pass, never detections made from a misread array."""
    if isinstance(images, np.ndarray | str | Path) or not isinstance(images, Sequence):
        raise UserError(
            f"predict takes a list of images, got {type(images).__name__}",
            fix="for one image, predict([image])",
        )
    for i, item in enumerate(images):
        if isinstance(item, str | Path):
            continue
        if not isinstance(item, np.ndarray):
            raise UserError(
                f"image {i} is a {type(item).__name__}; give a path or a numpy array",
                fix="np.asarray(image) for PIL images",
            )
        if item.dtype not in (np.uint8, np.uint16):
            scale = " (x 255)" if item.dtype.kind == "f" else ""
            raise UserError(
                f"image {i} is {item.dtype}; predict reads uint8 or uint16 pixels, as a "
                "microscope writes them",
                fix=f"convert it: image{scale}.astype(np.uint8) if its values fit 0..255",
            )
        shape = item.shape
        fits = (1, 3, 4, channels)
        if item.ndim not in (2, 3) or (item.ndim == 3 and shape[2] not in fits):
            first = item.ndim == 3 and shape[0] in fits
            raise UserError(
                f"image {i} has shape {shape}; predict reads (H, W) or (H, W, C) arrays",
                fix="np.moveaxis(image, 0, -1) for a channel-first array"
                if first
                else "give one frame per array",
            )
        if min(shape[:2]) < 1:
            raise UserError(f"image {i} has shape {shape}: no pixels")
    return list(images)


def load_predictor(
    path: str | Path,
    device_name: str | None = None,
    crop_height: float | None = None,
    half: bool = False,
    precision: Precision = "auto",
) -> Predictor:
    """A .pth (yogo or YOGO 1.0.1), a yogo-exported .onnx or OpenVINO .xml (on the CPU), on
    `device_name` (None: the GPU when there is one); a .pth on the centred band of
    round(crop_height * H) rows (an exported file has its band built in by `yogo export
    --crop-height`). A .pth computes in `precision`: auto is bf16 where the device computes
    it natively, else fp32 (yogo.dist.resolve_precision); `half` is reduced precision
    whatever the device (fp16 on a GPU, bf16 on a CPU)."""
    path = Path(path)
    require_crop_height(crop_height)
    if not path.is_file():
        raise UserError("model file does not exist", path=path)
    if path.suffix == ".onnx":
        return _onnx_predictor(path, device_name, crop_height, half or precision != "auto")
    if path.suffix == ".xml":
        return _openvino_predictor(path, crop_height, half or precision != "auto")
    checkpoint = load_checkpoint(path)
    config = checkpoint.model_config
    device = resolve_device(device_name)
    resolved = reduced_precision(device) if half else resolve_precision(precision, device)
    run = _pytorch_run(checkpoint.build_model(), crop_height, device, resolved)
    kind = f"pytorch on {device}" + ("" if resolved == "32" else f", {resolved}")
    counting = count_model_of(checkpoint)
    return Predictor(
        run, config.class_names, config.image_hw, config.channels, kind, counting,
        bit_depth=config.bit_depth, tile_overlap=config.tile_overlap,
    )  # fmt: skip


def _pytorch_run(
    model: YOGO, crop_height: float | None, device: torch.device, precision: ResolvedPrecision
) -> Callable[[np.ndarray], torch.Tensor]:
    """`Predictor.run` of a network: its fused inference copy (yogo.model.network
    .fused_for_inference) in channels-last memory, which the CPU's and cuDNN's convolutions
    run fastest, under autocast in bf16 or fp16 unless `precision` is 32."""
    deployed = Deployed(fused_for_inference(model), crop_height)
    deployed = deployed.to(device).to(memory_format=torch.channels_last)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16

    def run(images: np.ndarray) -> torch.Tensor:
        frames = torch.from_numpy(images).to(device, non_blocking=True)
        frames = frames.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype, enabled=precision != "32"),
        ):
            decoded: torch.Tensor = deployed(frames)
        return decoded.float().cpu()

    return run


def _onnx_predictor(
    path: Path, device_name: str | None, crop_height: float | None, half: bool
) -> Predictor:
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    providers = _onnx_providers(path, device_name, ort.get_available_providers())
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except ort_errors.InvalidProtobuf as e:
        raise UserError(f"is not an ONNX file ({e})", path=path) from None
    except (
        ort_errors.Fail,
        ort_errors.InvalidGraph,
        ort_errors.InvalidArgument,
        ort_errors.NotImplemented,
        ort_errors.RuntimeException,
    ) as e:  # a valid ONNX file this onnxruntime cannot run: its own words say why
        raise UserError(
            f"onnxruntime cannot load this model: {type(e).__name__}: {e}",
            path=path,
            fix="re-export it with `yogo export` (or another --opset)",
        ) from None
    if _asks_for_cuda(device_name) and session.get_providers()[0] != "CUDAExecutionProvider":
        raise UserError(
            f"--device {device_name}: onnxruntime could not start its CUDA provider (its "
            "warnings above say why; usually a CUDA or cuDNN library it needs is missing)",
            path=path,
            fix="install the CUDA and cuDNN versions your onnxruntime-gpu names, or use "
            "--device cpu",
        )
    metadata = session.get_modelmeta().custom_metadata_map
    shape = session.get_inputs()[0].shape
    one_at_a_time = isinstance(shape[0], int)  # exported with --no-dynamic-batch

    def infer(images: np.ndarray) -> np.ndarray:
        if not one_at_a_time:
            out: np.ndarray = session.run(None, {"images": images})[0]
            return out
        return np.concatenate([session.run(None, {"images": image[None]})[0] for image in images])

    kind = f"onnxruntime on {session.get_providers()[0].replace('ExecutionProvider', '')}"
    return _exported(path, metadata, infer, kind, crop_height, half)


def _asks_for_cuda(device_name: str | None) -> bool:
    return device_name is not None and device_name.startswith("cuda")


def _onnx_providers(
    path: Path, device_name: str | None, available: Sequence[str]
) -> list[str | tuple[str, dict[str, int]]]:
    """onnxruntime's providers for `--device`: None takes its CUDA provider when it has one;
    cuda (or cuda:N) must get it: a GPU asked for is never quietly swapped for the CPU, which
    runs the same model many times slower (onnxruntime without -gpu has no CUDA provider)."""
    has_cuda = "CUDAExecutionProvider" in available
    if _asks_for_cuda(device_name) and not has_cuda:
        raise UserError(
            f"--device {device_name}: this onnxruntime has no CUDA provider (it has "
            f"{', '.join(p.removesuffix('ExecutionProvider') for p in available)})",
            path=path,
            fix="pip install onnxruntime-gpu (in place of onnxruntime), or use --device cpu",
        )
    if not has_cuda or (device_name is not None and not _asks_for_cuda(device_name)):
        return ["CPUExecutionProvider"]
    try:
        index = torch.device(device_name or "cuda").index or 0
    except RuntimeError:
        raise UserError(
            f"--device '{device_name}' is not a device; use cpu, cuda or cuda:N"
        ) from None
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def _openvino_predictor(path: Path, crop_height: float | None, half: bool) -> Predictor:
    """An OpenVINO IR (`yogo export --format openvino`) on this machine's CPU."""
    try:
        import openvino as ov
    except ImportError:
        raise UserError(
            "running an OpenVINO model needs the openvino package",
            path=path,
            fix="pip install 'yogo[openvino]'",
        ) from None
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as e:
        raise UserError(
            f"OpenVINO cannot read this model: {str(e).splitlines()[0]}", path=path
        ) from None
    metadata = {
        key: model.get_rt_info(["yogo", key]).astype(str)
        for key in METADATA_KEYS
        if model.has_rt_info(["yogo", key])
    }
    compiled = core.compile_model(model, "CPU")

    def infer(images: np.ndarray) -> np.ndarray:
        out: np.ndarray = compiled(images)[0]
        return out.astype(np.float32)

    return _exported(path, metadata, infer, "openvino on CPU", crop_height, half)


# What `yogo export` stores in a model file (ONNX metadata_props, OpenVINO rt_info "yogo").
METADATA_KEYS = (
    "class_names", "image_hw", "channels", "bit_depth", "input_mean", "input_std",
    "normalize_images", "crop_height", "anchors",
    "centre_range", "model_name", "yogo_version", "source_checkpoint", "source_format",
    "output", "counting", "input_layout", "precision", "verification",
)  # fmt: skip


def _exported(
    path: Path,
    metadata: dict[str, str],
    infer: Callable[[np.ndarray], np.ndarray],
    kind: str,
    crop_height: float | None,
    half: bool,
) -> Predictor:
    """A predictor over an exported file's `infer` (its own input layout), from its
    metadata."""
    if not {"class_names", "image_hw", "channels"} <= metadata.keys():
        raise UserError(
            "has no yogo metadata (class names, image size, channels)",
            path=path,
            fix="export it with `yogo export`",
        )
    built_in = json.loads(metadata.get("crop_height", "null"))
    if crop_height is not None and crop_height != built_in:
        raise UserError(
            f"--crop-height {crop_height:g} differs from this {path.suffix} file's "
            f"({'none' if built_in is None else f'{built_in:g}'}): a band is built into the graph",
            path=path,
            fix=f"re-export with `yogo export CHECKPOINT --crop-height {crop_height:g}`, "
            "or run the .pth",
        )
    if half:
        log.info(f"--half, --precision: a {path.suffix} file runs in the precision it was made in")
    channels_last = metadata.get("input_layout", "nchw") == "nhwc"

    def run(images: np.ndarray) -> torch.Tensor:  # (B, C, H, W), as every predictor takes
        if channels_last:
            images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        return torch.from_numpy(infer(images))

    hw = json.loads(metadata["image_hw"])
    names = tuple(json.loads(metadata["class_names"]))
    stored = json.loads(metadata["counting"]) if "counting" in metadata else None
    counting = read_count_model(stored, names, path, "export it again with `yogo export`")
    return Predictor(
        run, names, (int(hw[0]), int(hw[1])), int(metadata["channels"]), kind, counting,
        int(metadata.get("bit_depth", "8")),
    )  # fmt: skip
