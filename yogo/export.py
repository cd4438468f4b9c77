"""`yogo export CKPT`: an ONNX file that takes raw frames and returns decoded predictions,
checked with onnxruntime against PyTorch before it is put in place.

    result = export_onnx(Path("run/best.pth"))          # writes run/best.onnx
    result.path, result.max_abs_error, result.images   # what was verified, on what

The graph: uint8 (B, C, H, W) frames -> [centred band of round(F * H) rows with --crop-height]
-> float, /255 when the model normalises -> network -> decoded (B, 5 + C, Sy, Sx): xc, yc, w, h
normalised to the full frame, objectness, class probabilities (yogo.boxes.decode).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yogo import __version__
from yogo.checkpoint import Checkpoint, ModelInfo, load_checkpoint
from yogo.errors import RunError, UserError, display_path
from yogo.infer import load_predictor
from yogo.model import YOGO

# onnxruntime and PyTorch run the same float32 graph; channels other than w and h agree to
# ~1e-6. w and h go through exp(), which turns absolute error into relative error: raw values
# near the clamp (80, an untrained or YOGO 1.0.1 model on 0..255 input) reach 2e-4 relative.
ATOL = 1e-4
WH_RTOL = 1e-3
VERIFY_IMAGES = 8


class Deployed(nn.Module):
    """What the ONNX file computes (also what `yogo infer` runs for a .pth, cropped or not)."""

    def __init__(self, model: YOGO, image_hw: tuple[int, int], crop_height: float | None) -> None:
        super().__init__()
        self.model = model.eval()
        height = image_hw[0]
        self.band = round(crop_height * height) if crop_height is not None else height
        self.top = (height - self.band) // 2
        self.height = height

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.band == self.height:
            return self.model.predict(images)
        decoded = self.model.predict(images[:, :, self.top : self.top + self.band])
        # Band rows back to full-frame rows; w, h are anchor multiples in full-frame units.
        yc = (self.top + decoded[:, 1:2] * self.band) / self.height
        return torch.cat([decoded[:, :1], yc, decoded[:, 2:]], dim=1)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_error: float
    max_wh_relative_error: float
    images: str  # where the verification images came from
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]


def export_onnx(
    checkpoint_path: Path,
    output: Path | None = None,
    crop_height: float | None = None,
    opset: int = 18,
    dynamic_batch: bool = True,
    force: bool = False,
) -> ExportResult:
    """Export, verify, then move into place; a file that fails verification is not kept."""
    if crop_height is not None and not 0 < crop_height <= 1:
        raise UserError(f"--crop-height must be in (0, 1], got {crop_height}")
    if not 7 <= opset <= 23:
        raise UserError(f"--opset {opset} is not supported", fix="use an opset from 7 to 23")
    checkpoint = load_checkpoint(checkpoint_path)
    output = output if output is not None else checkpoint_path.with_suffix(".onnx")
    if output.exists() and not force:
        raise UserError(
            "already exists", path=output, fix="give --output-filename, or --force to replace it"
        )
    if not output.parent.is_dir():
        raise UserError("the folder for the ONNX file does not exist", path=output.parent)
    info = checkpoint.info
    if crop_height is not None and round(crop_height * info.image_hw[0]) < 8:
        raise UserError(f"--crop-height {crop_height} leaves fewer than 8 rows")
    deployed = Deployed(checkpoint.build_model(), info.image_hw, crop_height)
    images, source = verification_images(checkpoint)

    handle, temp_name = tempfile.mkstemp(
        prefix=f".{output.stem}.", suffix=".onnx", dir=output.parent
    )
    os.close(handle)
    temp = Path(temp_name)
    try:
        _write_onnx(deployed, images, temp, opset, dynamic_batch)
        input_shape, output_shape = _add_metadata(temp, info, crop_height, checkpoint)
        expected = deployed(torch.from_numpy(images)).detach().numpy()
        got = load_predictor(temp, "cpu").run(images).numpy()  # as `yogo infer` runs it
        error, wh_error = compare(got, expected)
        if not (error <= ATOL and wh_error <= WH_RTOL):
            raise RunError(
                f"the exported model disagrees with PyTorch on {source}: max abs error "
                f"{error:.3g} (tolerance {ATOL:g}), w/h relative error {wh_error:.3g} "
                f"(tolerance {WH_RTOL:g}); nothing was written. Try another --opset."
            )
        os.replace(temp, output)
    finally:
        temp.unlink(missing_ok=True)
    return ExportResult(output, error, wh_error, source, input_shape, output_shape)


def verification_images(checkpoint: Checkpoint) -> tuple[np.ndarray, str]:
    """Up to 8 frames at the model size, uint8 (B, C, H, W): the run's validation images when
    its DDF can be read, else synthetic smear frames."""
    info = checkpoint.info
    ddf_path = (checkpoint.payload.get("config") or {}).get("ddf")
    if ddf_path:
        from yogo.data.images import ImageError, decode_image
        from yogo.data.transforms import resize
        from yogo.ddf import DatasetDefinition

        try:
            ddf = DatasetDefinition.from_yaml(Path(ddf_path))
            samples = (ddf.splits["val"] or ddf.splits["train"])[:VERIFY_IMAGES]
            frames = [
                resize(torch.from_numpy(decode_image(s.image, info.channels)), info.image_hw)
                for s in samples
                if s.image is not None
            ]
        except (UserError, ImageError, OSError):
            frames = []
        if frames:
            stack = torch.stack(frames).numpy()
            return stack, f"{len(frames)} validation image(s) of {display_path(ddf_path)}"
    from yogo.data.synth import synthetic_frames

    frames_array = synthetic_frames(4, info.image_hw, info.channels, seed=0)
    return frames_array, "4 synthetic frames (the run's DDF is not readable here)"


def compare(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Max abs error over every channel but w and h, and max relative error of w and h."""
    others = np.delete(np.arange(got.shape[1]), [2, 3])
    error = float(np.abs(got[:, others] - expected[:, others]).max())
    wh = np.abs(got[:, 2:4] - expected[:, 2:4]) / np.maximum(np.abs(expected[:, 2:4]), 1e-12)
    return error, float(wh.max())


