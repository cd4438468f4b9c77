"""The output grid of the model family, without importing torch (`yogo check` uses it too).

    rows, cols = grid_shape((772, 1032))     # (97, 129)

Every network in the registry has three stride-2 convolutions (padding 1), total stride 8;
tests/test_model.py runs every registered model and compares its output with this.
"""

from __future__ import annotations

STRIDE = 8


def grid_shape(image_hw: tuple[int, int]) -> tuple[int, int]:
    """Output grid (rows, columns) for an input size: each stride-2 conv rounds up."""
    height, width = image_hw
    for _ in range(3):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width
