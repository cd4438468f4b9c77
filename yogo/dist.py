"""Where a process runs: the device now; ranks and process groups as distributed training lands.

device = resolve_device("cuda:1")      # or None: cuda when available, else cpu
"""

from __future__ import annotations

import torch

from yogo.errors import UserError


def resolve_device(name: str | None) -> torch.device:
    """`--device` in the user's words; None picks cuda when available, else cpu."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device '{name}' is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here", fix="use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    return device
