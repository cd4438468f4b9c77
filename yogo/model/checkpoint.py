"""Checkpoints: a versioned plain-data schema, atomic writes, safe loads, YOGO 1.0.1 import.

    save_checkpoint(run / "last.pth", payload)         # atomic and durable (yogo.outputs)
    checkpoint = load_checkpoint(Path("best.pth"))     # yogo or YOGO 1.0.1 file -> Checkpoint
    model = checkpoint.build_model()                   # weights loaded, ready for eval()

Files hold only tensors, numbers, strings, lists and dicts, and are always read with
`torch.load(weights_only=True)`: a checkpoint cannot run code when loaded.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from yogo.errors import RunError, UserError, display_path
from yogo.model.grid import MIN_IMAGE_SIDE
from yogo.model.network import MODELS, YOGO, ModelConfig, build_model
from yogo.outputs import WriteFailed, write_atomic

FORMAT = "yogo-checkpoint"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
PICKLE_MAGIC = b"\x80"  # the legacy format starts with a pickle (protocol >= 2)
VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint. `payload` is the whole file (optimizer state etc. for resuming);
    `source` says whether yogo or YOGO 1.0.1 wrote it."""

    path: Path
    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    payload: dict[str, Any]
    source: str  # "yogo" or "yogo-1.0.1"

    def build_model(self) -> YOGO:
        """The network with these weights (train mode, on CPU)."""
        model = build_model(self.model_config)
        model.load_state_dict(self.state_dict)
        return model


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` (plain data) atomically: temp file in the same folder, fsync, rename,
    fsync the folder. A crash leaves the previous file or the new one, never half of one; a
    failed write (disk full, quota) raises RunError and leaves the previous file as it was."""
    buffer = io.BytesIO()  # serialised first: torch.save hides a full disk's OSError
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    try:
        write_atomic(path, buffer.getvalue(), durable=True)
    except WriteFailed as e:
        raise RunError(
            f"could not write {display_path(path)}: {e.reason}. "
            "Free space (or raise the quota) and resume with --resume auto."
        ) from e


def checkpoint_payload(model: YOGO, **extra: Any) -> dict[str, Any]:
    """The standard payload: the model's description and weights (on CPU), plus `extra`
    (config, epoch, optimizer state, ...)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"model": model.config.to_dict(), "state_dict": state, **extra}


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a yogo or YOGO 1.0.1 checkpoint safely; every failure is a UserError."""
    require_checkpoint_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler refuses objects it would have to import ("GLOBAL"): the
        # file names code to run. Any other refusal is a damaged file, not an attack.
        named = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line.upper()]
        if not named:
            raise _damaged(path, e) from None
        raise UserError(
            f"refused: the file contains objects that could run code when loaded ({named[0]})",
            path=path,
            fix="load only checkpoints written by yogo or YOGO; re-save trusted files as plain "
            "tensors and numbers",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, LookupError, ValueError) as e:
        # What torch.load raises on a truncated or damaged file varies with the damage.
        raise _damaged(path, e) from None
    if not isinstance(payload, dict):
        raise UserError("is not a yogo or YOGO checkpoint (not a dictionary)", path=path)
    if payload.get("format") == FORMAT:
        read = _from_yogo
    elif "model_state_dict" in payload and "model_version" in payload:
        read = _from_yogo_v1
    else:
        raise UserError("is not a yogo or YOGO checkpoint (unknown layout)", path=path)
    try:
        checkpoint = read(path, payload)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise _inconsistent(path, f"{type(e).__name__}: {e}") from None
    _require_consistent(checkpoint)
    return checkpoint


def _inconsistent(path: Path, what: str) -> UserError:
    return UserError(
        f"is a damaged or hand-made checkpoint ({what})",
        path=path,
        fix="use a best.pth or last.pth that yogo train (or YOGO) wrote",
    )


def _require_consistent(checkpoint: Checkpoint) -> None:
    """The model description is one a network can have, and the weights fit it."""
    config, path = checkpoint.model_config, checkpoint.path
    if min(config.image_hw) < MIN_IMAGE_SIDE:
        raise _inconsistent(path, f"image_hw {config.image_hw[0]} x {config.image_hw[1]}")
    if config.channels < 1:
        raise _inconsistent(path, f"{config.channels} channels")
    if config.bit_depth not in (8, 16):
        raise _inconsistent(path, f"bit_depth {config.bit_depth}")
    for stats in (config.input_mean, config.input_std):
        if stats is not None and len(stats) != config.channels:
            raise _inconsistent(path, f"{len(stats)} normalisation values for {config.channels}")
    if config.input_std is not None and not all(s > 0 for s in config.input_std):
        raise _inconsistent(path, f"input_std {list(config.input_std)}")
    if not config.class_names or len(set(config.class_names)) != len(config.class_names):
        raise _inconsistent(path, f"class names {list(config.class_names)}")
    anchors = (config.anchor_w, config.anchor_h)
    if not all(math.isfinite(a) and a > 0 for a in anchors):
        raise _inconsistent(path, f"anchor {anchors[0]:g} x {anchors[1]:g}")
    if config.model_name not in MODELS:
        raise _inconsistent(path, f"unknown model '{config.model_name}'")
    expected = build_model(config).state_dict()
    state = checkpoint.state_dict
    if not isinstance(state, dict) or set(state) != set(expected):
        raise _inconsistent(path, "its weights are not the network's")
    for name, tensor in expected.items():
        if not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape:
            raise _inconsistent(
                path,
                f"weights '{name}' of shape {tuple(getattr(state[name], 'shape', ()))} where "
                f"the network it describes ({len(config.class_names)} classes) has "
                f"{tuple(tensor.shape)}",
            )


def _damaged(path: Path, error: Exception) -> UserError:
    cause = str(error).splitlines()[-1].strip() if str(error).strip() else type(error).__name__
    return UserError(
        f"is not a readable checkpoint (truncated or damaged: {cause[:200]})",
        path=path,
        fix="copy the file again; a run folder also keeps last.pth and best.pth",
    )


def is_torch_file(path: Path) -> bool:
    """Whether `path` starts like a file torch.save writes (a zip archive, or the legacy
    format's pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError:
        return False
    return head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC)


def require_checkpoint_file(path: Path) -> None:
    """Say what `path` is when it is not a checkpoint, before torch.load guesses."""
    if path.is_dir():
        found = [path / name for name in ("best.pth", "last.pth") if (path / name).is_file()]
        if found:
            raise UserError(
                "is a run folder, not a checkpoint",
                path=path,
                fix=f"give {' or '.join(display_path(p) for p in found)} (best.pth: the best "
                "validation; last.pth: the latest epoch)",
            )
        raise UserError("is a folder, not a checkpoint", path=path, fix="give a .pth file")
    if not path.is_file():
        raise UserError("checkpoint file does not exist", path=path, fix="check the path")
    if is_torch_file(path):
        return
    with open(path, "rb") as f:
        head = f.read(4096)
    raise UserError(
        f"is not a checkpoint: {_describe(path, head)}",
        path=path,
        fix="give a .pth file written by yogo train or YOGO",
    )


def _describe(path: Path, head: bytes) -> str:
    if not head:
        return "the file is empty"
    if path.suffix.lower() == ".onnx":
        return "it is an ONNX model (yogo infer runs it; test and export need the .pth)"
    try:
        text = head.decode()
    except UnicodeDecodeError:
        return "not a file PyTorch writes"
    if "\0" in text:
        return "not a file PyTorch writes"
    if "yogo_version" in text and "config:" in text:
        return "it is a run's config.yaml (best.pth and last.pth are beside it)"
    if any(key in text for key in ("class_names", "dataset_paths", "dataset_split_fractions")):
        return "it is a dataset definition (YAML)"
    return "it is a text file"


def _from_yogo(path: Path, payload: dict[str, Any]) -> Checkpoint:
    if payload.get("version", 0) > VERSION:
        raise UserError(
            f"was written by a newer yogo (checkpoint version {payload['version']})",
            path=path,
            fix="upgrade yogo",
        )
    config = ModelConfig.from_dict(payload["model"])
    return Checkpoint(path, config, payload["state_dict"], payload, "yogo")


def _from_yogo_v1(path: Path, payload: dict[str, Any]) -> Checkpoint:
    """Map a YOGO 1.0.1 file: settings live in model buffers, weights under `model.K.M`."""
    state = payload["model_state_dict"]
    for name in ("height_multiplier", "width_multiplier"):
        if name in state and float(state[name]) != 1.0:
            raise UserError(
                f"YOGO 1.0.1 checkpoint of a height-cropped model ({name} = "
                f"{float(state[name]):g}) is not supported",
                path=path,
            )
    config = ModelConfig(
        model_name=str(payload["model_version"]),
        class_names=tuple(str(c) for c in payload["classes"]),
        channels=3 if bool(state["is_rgb"]) else 1,
        normalize_images=bool(state["normalize_images"]),
        image_hw=(int(state["img_size"][0]), int(state["img_size"][1])),
        anchor_w=float(state["anchor_w"]),
        anchor_h=float(state["anchor_h"]),
    )
    weights = {k: v for k, v in state.items() if k.startswith("model.")}
    weights["anchors"] = torch.tensor([config.anchor_w, config.anchor_h], dtype=torch.float32)
    return Checkpoint(path, config, weights, payload, "yogo-1.0.1")


def load_model(path: str | os.PathLike[str]) -> tuple[YOGO, ModelConfig]:
    """`yogo.load_model(path)`: the model in eval mode on CPU, and its description."""
    checkpoint = load_checkpoint(Path(path))
    model = checkpoint.build_model()
    model.eval()
    return model, checkpoint.model_config
