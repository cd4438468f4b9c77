"""yogo: train, test, export and run small YOLO-style detectors for microscopy.

    >>> import yogo
    >>> ddf = yogo.DatasetDefinition.from_yaml("dataset_defs_example/example.yml")
    >>> ddf.class_names
    ('healthy', 'ring', 'trophozoite')
    >>> run_dir = yogo.train(yogo.TrainConfig(ddf="dataset_defs_example/example.yml", epochs=3))
    >>> model, info = yogo.load_model(run_dir / "best.pth")

Importing the package is cheap: heavy modules load on first use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from yogo.checkpoint import load_model
    from yogo.config import TrainConfig
    from yogo.ddf import DatasetDefinition
    from yogo.errors import UserError
    from yogo.training import train

__all__ = ["DatasetDefinition", "TrainConfig", "UserError", "__version__", "load_model", "train"]

_LAZY = {
    "DatasetDefinition": "yogo.ddf",
    "UserError": "yogo.errors",
    "TrainConfig": "yogo.config",
    "train": "yogo.training",
    "load_model": "yogo.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yogo' has no attribute {name!r}")
