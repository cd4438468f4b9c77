"""`yogo lr-find`: the suggestion rule on known curves, and a real range test through the CLI
with train flags passed on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import simple_ddf
from PIL import Image

from yogo.errors import UserError
from yogo.training.lr_find import suggest


def test_the_suggestion_is_the_steepest_descent_not_the_minimum() -> None:
    lrs = np.logspace(-7, 0, 141)
    x = np.log10(lrs)
    falling = 600 - 300 / (1 + np.exp(-3 * (x + 3)))  # steepest at 1e-3
    loss = falling + np.where(x > -1, 1000 * (x + 1) ** 2, 0)  # blows up past 0.1
    result = suggest(lrs, loss, loss)
    assert result.suggested == pytest.approx(1e-3, rel=0.15)
    assert 0.05 < result.minimum < 0.2  # the lowest loss, well above the suggestion


@pytest.mark.parametrize(
    ("loss", "message"),
    [(np.linspace(1, 100, 8), "diverged after 8 steps"), (np.linspace(1, 2, 50), "never fell")],
)
def test_no_suggestion_without_a_falling_loss(loss: np.ndarray, message: str) -> None:
    with pytest.raises(UserError, match=message):
        suggest(np.logspace(-7, 0, len(loss)), loss, loss)


@pytest.mark.slow
def test_yogo_lr_find_with_train_flags(tmp_path: Path, run_cli) -> None:
    ddf = simple_ddf(tmp_path / "data", n=12)
    picture = tmp_path / "out" / "lr.png"
    args = ["lr-find", ddf, "--steps", "40", "--plot", picture, "-bs", "4", "--num-workers", "0"]
    result = run_cli(*args)
    assert result.code == 0, result.err
    (line,) = [x for x in result.out.splitlines() if x.startswith("suggested lr: ")]
    assert 1e-7 <= float(line.split(": ")[1]) <= 1
    assert "learning rate" not in result.err  # the default a whole run would get: not this one
    with Image.open(picture) as image:  # the suggestion is marked (its orange dot and line)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert (np.abs(pixels.astype(int) - (0xD5, 0x5E, 0x00)).sum(axis=1) < 30).sum() > 50
    again = run_cli(*args)
    assert again.code == 2 and "--force" in again.err
    wrong = run_cli("lr-find", ddf, "--no-such-flag")
    assert wrong.code == 2 and "--no-such-flag" in wrong.err
    assert not list(tmp_path.glob("trained_models"))  # nothing but the picture is written
