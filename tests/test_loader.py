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


def test_balanced_sampler_draws_rare_frames_more_often_and_resumes_exactly() -> None:
    import numpy as np
    import torch

    from yogo.data.loader import frame_weights
    from yogo.data.scan import LabelledSample

    def frame(*classes: int) -> LabelledSample:
        boxes = np.array([[c, 0.5, 0.5, 0.1, 0.1] for c in classes], dtype=np.float32)
        boxes = boxes.reshape(-1, 5)
        return LabelledSample(Path("x.png"), Path("x.txt"), boxes, np.arange(len(boxes)), 8, 8, 1)

    # 20 common objects per frame in 9 frames; one frame also holds the rare class's 2 objects.
    train = tuple([frame(*[0] * 20) for _ in range(9)] + [frame(*[0] * 20, 1, 1)])
    weights = frame_weights(train, 2)
    # balanced weight of class 1: 202 / (2 * 2) = 50.5; its frames weigh its square root
    assert weights[:9].tolist() == [1.0] * 9 and float(weights[9]) == pytest.approx(50.5**0.5)
    sampler = EpochSampler(10, 0, 1, seed=1, weights=weights)
    drawn = []
    for epoch in range(50):
        sampler.set_epoch(epoch)
        drawn += [token % 10 for token in sampler]
    assert len(drawn) == 500 and drawn.count(9) > 4 * 500 / 10  # ~43% of draws, not 10%
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.set_epoch(3, skip=4)
    assert list(sampler) == whole[4:]
    assert torch.equal(frame_weights((), 2), torch.ones(0))


def test_hard_frames_fill_their_share_of_every_batch_on_every_rank_and_resume() -> None:
    hard = [3, 7, 11]
    for world in (1, 2):
        for rank in range(world):
            sampler = EpochSampler(24, rank, world, seed=2, hard_share=0.5, batch_size=4)
            sampler.set_epoch(5, hard=hard)
            mine = sampler.indices()
            assert len(mine) == 24 // world
            for start in range(0, len(mine), 4):  # 2 of each batch of 4 from the pool
                assert all(i in hard for i in mine[start : start + 2]), mine
            sampler.set_epoch(5, skip=6, hard=hard)
            assert sampler.indices() == mine[6:]
    plain = EpochSampler(24, 0, 1, seed=2, hard_share=0.5, batch_size=4)
    plain.set_epoch(5)  # no pool yet (the first epoch): a plain permutation
    assert sorted(plain.indices()) == list(range(24))
