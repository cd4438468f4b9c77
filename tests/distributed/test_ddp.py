"""Distributed training on CPU with real processes (gloo): torchrun and torch.multiprocessing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import free_port, make_model

from yogo.data.synth import write_dataset

pytestmark = pytest.mark.dist


def test_gradients_are_all_reduced_once_per_optimizer_step() -> None:
    """With --grad-accum, only the micro-batch that ends a step synchronises gradients."""
    import torch.distributed as torch_dist

    from yogo.training.loop import gradient_sync

    store = torch_dist.TCPStore("127.0.0.1", free_port(), 1, is_master=True)
    torch_dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        net = torch.nn.parallel.DistributedDataParallel(make_model("quarter_filters", 2))
        with gradient_sync(net, stepping=False):
            assert net.require_backward_grad_sync is False
        with gradient_sync(net, stepping=True):
            assert net.require_backward_grad_sync is True
        plain = make_model("quarter_filters", 2)
        with gradient_sync(plain, stepping=False):  # one process: nothing to synchronise
            pass
    finally:
        torch_dist.destroy_process_group()


def _sharded_validation(rank: int, world: int, port: int, ddf: str, out: str) -> None:
    """One rank of `validate`; rank 0 writes the merged report."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    from yogo.data.dataset import DetectionDataset
    from yogo.data.loader import Loaders, ShardSampler
    from yogo.data.scan import scan_dataset
    from yogo.ddf import DatasetDefinition
    from yogo.dist import setup_process, teardown
    from yogo.evaluation.evaluate import evaluate_sharded
    from yogo.model.loss import LossSettings, YOGOLoss

    ctx = setup_process("cpu", timeout_s=60)
    torch.manual_seed(0)
    model = make_model("quarter_filters", 3, anchor_w=0.06, anchor_h=0.08)
    ddf = DatasetDefinition.from_yaml(ddf)
    samples = scan_dataset(ddf).splits["val"]
    dataset = DetectionDataset(samples, (64, 96), 1)
    shard = ShardSampler(len(dataset), ctx.rank, ctx.world_size)
    loader = Loaders().make(dataset, 1, 0, sampler=shard)  # no workers to stop
    metrics, loss = evaluate_sharded(
        ctx, model, loader, shard, ddf.class_names, loss_fn=YOGOLoss(LossSettings())
    )
    if ctx.is_main:
        Path(out).write_text(json.dumps({"report": metrics.compute(), "loss": loss}))
    teardown(ctx)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    return write_dataset(root / "data", 12, (64, 96), seed=3, split_fractions=(0.5, 0.5, 0.0))


def test_sharded_validation_equals_single_process(data: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    with mock.patch.dict(os.environ):  # one process: this one (no process group)
        _sharded_validation(0, 1, free_port(), str(data), str(tmp_path / "1.json"))
    mp.spawn(
        _sharded_validation,
        args=(2, free_port(), str(data), str(tmp_path / "2.json")),
        nprocs=2,
        join=True,
    )
    one = json.loads((tmp_path / "1.json").read_text())
    two = json.loads((tmp_path / "2.json").read_text())
    assert one["report"]["num_images"] == two["report"]["num_images"] == 6
    assert one == two  # every metric, the confusion matrix and the loss, exactly


TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_args(data: Path, out: Path, name: str) -> list[str]:
    """`-m yogo train` for 2 epochs at batch 2, no workers, no W&B (after a launcher)."""
    settings = ["--epochs", "2", "-bs", "2", "--num-workers", "0", "--no-wandb"]
    return ["-m", "yogo", "train", str(data), *settings, "--output-dir", str(out), "--name", name]


@pytest.mark.slow
def test_one_node_and_two_nodes_train_the_same_run(data: Path, tmp_path: Path) -> None:
    """torchrun on one node with 2 processes, and multi-node as on a cluster (one torchrun
    agent per node, c10d rendezvous) on loopback, side by side: one run each, exactly equal.
    (Loader workers ignore SIGTERM and must be gone when train() returns, or the
    interpreter's exit would wait forever: tests/distributed/test_resume.py's runs use one.)"""
    endpoint = f"127.0.0.1:{free_port()}"
    launcher = [*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    launcher += ["--rdzv-endpoint", endpoint, "--rdzv-id", "yogo-test"]
    agents = [
        subprocess.Popen(
            [*launcher, "--node-rank", str(node), *train_args(data, tmp_path, "nodes")],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in range(2)
    ]
    done = subprocess.run(
        [*TORCHRUN, "--standalone", "--nproc-per-node", "2", *train_args(data, tmp_path, "one")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for agent in agents:
        output = agent.communicate(timeout=300)[0]
        assert agent.returncode == 0, output[-3000:]

    run = tmp_path / "one"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert "world_size: 2" in (run / "config.yaml").read_text()
    assert done.stdout.count("epoch 1:") + done.stderr.count("epoch 1:") == 1  # rank 0 speaks
    # one frame cache for the node: rank 1 opened rank 0's (a failure would say "own copy")
    assert "frame cache: ram" in done.stderr and "own copy" not in done.stderr
    # 6 train frames over 2 ranks at batch 2: 2 optimizer steps per epoch, on both ranks
    a = torch.load(tmp_path / "nodes" / "last.pth", weights_only=True)
    b = torch.load(run / "last.pth", weights_only=True)
    assert a["finished"] and b["finished"] and a["step"] == b["step"] == 4
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert "world_size: 2" in (tmp_path / "nodes" / "config.yaml").read_text()
