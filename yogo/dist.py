"""Where a process runs: device, rank and process group. The only module that reads RANK,
LOCAL_RANK, WORLD_SIZE or SLURM_* and calls init_process_group.

    ctx = setup_process("cuda", timeout_s=600)   # world size 1 without a launcher
    if ctx.is_main: ...                    # rank 0 speaks and writes
    merged = ctx.gather(local_list)        # every rank gets every rank's objects
    teardown(ctx)

Launchers: torchrun (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) or srun with one task per
GPU (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS; the master is the first node of the job). The
backend is nccl on GPUs and gloo on CPU, so the same code runs in CPU tests.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist

from yogo.config import Precision, ResolvedPrecision
from yogo.errors import RunError, UserError


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def maximum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over ranks (in place)."""
        if self.distributed:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
        return tensor

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (in place, returned for convenience)."""
        if self.distributed:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        return tensor


def slurm_job_id() -> str | None:
    """The SLURM job this process belongs to (the array job and task for job arrays)."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def slurm_restart() -> bool:
    """True in a SLURM job that runs again after a requeue (SLURM_RESTART_COUNT > 0)."""
    return os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")


def launcher_env() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's or srun's environment, else (0, 0, 1)."""
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"])
    return 0, 0, 1


def setup_process(device_name: str | None, timeout_s: float = 1800) -> DistContext:
    """Join the process group the launcher set up (if any) and pick this process's device.
    A collective that waits longer than `timeout_s` (a dead or hung rank) raises."""
    rank, local_rank, world_size = launcher_env()
    device = resolve_device(device_name, local_rank)
    if world_size > 1:
        if "MASTER_ADDR" not in os.environ:  # srun: the first node of the job is the master
            os.environ["MASTER_ADDR"] = _first_slurm_host()
            os.environ.setdefault(
                "MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", 0)) % 20000)
            )
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world_size))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
        )
    return DistContext(rank, local_rank, world_size, device)


# How gloo and nccl word a peer that died or stopped answering. Whole phrases, not single
# words: an unrelated error that mentions "timeout" or "connection" is not a lost rank.
LOST_PEER = re.compile(
    "|".join(
        [
            r"connection (reset|closed|refused) by peer",  # gloo: the peer process died
            r"timed out waiting \d+ ?ms for (send|recv)",  # gloo: the peer hangs
            r"application timeout caused pair closure",  # gloo: --dist-timeout passed
            r"gloo/transport/tcp",  # gloo's transport layer, any failure
            r"watchdog caught collective operation timeout",  # nccl: --dist-timeout passed
            r"nccl communicator was aborted",  # nccl: a peer failed
        ]
    ),
    re.I,
)


def lost_contact(ctx: DistContext, error: BaseException, timeout_s: float) -> RunError | None:
    """The message for a collective that failed because another rank died (connection reset)
    or hung (timeout); None for any other error."""
    if not ctx.distributed or not isinstance(error, RuntimeError):
        return None
    text = str(error)
    if not isinstance(error, torch_dist.DistError) and not LOST_PEER.search(text):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return RunError(
        f"rank {ctx.rank} lost contact with the other processes: one died, or did not answer "
        f"within --dist-timeout {timeout_s:g} s ({first[:300]}). Their logs say why; last.pth "
        "holds the last saved position (--resume auto continues from it)."
    )


def teardown(ctx: DistContext) -> None:
    """End the process group for good: its worker threads finish and are joined here.

    destroy_process_group only drops the group's name; the group itself lives on while a DDP
    model (or a traceback's frames holding one) refers to it, and a gloo worker thread still
    releasing a finished collective's tensors then needs the GIL while the interpreter shuts
    down, which aborts the process (SIGABRT, "terminate called without an active exception").
    So the frames of an exception in flight let go of their objects first, then the group's
    last reference goes, and its destructor waits for its threads."""
    if not (ctx.distributed and torch_dist.is_initialized()):
        return
    error = sys.exc_info()[1]
    while error is not None:  # the error, and the one it was raised from or during
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__
    gc.collect()
    torch_dist.destroy_process_group()
    gc.collect()


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """`--device` in the user's words; None picks this rank's GPU when CUDA works, else cpu
    (a SLURM allocation with GPUs but no CUDA build falls back to cpu and gloo)."""
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device '{name}' is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here", fix="use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    if name == "cuda":  # no index given: this rank's GPU
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware (a CUDA GPU from Ampere on; a CPU with
    AVX-512 BF16 or AMX), where bf16 autocast is much faster than fp32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def resolve_precision(precision: Precision, device: torch.device) -> ResolvedPrecision:
    """`--precision auto` made concrete for `device`: bf16 where native, else 32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "32"
    return precision


def reduced_precision(device: torch.device) -> ResolvedPrecision:
    """What `--half` means on `device`: fp16 on a GPU; bf16 on a CPU, which has no fast fp16
    convolutions."""
    return "fp16" if device.type == "cuda" else "bf16"


def _first_slurm_host() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodes:
        return "127.0.0.1"
    hosts = subprocess.run(
        ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
    ).stdout.split()
    return hosts[0]
