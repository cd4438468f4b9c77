"""The frame cache (data/cache.py): where `--cache` puts the frames, one buffer shared by
processes, no file left behind, and training that is the same with and without it."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from yogo.data.cache import FrameCache, memory_available, plan_cache
from yogo.data.dataset import DetectionDataset
from yogo.data.loader import Loaders
from yogo.data.scan import scan_dataset
from yogo.data.synth import write_dataset
from yogo.ddf import DatasetDefinition
from yogo.errors import UserError

SHAPE = (1, 8, 12)
PETA = 10**16


def test_auto_picks_ram_then_disk_then_none(tmp_path: Path) -> None:
    assert plan_cache("auto", 1000, tmp_path).mode == "ram"
    assert plan_cache("none", 1000, tmp_path).mode == "none"
    too_big_for_ram = int(0.6 * memory_available())
    disk = plan_cache("auto", too_big_for_ram, tmp_path)
    if disk.mode == "disk":  # when a disk here has room for it
        assert disk.folder is not None and "over half of" in disk.reason
    assert plan_cache("auto", PETA, tmp_path).mode == "none"
    assert plan_cache("disk", 1000, tmp_path).mode == "disk"


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_an_impossible_explicit_request_is_refused(tmp_path: Path, mode: str) -> None:
    with pytest.raises(UserError) as refused:
        plan_cache(mode, PETA, tmp_path)
    assert f"--cache {mode}" in str(refused.value) and "--cache" in (refused.value.fix or "")


def _child_reads_and_writes(handle: tuple[int, int], queue: multiprocessing.Queue) -> None:
    cache = FrameCache.open(handle, 3, SHAPE)
    got = cache.get(0)
    queue.put(None if got is None else int(got.sum()))
    cache.put(2, np.full(SHAPE, 7, np.uint8))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_one_buffer_shared_by_processes_and_no_file_left(tmp_path: Path, mode: str) -> None:
    plan = plan_cache(mode, 3 * 96, tmp_path)
    if mode == "disk":
        plan = type(plan)("disk", tmp_path, "test")
    cache = FrameCache.create(plan, 3, SHAPE)
    assert list(tmp_path.iterdir()) == []  # the disk file has no name
    assert cache.get(0) is None and cache.filled == 0
    cache.put(0, np.ones(SHAPE, np.uint8))
    spawn = multiprocessing.get_context("spawn")  # no inherited memory: opened by handle
    queue = spawn.Queue()
    child = spawn.Process(target=_child_reads_and_writes, args=(cache.handle(), queue))
    child.start()
    assert queue.get(timeout=60) == 96
    child.join(60)
    assert child.exitcode == 0
    seen = cache.get(2)
    assert seen is not None and (seen == 7).all() and cache.filled == 2


def test_a_dataset_decodes_each_frame_once(tmp_path: Path) -> None:
    ddf = DatasetDefinition.from_yaml(write_dataset(tmp_path / "d", 6, (48, 64), seed=1))
    samples = scan_dataset(ddf).splits["train"]
    plain = DetectionDataset(samples, (32, 40), 1, augment=True, seed=3)
    cached = DetectionDataset(samples, (32, 40), 1, augment=True, seed=3)
    cache = FrameCache.create(plan_cache("ram", 0, tmp_path), len(samples) + 2, (1, 32, 40))
    cached.use_cache(cache, start=2)
    token = 5 * len(samples) + 1  # epoch 5, sample 1
    want = plain[token]
    with Loaders() as loaders:  # two worker processes fill the one buffer
        loader = loaders.make(cached, 2, num_workers=2)
        assert sum(len(b.images) for b in loader) == len(samples)
    assert cache.filled == len(samples) and cache.flags[:2].tolist() == [0, 0]
    for sample in samples:
        sample.image.unlink()  # from now on, only the cache can give the pixels
    got = cached[token]
    assert isinstance(got, tuple) and isinstance(want, tuple)
    # the same frame and the same augmentation as without a cache
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.slow
def test_training_with_and_without_a_cache_gives_the_same_weights(tmp_path: Path, run_cli) -> None:
    ddf = write_dataset(tmp_path / "d", 12, (64, 96), seed=2, split_fractions=(0.75, 0.25, 0))
    flags = ["--epochs", "2", "-bs", "3", "--no-wandb", "--num-workers", "1"]
    for mode in ("none", "ram", "disk"):
        result = run_cli(
            "train", ddf, *flags, "--cache", mode, "--name", mode, "--output-dir", tmp_path / "o"
        )
        assert result.code == 0, result.err
        assert f"frame cache: {mode}" in result.err
    weights = [
        torch.load(tmp_path / "o" / mode / "last.pth", weights_only=True)["state_dict"]
        for mode in ("none", "ram", "disk")
    ]
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in other)
    assert not any(name.startswith(".yogo-frames") for name in os.listdir(tmp_path / "o" / "ram"))


def test_a_bad_cache_flag_exits_2(tmp_path: Path, run_cli) -> None:
    ddf = write_dataset(tmp_path / "d", 4, (64, 96), seed=2)
    result = run_cli("train", ddf, "--cache", "gpu", "--output-dir", tmp_path / "o")
    assert result.code == 2 and "--cache must be auto, ram, disk or none" in result.err


def test_a_pickled_cache_maps_the_same_buffer(tmp_path: Path) -> None:
    """What a loader worker started by spawn or forkserver receives."""
    import pickle

    cache = FrameCache.create(plan_cache("ram", 0, tmp_path), 2, SHAPE)
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.fd != cache.fd and copy.get(1) is None
    cache.put(1, np.full(SHAPE, 9, np.uint8))
    seen = copy.get(1)
    assert seen is not None and (seen == 9).all()
