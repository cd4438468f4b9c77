"""Loaders: batches, samplers, and worker processes that never outlive their `with` block."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from conftest import simple_ddf

from yogo.data.dataset import DetectionDataset
from yogo.data.loader import EpochSampler, Loaders, ShardSampler
from yogo.data.scan import scan_dataset
from yogo.ddf import DatasetDefinition


def dataset(tmp_path: Path) -> DetectionDataset:
    ddf = DatasetDefinition.from_yaml(simple_ddf(tmp_path, n=8))
    return DetectionDataset(scan_dataset(ddf).splits["train"], (32, 40), 1)


def test_workers_stop_when_the_block_ends_even_on_an_error(tmp_path: Path) -> None:
    """Workers ignore SIGTERM (the main process stops at a step boundary), so nothing but the
    block may stop them: an interpreter exit would otherwise wait for them forever."""
    before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="stopped mid-epoch"), Loaders() as loaders:
        loader = loaders.make(dataset(tmp_path), 2, num_workers=2)
        batch = next(iter(loader))
        assert batch.images.shape == (2, 1, 32, 40)
        assert len(set(multiprocessing.active_children()) - before) == 2
        raise RuntimeError("stopped mid-epoch")
    assert set(multiprocessing.active_children()) - before == set()


def test_shards_cover_every_sample_once_and_epochs_resume_where_they_stopped() -> None:
    shards = [ShardSampler(7, rank, 3).indices for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(7))
    sampler = EpochSampler(10, 0, 1, seed=4)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, skip=4)
    assert list(sampler) == whole[4:] and len(sampler) == 6
    assert all(token // 10 == 2 for token in whole)  # the dataset reads the epoch from it
