from __future__ import annotations

import math

import pytest
import torch
from conftest import make_model

from yogo.training.ema import WeightAverage


def test_average_follows_the_ramped_decay() -> None:
    model = make_model("base_model", 2, 1, True, 0.1, 0.1)
    ema = WeightAverage(model, decay=0.9, ramp=1.0)
    start = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    weight = 1 - 0.9 * (1 - math.exp(-1.0))  # share of the new weights at update 1
    for name, value in ema.model.state_dict().items():
        if value.is_floating_point() and name in dict(model.named_parameters()):
            assert torch.allclose(value, start[name] + weight, atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_integer_buffers_are_copied() -> None:
    model = make_model("base_model", 2, 1, True, 0.1, 0.1)
    ema = WeightAverage(model)
    model.train()
    model(torch.zeros(2, 1, 64, 64))  # bumps num_batches_tracked
    ema.update()
    for (name, mine), theirs in zip(
        ema.model.state_dict().items(), model.state_dict().values(), strict=True
    ):
        if not mine.is_floating_point():
            assert torch.equal(mine, theirs), name


def test_a_run_averages_over_about_its_last_tenth() -> None:
    model = make_model("base_model", 2, 1, True, 0.1, 0.1)
    short = WeightAverage.for_run(model, 240)
    assert 1 / (1 - short.decay) == pytest.approx(24) and short.ramp == pytest.approx(48)
    long = WeightAverage.for_run(model, 10**7)
    assert long.decay == pytest.approx(0.9999) and long.ramp == 2000


def test_swa_is_the_mean_of_its_updates() -> None:
    model = make_model("base_model", 2, 1, True, 0.1, 0.1)
    swa = WeightAverage(model, uniform=True)
    weight = next(iter(model.parameters()))
    seen = []
    for shift in (1.0, 2.0, 6.0):
        with torch.no_grad():
            weight.add_(shift)
        seen.append(weight.detach().clone())
        swa.update()
    averaged = next(iter(swa.model.parameters()))
    torch.testing.assert_close(averaged, torch.stack(seen).mean(0))
