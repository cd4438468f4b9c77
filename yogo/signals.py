"""Stopping cleanly: SIGTERM, SIGUSR1 and Ctrl-C (SIGINT) only set a flag; ranks agree on it at
step boundaries.

    with StopRequest.install() as stop:
    ...before an optimizer step:
    signum, bad_rank = stop.agree(ctx, nonfinite)   # every rank gets the same answers
    if bad_rank: raise RunError(...)                # no rank steps with a NaN loss
    ...after the step:
    if signum: save last.pth, then raise Interrupted(signum)

A signal handler that saves checkpoints itself can run in the middle of a step, or on one rank
only; setting a flag and deciding together at a boundary avoids both.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from types import FrameType
from typing import Any

import torch

from yogo.dist import DistContext

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequest:
    """The stop signals' handler while a `with StopRequest.install() as stop:` block runs;
    the previous handlers are back after it (`yogo.train` called from Python leaves Ctrl-C
    as it found it)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    @classmethod
    def install(cls) -> StopRequest:
        request = cls()
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                request._previous[sig] = signal.signal(sig, request._handle)
        return request

    def __enter__(self) -> StopRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            if self.signum:  # Ctrl-C again: the user will not wait for the save
                logging.getLogger("yogo").warning(
                    "stopped by Ctrl-C again, without saving; --resume auto continues from "
                    "the last save"
                )
                raise KeyboardInterrupt  # typer exits 130
            logging.getLogger("yogo").warning(
                "Ctrl-C: saving at the next optimizer step, then stopping (Ctrl-C again: "
                "stop now, losing the steps since the last save)"
            )
        self.signum = signum

    def agree(self, ctx: DistContext, nonfinite: torch.Tensor) -> tuple[int, int]:
        """The decision at an optimizer step, one small collective for two questions, with
        the same answers on every rank: the stop signal any rank has received (0: none), and
        1 + the highest rank whose loss was not finite (0: all finite). Act on the returned
        signal, not on `self.signum`: a signal arriving after the collective is seen by one
        rank only, and is agreed on at the next step."""
        flags = torch.stack(
            [
                torch.tensor(float(self.signum), device=nonfinite.device),
                nonfinite.float() * (ctx.rank + 1),
            ]
        )
        signum, bad_rank = ctx.maximum(flags).tolist()
        return int(signum), int(bad_rank)


def requeue_slurm_job() -> bool:
    """`scontrol requeue $SLURM_JOB_ID` when running inside SLURM; True when it was done."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        subprocess.run(
            ["scontrol", "requeue", job], check=True, timeout=60, capture_output=True, text=True
        )
    except (OSError, subprocess.SubprocessError) as e:
        # last.pth is already saved: report and stop normally; resubmitting resumes the run.
        detail = getattr(e, "stderr", None) or str(e)
        logging.getLogger(__name__).error(f"scontrol requeue {job} failed: {detail.strip()}")
        return False
    return True