def _write_onnx(
    deployed: Deployed, images: np.ndarray, path: Path, opset: int, dynamic_batch: bool
) -> None:
    example = torch.from_numpy(images[:2] if len(images) >= 2 else np.repeat(images, 2, 0))
    shapes = {"images": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes are not the user's problem
        program = torch.onnx.export(
            deployed,
            (example if dynamic_batch else example[:1],),
            input_names=["images"],
            output_names=["predictions"],
            dynamic_shapes=shapes,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))


def _add_metadata(
    path: Path, info: ModelInfo, crop_height: float | None, checkpoint: Checkpoint
) -> tuple[tuple[int | str, ...], tuple[int | str, ...]]:
    """Add yogo's metadata to the file; returns its input and output shapes."""
    import onnx

    model = onnx.load(str(path))
    metadata = {
        "class_names": json.dumps(list(info.class_names)),
        "image_hw": json.dumps(list(info.image_hw)),
        "channels": str(info.channels),
        "normalize_images": json.dumps(info.normalize_images),
        "crop_height": json.dumps(crop_height),
        "anchors": json.dumps([info.anchor_w, info.anchor_h]),
        "model_name": info.model_name,
        "yogo_version": __version__,
        "source_checkpoint": checkpoint.path.name,
        "source_format": checkpoint.source,
        "output": "xc, yc, w, h (normalised to the full frame), objectness, class probabilities",
    }
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "yogo", __version__
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

    def shape(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
        return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)

    return shape(model.graph.input[0]), shape(model.graph.output[0])
