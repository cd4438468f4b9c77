"""Averaged weights, validated, saved and exported in place of the raw weights: an
exponential moving average (`--ema`, updated after every optimizer step) or a uniform average
of the weights at the end of each of the last N epochs (`--swa-epochs N`, SWA).

    ema = WeightAverage(model)
    ...after every optimizer step:
    ema.update()
    evaluate(ema.model)

Batch-norm running statistics are averaged like the weights (as YOLOv5's EMA does), not
recomputed with a pass over the data: the averaged models are close to each other, so the
average of their statistics stays close to the statistics of their average.

The decay ramps up, decay * (1 - exp(-updates / ramp)), so early weights (far from the
optimum) fade fast. `for_run` sizes both to the run: YOLOv5's 0.9999 and 2000 steps average
over ~10,000 steps, longer than a whole short run (240 steps: the average was the raw weights);
a run of T steps averages over about its last T/10 steps.
"""

from __future__ import annotations

import copy
import math

import torch

from yogo.model.network import YOGO


class WeightAverage:
    def __init__(
        self, model: YOGO, decay: float = 0.9999, ramp: float = 2000.0, uniform: bool = False
    ) -> None:
        """`uniform`: every update weighs the same (SWA); else the ramped exponential decay."""
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp, self.uniform, self.updates = decay, ramp, uniform, 0
        # State tensors share storage with the modules (loading a state dict copies in place),
        # so the pairs are listed once, not at every optimizer step.
        pairs = list(
            zip(self.model.state_dict().values(), model.state_dict().values(), strict=True)
        )
        self._averaged = [mine for mine, _ in pairs if mine.is_floating_point()]
        self._current = [theirs for mine, theirs in pairs if mine.is_floating_point()]
        self._counters = [(mine, theirs) for mine, theirs in pairs if not mine.is_floating_point()]

    @classmethod
    def for_run(cls, model: YOGO, total_steps: int) -> WeightAverage:
        """An average over about the last tenth of a run of `total_steps` optimizer steps
        (at most YOLOv5's 10,000), its ramp a fifth of the run (at most 2000 steps)."""
        horizon = min(10_000.0, max(1.0, total_steps / 10))
        return cls(model, decay=1 - 1 / horizon, ramp=min(2000.0, max(1.0, total_steps / 5)))

    @torch.no_grad()
    def update(self) -> None:
        """After each optimizer step (EMA) or epoch (SWA) of the model it was made from."""
        self.updates += 1
        if self.uniform:  # the mean of all updates so far
            weight = 1 / self.updates
        else:
            weight = 1 - self.decay * (1 - math.exp(-self.updates / self.ramp))
        torch._foreach_lerp_(self._averaged, self._current, weight)
        for mine, theirs in self._counters:  # batch-norm counters follow the model
            mine.copy_(theirs)
