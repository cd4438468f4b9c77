"""On a CUDA GPU: real training steps in fp16 (with the gradient scaler) and in bf16, a stop
and resume that ends on the same bits, `--compile`, and an exported .onnx run by onnxruntime's
CUDA provider as PyTorch runs the .pth. Every test here is marked `cuda` and skips without a
GPU; `bash benchmarks/gpu_check.sh` runs them on one (docs/benchmarks.md)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# cuBLAS reads this once, at its first use: with it, its matrix products are deterministic
# (the resume test). Set on import, before any test here touches the GPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import yogo.training.loop
from yogo.data.synth import synthetic_frames, write_dataset

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch.cuda.is_available() is False here)",
    ),
]

# 8 training frames in batches of 2: 4 optimizer steps an epoch.
TRAIN = ["-bs", "2", "--no-wandb", "--num-workers", "0", "--seed", "3", "--device", "cuda"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cuda")
    return write_dataset(root / "data", 12, (64, 96), seed=2, split_fractions=(0.67, 0.33, 0.0))


def spy_on_steps(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Wrap yogo.training.loop.optimizer_step (the real one still runs every step): what the
    run looked like at its first step (weights, device, scaler) and how many steps it took."""
    original: Callable[..., Any] = yogo.training.loop.optimizer_step
    seen: dict[str, Any] = {"steps": 0}

    def wrapped(run: Any, *args: Any, **kwargs: Any) -> Any:
        if seen["steps"] == 0:
            params = dict(run.model.named_parameters())
            seen["before"] = {k: v.detach().cpu().clone() for k, v in params.items()}
            seen["device"] = next(iter(params.values())).device
            seen["scaler"] = run.scaler.is_enabled()
        seen["steps"] += 1
        return original(run, *args, **kwargs)

    monkeypatch.setattr(yogo.training.loop, "optimizer_step", wrapped)
    return seen


def losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def last(run: Path) -> dict[str, Any]:
    payload: dict[str, Any] = torch.load(run / "last.pth", weights_only=True)
    assert payload["finished"] is True
    return payload


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_training_steps_in_reduced_precision_change_the_weights(
    data: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    """fp16 runs with the gradient scaler (it skips the steps whose gradients overflow, so a
    scale that never settles would leave the weights where they started: 12 steps leave it
    room to halve); bf16 without one."""
    seen = spy_on_steps(monkeypatch)
    args = ["train", data, *TRAIN, "--epochs", "3", "--precision", precision]
    result = run_cli(*args, "--output-dir", tmp_path, "--name", "r")
    assert result.code == 0, result.err
    assert seen["steps"] == 12 and seen["device"].type == "cuda"
    assert seen["scaler"] == (precision == "fp16")
    assert all(math.isfinite(loss) for loss in losses(tmp_path / "r"))
    payload = last(tmp_path / "r")
    assert payload["config"]["precision"] == precision
    after = payload["state_dict"]
    unchanged = [k for k, v in seen["before"].items() if torch.equal(v, after[k].cpu())]
    assert unchanged == [], f"{len(unchanged)} of {len(after)} weights never moved: {unchanged}"
    scaler = payload["resume"]["scaler"]
    if precision == "fp16":
        assert 0 < scaler["scale"] < float("inf") and scaler["scale"] == int(scaler["scale"])
    else:
        assert scaler == {}  # a disabled scaler has no state


@pytest.fixture
def deterministic() -> Iterator[list[warnings.WarningMessage]]:
    """torch.use_deterministic_algorithms for one test; the warnings it records, among them
    those of any operation with no deterministic version on this GPU (named if the weights
    then differ)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_stop_halfway_and_a_resume_end_on_the_same_bits(
    data: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch, deterministic
) -> None:
    """12 steps straight, against 6 steps, SIGTERM, a resume in a new call for the other 6
    (mid epoch 2: the loader's position, the optimizer, the schedule, fp16's scaler, every
    random state, all on the GPU)."""
    args = ["train", data, *TRAIN, "--epochs", "3", "--precision", "fp16", "--output-dir"]
    plain = run_cli(*args, tmp_path, "--name", "plain")
    assert plain.code == 0, plain.err
    original = yogo.training.loop.optimizer_step
    calls = [0]

    def stop_at_step_6(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # acted on after this step
        return original(*a, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(yogo.training.loop, "optimizer_step", stop_at_step_6)
        stopped = run_cli(*args, tmp_path, "--name", "r")
    assert stopped.code == 143, stopped.err
    position = torch.load(tmp_path / "r" / "last.pth", weights_only=True)
    assert position["finished"] is False and position["step"] == 6
    resumed = run_cli(*args, tmp_path, "--name", "r", "--resume", "auto")
    assert resumed.code == 0, resumed.err
    want, got = last(tmp_path / "plain")["state_dict"], last(tmp_path / "r")["state_dict"]
    differ = [k for k in want if not torch.equal(want[k], got[k])]
    ops = {str(w.message) for w in deterministic if "deterministic" in str(w.message)}
    assert differ == [], f"weights differ: {differ}; operations without a deterministic one: {ops}"


def test_compile_trains_on_the_gpu(data: Path, tmp_path: Path, run_cli, monkeypatch) -> None:
    seen = spy_on_steps(monkeypatch)
    args = ["train", data, *TRAIN, "--epochs", "1", "--compile", "--output-dir", tmp_path]
    result = run_cli(*args, "--name", "c")
    assert result.code == 0, result.err
    assert "torch.compile: " in result.err and seen["device"].type == "cuda"
    assert seen["steps"] == 4 and all(math.isfinite(x) for x in losses(tmp_path / "c"))
    payload = last(tmp_path / "c")
    assert payload["config"]["compile"] is True
    after = payload["state_dict"]  # saved under the model's own names, not the compiled one's
    assert set(seen["before"]) <= set(after)
    assert [k for k, v in seen["before"].items() if torch.equal(v, after[k].cpu())] == []


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)",
)
def test_an_exported_onnx_runs_on_the_cuda_provider_like_pytorch(
    trained_run, tmp_path: Path, run_cli
) -> None:
    from yogo.deploy.predictor import load_predictor

    pth = tmp_path / "best.pth"
    shutil.copy(trained_run.run / "best.pth", pth)
    exported = run_cli("export", pth)
    assert exported.code == 0, exported.err
    onnx = load_predictor(tmp_path / "best.onnx", "cuda")
    torch_gpu = load_predictor(pth, "cuda")
    assert onnx.kind == "onnxruntime on CUDA" and torch_gpu.kind == "pytorch on cuda:0"
    frames = synthetic_frames(4, onnx.image_hw, onnx.channels, seed=9)
    # Both may run their convolutions in TF32 (10 bits of mantissa, against fp32's 23), and
    # w, h are exp() of the raw outputs: agreement to 1%, not to fp32's last bits.
    np.testing.assert_allclose(onnx.run(frames), torch_gpu.run(frames), rtol=1e-2, atol=2e-3)

    val = tmp_path / "frames"
    val.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame[0]).save(val / f"f{i}.png")
    result = run_cli(
        "infer", tmp_path / "best.onnx", "--path-to-images", val, "--output-dir",
        tmp_path / "out", "--device", "cuda",
    )  # fmt: skip
    assert result.code == 0, result.err
    document = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert document["model"] == "onnxruntime on CUDA"
