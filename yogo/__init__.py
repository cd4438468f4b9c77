"""yogo: train, test, export and run small YOLO-style detectors for microscopy.

    >>> import yogo
    >>> ddf = yogo.DatasetDefinition.from_yaml("dataset_defs_example/example.yml")
    >>> ddf.classes
    ('healthy', 'ring', 'trophozoite')

Importing the package is cheap: heavy modules load on first use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from yogo.ddf import DatasetDefinition
    from yogo.errors import UserError

__all__ = ["DatasetDefinition", "UserError", "__version__"]

_LAZY = {"DatasetDefinition": "yogo.ddf", "UserError": "yogo.errors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yogo' has no attribute {name!r}")
