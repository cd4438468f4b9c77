"""An exponential moving average of the weights (`--ema`): validated, saved and exported in
place of the raw weights.

    ema = WeightAverage(model)
    ...after every optimizer step:
    ema.update(model)
    evaluate(ema.model)

The decay ramps up, decay * (1 - exp(-updates / 2000)), so early weights (far from the
optimum) fade fast and short runs get almost the raw weights.
"""

from __future__ import annotations

import copy
import math

import torch

from yogo.model import YOGO


class WeightAverage:
    def __init__(self, model: YOGO, decay: float = 0.9999, ramp: float = 2000.0) -> None:
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp, self.updates = decay, ramp, 0

    @torch.no_grad()
    def update(self, model: YOGO) -> None:
        self.updates += 1
        weight = 1 - self.decay * (1 - math.exp(-self.updates / self.ramp))
        averaged, current = [], []
        for mine, theirs in zip(
            self.model.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.detach())
            else:  # batch-norm counters follow the model
                mine.copy_(theirs)
        torch._foreach_lerp_(averaged, current, weight)
