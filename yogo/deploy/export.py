"""`yogo export CKPT`: an ONNX file that takes raw frames and returns decoded predictions,
checked with onnxruntime against PyTorch before it is put in place.

    result = export_onnx(ExportConfig(checkpoint="run/best.pth"))   # writes run/best.onnx
    result.path, result.max_abs_error, result.images   # what was verified, on what

The graph: uint8 (B, C, H, W) frames (uint16 for 16-bit models) -> [centred band of
round(F * H) rows with --crop-height] -> float, /255 when the model normalises (or minus its
per-channel mean, over its std, for 16-bit and N-channel models) -> network -> decoded
(B, 5 + C, Sy, Sx): xc, yc, w, h normalised to the full frame, objectness, class
probabilities (yogo.model.boxes.decode): the computation of
`yogo.deploy.predictor.Deployed`, which also checks the file, as `yogo infer` runs it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from yogo import __version__
from yogo.config import ExportConfig
from yogo.data.channels import to_depth
from yogo.deploy.predictor import Deployed, load_predictor
from yogo.errors import RunError, UserError, display_path
from yogo.evaluation.counting import count_model_of
from yogo.log import speak_unless_configured
from yogo.model.checkpoint import Checkpoint, load_checkpoint
from yogo.outputs import atomic_path, partial_folder, plan_file, write_atomic

if TYPE_CHECKING:
    from yogo.deploy.accuracy import Accuracy

log = logging.getLogger(__name__)

# onnxruntime and PyTorch run the same float32 graph; channels other than w and h agree to
# ~1e-6. w and h go through exp(), which turns absolute error into relative error: raw values
# near the clamp (80, an untrained or YOGO 1.0.1 model on 0..255 input) reach 2e-4 relative.
ATOL = 1e-4
WH_RTOL = 1e-3
# fp16 weights and arithmetic (OpenVINO --precision fp16): ~3 significant digits
FP16_ATOL = 1e-2
FP16_WH_RTOL = 1e-2
VERIFY_IMAGES = 8


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_error: float
    max_wh_relative_error: float
    tolerance: tuple[float, float]  # what the errors had to stay within (pytorch_reference)
    images: str  # where the verification images came from
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    nodes: tuple[int, int] | None = None  # graph nodes before and after --simplify
    runtime: str = "onnxruntime"  # what ran the exported file to verify it
    accuracy: Accuracy | None = None  # on --verify-split, beside PyTorch
    input_type: str = "uint8"  # the frames the file takes: uint8, or uint16 (16-bit models)


def export_onnx(cfg: ExportConfig) -> ExportResult:
    """Export, verify, then move into place; a file that fails verification is not kept.
    `--format openvino` converts the verified ONNX graph to an OpenVINO IR (.xml and .bin)."""
    speak_unless_configured()
    cfg.require_valid()
    checkpoint_path = Path(cfg.checkpoint)
    checkpoint = load_checkpoint(checkpoint_path)
    openvino = cfg.format == "openvino"
    suffix = ".xml" if openvino else ".onnx"
    output = Path(cfg.output_filename or checkpoint_path.with_suffix(suffix))
    plan_file(output, force=cfg.force, inputs=[checkpoint_path], option="--output-filename")
    if output.suffix != suffix:  # checked before the work, as every output is
        raise UserError(
            f"--output-filename must name an {suffix} file for --format {cfg.format}, got "
            f"'{output}'",
            fix=f"give a name ending in {suffix}",
        )
    if openvino:
        plan_file(
            output.with_suffix(".bin"), force=cfg.force, inputs=[checkpoint_path],
            option="--output-filename",
        )  # fmt: skip
        _require_openvino()
    height = checkpoint.model_config.image_hw[0]
    if cfg.crop_height is not None and round(cfg.crop_height * height) < 8:
        raise UserError(f"--crop-height {cfg.crop_height} leaves fewer than 8 rows")
    nhwc = cfg.input_layout == "nhwc"
    deployed = Deployed(checkpoint.build_model(), cfg.crop_height, channels_last=nhwc)
    # (B, C, H, W), as predictors take them
    images, source = verification_images(checkpoint, cfg.calibration)
    fed = np.ascontiguousarray(images.transpose(0, 2, 3, 1)) if nhwc else images
    metadata = _metadata(cfg, checkpoint)
    expected, tolerance = pytorch_reference(deployed, fed)
    if cfg.precision == "fp16":  # weights and arithmetic in half precision
        tolerance = (max(tolerance[0], FP16_ATOL), max(tolerance[1], FP16_WH_RTOL))
    labelled = _labelled_ddf(cfg, checkpoint)
    if cfg.precision == "int8" and labelled is None:
        raise UserError(
            "--precision int8 calibrates on frames of a dataset definition, and this "
            "checkpoint's cannot be read here",
            fix="add --calibration DDF (its train frames calibrate, its test split verifies)",
        )
    report = output.with_suffix(".verification.json") if labelled is not None else None
    if report is not None:
        plan_file(report, force=cfg.force, inputs=[checkpoint_path], option="--output-filename")

    with partial_folder(output) as work:
        graph = work / "model.onnx"
        _write_onnx(deployed, fed, graph, cfg.opset, cfg.dynamic_batch)
        _require_opset(graph, cfg.opset)
        nodes = _simplify(graph) if cfg.simplify else None
        input_shape, output_shape = _add_metadata(graph, metadata)
        written = graph
        if cfg.precision == "int8":
            assert labelled is not None
            frames = _calibration_frames(labelled, checkpoint, cfg.calibration_frames, nhwc)
            written = _int8(graph, metadata, frames, openvino)
        elif openvino:
            written = _to_openvino(graph, metadata, cfg.precision)
        exported = load_predictor(written, "cpu")  # as `yogo infer` runs it
        error, wh_error = compare(exported.run(images).numpy(), expected)
        # Reduced precision is judged by its accuracy below where a DDF allows it, not by
        # its raw outputs (fp16 of a model that amplifies rounding, as YOGO 1.0.1's fixture
        # does, moves them by 0.03); without one fp16 must stay within FP16_ATOL.
        judged_by_accuracy = cfg.precision != "fp32" and labelled is not None
        if not (judged_by_accuracy or (error <= tolerance[0] and wh_error <= tolerance[1])):
            raise RunError(
                f"the exported model disagrees with PyTorch on {source}: max abs error "
                f"{error:.3g} (tolerance {tolerance[0]:.2g}), w/h relative error "
                f"{wh_error:.3g} (tolerance {tolerance[1]:.2g}); nothing was written. "
                "Try another --opset."
            )
        accuracy = None
        if labelled is not None:
            accuracy = _verify_accuracy(cfg, checkpoint_path, exported, labelled, checkpoint)
        if accuracy is not None:  # the figures travel with the file
            _add_verification(written, json.dumps(accuracy.to_plain()))
        if openvino:  # the weights first: an .xml is never there without its .bin
            _publish(written.with_suffix(".bin"), output.with_suffix(".bin"))
        _publish(written, output)
        if report is not None and accuracy is not None:
            write_atomic(report, json.dumps(accuracy.to_plain(), indent=2) + "\n")
    runtime = "openvino" if openvino else "onnxruntime"
    return ExportResult(
        output,
        error,
        wh_error,
        tolerance,
        source,
        input_shape,
        output_shape,
        nodes,
        runtime,
        accuracy,
        str(images.dtype),
    )


def _labelled_ddf(cfg: ExportConfig, checkpoint: Checkpoint) -> Path | None:
    """The DDF to calibrate and verify on: --calibration, else the checkpoint's own when it
    can be read here and has the --verify-split (else None, with a note)."""
    named = cfg.calibration or (checkpoint.payload.get("config") or {}).get("ddf")
    if not named:
        log.info("no dataset definition to verify the file's accuracy on (--calibration DDF)")
        return None
    from yogo.ddf import DatasetDefinition

    try:
        ddf = DatasetDefinition.from_yaml(Path(named))
    except UserError as e:
        if cfg.calibration:
            raise
        log.info(f"the file's accuracy is not verified: {str(e).splitlines()[0]}")
        return None
    ddf.require_classes(
        checkpoint.model_config.class_names,
        "the model's",
        "give the DDF the model was trained on (--calibration)",
    )
    if not ddf.splits[cfg.verify_split]:
        log.info(f"the file's accuracy is not verified: {named} has no {cfg.verify_split} split")
        return None if cfg.precision != "int8" else Path(named)
    return Path(named)


def _calibration_frames(ddf: Path, checkpoint: Checkpoint, count: int, nhwc: bool) -> np.ndarray:
    """Up to `count` training frames (else validation frames) in the exported input layout."""
    from yogo.deploy.accuracy import labelled_frames

    config = checkpoint.model_config
    frames, _ = labelled_frames(ddf, "train", config, count)
    if not len(frames):
        frames, _ = labelled_frames(ddf, "val", config, count)
    if not len(frames):
        raise UserError("has no train or val frames to calibrate int8 on", path=ddf)
    return np.ascontiguousarray(frames.transpose(0, 2, 3, 1)) if nhwc else frames


def _int8(graph: Path, metadata: dict[str, str], frames: np.ndarray, openvino: bool) -> Path:
    """The float graph quantised to int8 on `frames`: NNCF on its OpenVINO IR, or
    onnxruntime's static quantisation (QDQ, per-channel weights) of the ONNX graph."""
    if openvino:
        # nncf imports torch's extension builder, which warns that this machine has no CUDA
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        import nncf
        import openvino as ov

        model = ov.convert_model(str(graph))
        data = nncf.Dataset([frame[None] for frame in frames])
        with contextlib.redirect_stdout(sys.stderr):  # its progress bars; stdout is the result
            quantized = nncf.quantize(model, data, subset_size=len(frames))
        return _save_ir(quantized, metadata, graph.with_name("int8.xml"), fp16=False)
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Frames(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter([{"images": frame[None]} for frame in frames])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    import onnx

    convolutions = [n.name for n in onnx.load(str(graph)).graph.node if n.op_type == "Conv"]
    out = graph.with_name("int8.onnx")
    root = logging.getLogger()  # onnxruntime advises pre-processing there, at every call
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(graph),
            str(out),
            Frames(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],  # the decoding (sigmoid, exp, softmax) stays float
            # The first convolution (on the raw pixels) and the head (the objectness and class
            # logits) stay float: quantised, the quality set's small class fell from AP 0.94
            # to 0.65 and its count from 368 to 3,004 (docs/benchmarks.md).
            nodes_to_exclude=[convolutions[0], convolutions[-1]],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        root.setLevel(level)
    _add_metadata(out, {k: v for k, v in metadata.items() if k not in _onnx_keys(out)})
    return out


def _add_verification(path: Path, figures: str) -> None:
    """The accuracy figures into the verified file's metadata (`verification`, JSON)."""
    if path.suffix == ".onnx":
        _add_metadata(path, {"verification": figures})
        return
    import openvino as ov

    model = ov.Core().read_model(str(path))
    model.set_rt_info(figures, ["yogo", "verification"])
    again = path.with_name("verified.xml")
    ov.save_model(model, str(again), compress_to_fp16=False)
    again.replace(path)
    again.with_suffix(".bin").replace(path.with_suffix(".bin"))


def _onnx_keys(path: Path) -> set[str]:
    import onnx

    return {p.key for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _verify_accuracy(
    cfg: ExportConfig, checkpoint_path: Path, exported: Any, ddf: Path, checkpoint: Checkpoint
) -> Accuracy | None:
    """The exported file beside PyTorch on --verify-split: printed; refused (RunError)
    past the limits unless --force-accuracy."""
    from yogo.deploy.accuracy import compare_accuracy, labelled_frames

    frames, truths = labelled_frames(ddf, cfg.verify_split, checkpoint.model_config)
    if not len(frames):
        return None
    # The reference is fp32, whatever the CPU: an exported fp32 file must match it.
    pytorch = load_predictor(checkpoint_path, "cpu", cfg.crop_height, precision="32")
    accuracy = compare_accuracy(pytorch, exported, frames, truths)
    log.info(
        f"accuracy on the {cfg.verify_split} split of {display_path(ddf)} ({len(frames)} "
        f"frames, the model's thresholds):\n{accuracy.table()}"
    )
    problems = accuracy.problems(cfg.max_map_drop)
    if problems and not cfg.force_accuracy:
        raise RunError(
            "the exported model is less accurate than PyTorch: "
            + "; ".join(problems)
            + ". Nothing was written (--force-accuracy keeps it anyway)."
        )
    for problem in problems:
        log.warning(f"kept with --force-accuracy although {problem}")
    return accuracy


def _publish(source: Path, target: Path) -> None:
    """Move a verified file from the work folder into place through the output rule."""
    with atomic_path(target) as partial:
        os.replace(source, partial)


def _require_openvino() -> None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise UserError(
            "--format openvino needs the openvino package",
            fix="pip install 'yogo[openvino]'",
        ) from None


def _to_openvino(graph: Path, metadata: dict[str, str], precision: str) -> Path:
    """The ONNX graph as an OpenVINO IR beside it (model.xml and model.bin), with yogo's
    metadata in its rt_info; fp16 stores the weights in half precision."""
    import openvino as ov

    model = ov.convert_model(str(graph))
    return _save_ir(model, metadata, graph.with_suffix(".xml"), fp16=precision == "fp16")


def _save_ir(model: Any, metadata: dict[str, str], xml: Path, fp16: bool) -> Path:
    """An OpenVINO model saved as `xml` and its .bin, yogo's metadata in its rt_info."""
    import openvino as ov

    for key, value in metadata.items():
        model.set_rt_info(value, ["yogo", key])
    ov.save_model(model, str(xml), compress_to_fp16=fp16)
    return xml


def pytorch_reference(
    deployed: torch.nn.Module, images: np.ndarray
) -> tuple[np.ndarray, tuple[float, float]]:
    """PyTorch's output on `images`, and the tolerances (abs, w/h relative) the export must
    meet: ATOL and WH_RTOL, or twice what PyTorch's own two memory layouts (two sets of
    float32 kernels, both correct) disagree by, whichever is larger. A model whose outputs
    amplify rounding (YOGO 1.0.1's fixture: random weights on 0..255 input) differs from
    itself by more than 1e-4, and by how much depends on the CPU's kernels."""
    x = torch.from_numpy(images)
    with torch.no_grad():
        expected = deployed(x).numpy()
        other = copy.deepcopy(deployed).to(memory_format=torch.channels_last)(x).numpy()
    noise, wh_noise = compare(other, expected)
    return expected, (max(ATOL, 2 * noise), max(WH_RTOL, 2 * wh_noise))


def verification_images(
    checkpoint: Checkpoint, ddf_path: str | None = None
) -> tuple[np.ndarray, str]:
    """Up to 8 frames at the model size, (B, C, H, W) at its bit depth (uint8 or uint16):
    the validation images of
    `ddf_path` (else of the run's DDF) when it can be read, else synthetic smear frames (with
    a warning saying why)."""
    config = checkpoint.model_config
    ddf_path = ddf_path or (checkpoint.payload.get("config") or {}).get("ddf")
    why = "the checkpoint names no dataset definition (--calibration DDF gives one)"
    if ddf_path:
        from yogo.data.images import ImageError, decode_image
        from yogo.data.transforms import resize
        from yogo.ddf import DatasetDefinition

        try:
            ddf = DatasetDefinition.from_yaml(Path(ddf_path))
            samples = (ddf.splits["val"] or ddf.splits["train"])[:VERIFY_IMAGES]
            frames = [
                resize(
                    torch.from_numpy(decode_image(s.image, config.channels, config.bit_depth)),
                    config.image_hw,
                )
                for s in samples
                if s.image is not None
            ]
        except (UserError, ImageError, OSError) as e:
            why = f"its images cannot be read here: {str(e).splitlines()[0]}"
        else:
            if frames:
                stack = torch.stack(frames).numpy()
                return stack, f"{len(frames)} validation image(s) of {display_path(ddf_path)}"
            why = f"{display_path(ddf_path)} lists no images"
    from yogo.data.synth import synthetic_frames

    log.warning(f"verifying the exported file on synthetic frames: {why}")
    frames_array = synthetic_frames(4, config.image_hw, config.channels, seed=0)
    return to_depth(frames_array, config.bit_depth), f"4 synthetic frames ({why})"


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


def _require_opset(path: Path, opset: int) -> None:
    """The exporter keeps opset 18 when it cannot convert the graph (with a traceback on the
    console, and no error): never hand the user another opset than the one asked for."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    written = {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")}
    if written != {opset}:
        raise RunError(
            f"the exporter could not convert the model to opset {opset} (it wrote "
            f"{', '.join(map(str, sorted(written)))}); nothing was written. Try --opset 18."
        )


def _simplify(path: Path) -> tuple[int, int]:
    """Simplify the graph at `path` in place with onnxslim (constant folding, fused and
    dead nodes) when that leaves fewer nodes; (nodes before, nodes after). The caller verifies
    the file that is then saved (YOGO 1.0.1 checked a simplified graph but saved the other)."""
    import onnx
    import onnxslim

    model = onnx.load(str(path))
    before = len(model.graph.node)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slim = onnxslim.slim(model)
    after = len(slim.graph.node)
    if after >= before:
        return before, before
    onnx.save(slim, str(path))
    return before, after


def _metadata(cfg: ExportConfig, checkpoint: Checkpoint) -> dict[str, str]:
    """What an exported file carries: everything `yogo infer` needs to run it and count."""
    model_config = checkpoint.model_config
    return {
        "class_names": json.dumps(list(model_config.class_names)),
        "image_hw": json.dumps(list(model_config.image_hw)),
        "channels": str(model_config.channels),
        "bit_depth": str(model_config.bit_depth),
        # the normalisation is in the graph; these say what it is (pixel units, per channel)
        "input_mean": json.dumps(model_config.input_mean),
        "input_std": json.dumps(model_config.input_std),
        "normalize_images": json.dumps(model_config.normalize_images),
        "crop_height": json.dumps(cfg.crop_height),
        "anchors": json.dumps([model_config.anchor_w, model_config.anchor_h]),
        "centre_range": json.dumps(model_config.centre_range),
        "model_name": model_config.model_name,
        "yogo_version": __version__,
        "source_checkpoint": checkpoint.path.name,
        "source_format": checkpoint.source,
        "output": "xc, yc, w, h (normalised to the full frame), objectness, class probabilities",
        "input_layout": cfg.input_layout,
        "precision": cfg.precision,
        # per-class thresholds, calibration and count correction (docs/counting.md)
        "counting": json.dumps(count_model_of(checkpoint).to_plain()),
    }


def _add_metadata(
    path: Path, metadata: dict[str, str]
) -> tuple[tuple[int | str, ...], tuple[int | str, ...]]:
    """Add yogo's metadata to the ONNX file; returns its input and output shapes."""
    import onnx

    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "yogo", __version__
    onnx.checker.check_model(model)
    onnx.save(model, str(path))

    def shape(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
        return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)

    return shape(model.graph.input[0]), shape(model.graph.output[0])
