"""Shared helpers: tiny real datasets on disk and an in-process CLI runner; which tests are
slow.

`pytest -m "not slow"` is the fast loop (under a minute): it leaves out every test that trains
a model, exports one or starts processes. Those are marked `slow` where they are written, or
here by where they live (distributed/, faults/, slurm/) and by the fixtures they use (a trained
run); CI runs them all."""

from __future__ import annotations

import os

# Before torch is imported (it reads this once): the tests train tiny models on tiny frames,
# where one thread per process is faster than two (13% on tests/faults/test_stops.py here),
# and the processes a test starts inherit it, so every side of a comparison agrees.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib
import io
import socket
import subprocess
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yogo import outputs
from yogo.cli import main
from yogo.model.network import YOGO, ModelConfig, build_model


def model_config(
    name: str = "base_model",
    num_classes: int = 3,
    channels: int = 1,
    normalize_images: bool = True,
    anchor_w: float = 0.05,
    anchor_h: float = 0.05,
    image_hw: tuple[int, int] = (64, 96),
) -> ModelConfig:
    """A model description with classes c0, c1, ... (the arguments tests vary first)."""
    class_names = tuple(f"c{i}" for i in range(num_classes))
    return ModelConfig(name, class_names, channels, normalize_images, image_hw, anchor_w, anchor_h)


def make_model(*args: object, **kwargs: object) -> YOGO:
    """A freshly initialised network: `model_config`'s arguments."""
    return build_model(model_config(*args, **kwargs))  # type: ignore[arg-type]


def free_port() -> int:
    """A TCP port nobody listens on now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_image(path: Path, hw: tuple[int, int] = (32, 40), mode: str = "L") -> Path:
    """A real image file of the given size; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    if mode == "I;16":
        pixels = rng.integers(0, 65535, hw, dtype=np.uint16)
        Image.fromarray(pixels).save(path)
    elif mode == "RGB":
        Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(path)
    else:
        Image.fromarray(rng.integers(0, 255, hw, dtype=np.uint8)).save(path)
    return path


def make_folder_pair(
    root: Path,
    labels: dict[str, str],
    hw: tuple[int, int] = (32, 40),
    suffix: str = ".png",
    images: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """`root/images` and `root/labels` with one label file per entry of `labels` (stem ->
    text) and an image for each stem in `images` (default: every label stem)."""
    image_dir, label_dir = root / "images", root / "labels"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        (label_dir / f"{stem}.txt").write_text(text)
    for stem in labels if images is None else images:
        write_image(image_dir / f"{stem}{suffix}", hw)
    return image_dir, label_dir


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def simple_ddf(root: Path, n: int = 10, fractions: str = "", classes: str = "[a, b]") -> Path:
    """A DDF at `root/ddf.yml` over `n` samples with one object each."""
    make_folder_pair(root / "set", {f"s{i:03d}": "0 0.5 0.5 0.2 0.2\n" for i in range(n)})
    return write_yaml(
        root / "ddf.yml",
        f"""
        class_names: {classes}
        {fractions}
        dataset_paths:
          one:
            image_path: set/images
            label_path: set/labels
        """,
    )


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 4 MiB file system (tmpfs), so writes fail with ENOSPC."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write in: mode 0555, or for root (which ignores modes) the
    immutable attribute."""
    folder = tmp_path / "read-only"
    folder.mkdir(exist_ok=True)  # unfinished_run may have filled it first
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("root here, and chattr +i is not available: no read-only folder")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture(autouse=True)
def tests_plan_their_files(tmp_path: Path):
    """A test may write its own files (fixtures, checkpoints) anywhere in its tmp_path;
    commands run through `run_cli` get no such plan: they must plan every file they write
    (yogo.outputs), or fail with UnplannedOutput."""
    outputs.plan_folder(tmp_path, replace=True)
    yield
    outputs.forget_plans()


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    """Run `yogo ARGS...` in this process, with only the plans the command makes; returns
    exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        outputs.forget_plans()
        try:
            with pytest.raises(SystemExit) as exit_info:
                main([str(a) for a in args])
        finally:
            outputs.forget_plans()
            outputs.plan_folder(tmp_path, replace=True)
        captured = capsys.readouterr()
        code = exit_info.value.code
        return CliResult(code if isinstance(code, int) else 1, captured.out, captured.err)

    return run


@dataclass(frozen=True)
class TrainedRun:
    ddf: Path
    run: Path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """A small model trained by `yogo.train` on synthetic frames with val and test splits
    (shared by the export and infer tests; ~20 s on 2 cores)."""
    import yogo
    from yogo.data.synth import write_dataset

    root = tmp_path_factory.mktemp("trained")
    ddf = write_dataset(root / "data", 48, (96, 128), seed=5, split_fractions=(0.6, 0.2, 0.2))
    run = yogo.train(
        yogo.TrainConfig(
            ddf=str(ddf),
            epochs=12,
            batch_size=4,
            num_workers=0,
            wandb=False,
            output_dir=str(root / "runs"),
            name="small",
        )
    )
    return TrainedRun(ddf, run)


def pycocotools_ap(detections: list, truths: list) -> np.ndarray:
    """Per-class AP at each IoU threshold from pycocotools, with no detection cap."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    scale = 1000.0  # pixel-like coordinates
    images, annotations, results = [], [], []
    for i, (d, t) in enumerate(zip(detections, truths, strict=True)):
        images.append({"id": i, "width": 1000, "height": 1000})
        for c, x0, y0, x1, y1 in t.numpy():
            w, h = (x1 - x0) * scale, (y1 - y0) * scale
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": [x0 * scale, y0 * scale, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for x0, y0, x1, y1, obj, prob, c in d.numpy():
            results.append(
                {
                    "image_id": i,
                    "category_id": int(c),
                    "score": float(obj * prob),
                    "bbox": [x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale],
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in range(3)],
        }
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results) if results else COCO(), "bbox")
        evaluation.params.maxDets = [10_000]
        evaluation.params.areaRng = [[0, 1e10]]
        evaluation.params.areaRngLbl = ["all"]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, :, 0, 0]  # (T, R, K)
    ap = np.where((precision > -1).any(axis=1), precision.clip(0).mean(axis=1), np.nan)
    return ap  # (T, K)


# Tests under these folders start several processes or stop them on purpose.
PROCESS_FOLDERS = ("distributed", "faults", "slurm")
# Fixtures that train a model (once per session, but a test that needs one is not fast).
TRAINING_FIXTURES = {"trained_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(here).parts[0]
        uses = set(getattr(item, "fixturenames", ()))
        if folder in PROCESS_FOLDERS or uses & TRAINING_FIXTURES or item.get_closest_marker("dist"):
            item.add_marker(pytest.mark.slow)
