"""yogo: train, test, export and run small YOLO-style detectors for microscopy.

    >>> import yogo
    >>> ddf = yogo.DatasetDefinition.from_yaml("dataset_defs_example/example.yml")
    >>> ddf.class_names
    ('healthy', 'ring', 'trophozoite')
    >>> yogo.check(yogo.CheckConfig(ddf="dataset_defs_example/example.yml"))["trainable"]
    True
    >>> cfg = yogo.TrainConfig(ddf="dataset_defs_example/example.yml", epochs=3, wandb=False)
    >>> run_dir = yogo.train(cfg)                         # prints what `yogo train` prints
    >>> best = str(run_dir / "best.pth")
    >>> report = yogo.test(yogo.TestConfig(checkpoint=best, ddf=str(ddf.path), split="val"))
    >>> onnx_file = yogo.export_onnx(yogo.ExportConfig(checkpoint=best)).path
    >>> summary = yogo.infer(yogo.InferConfig(model=str(onnx_file), path_to_images="frames/"))
    >>> model, model_config = yogo.load_model(best)
    >>> predictor = yogo.load_predictor(best)            # or an .onnx, an .xml
    >>> found = predictor.predict(["frame.png"])[0]      # boxes in pixels, names, scores

Each CLI command is one of these calls with its settings object (yogo.config): the same
defaults, the same checks. Importing the package is cheap: heavy modules load on first
use of the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from yogo.config import (
        CheckConfig,
        ExportConfig,
        InferConfig,
        SynthConfig,
        TestConfig,
        TrainConfig,
    )
    from yogo.dataset_check import check
    from yogo.ddf import DatasetDefinition
    from yogo.deploy.export import export_onnx
    from yogo.deploy.infer import infer
    from yogo.deploy.predictor import load_predictor
    from yogo.errors import UserError
    from yogo.evaluation.testing import test
    from yogo.model.checkpoint import load_model
    from yogo.training.loop import train

__all__ = [
    "CheckConfig",
    "DatasetDefinition",
    "ExportConfig",
    "InferConfig",
    "SynthConfig",
    "TestConfig",
    "TrainConfig",
    "UserError",
    "__version__",
    "check",
    "export_onnx",
    "infer",
    "load_model",
    "load_predictor",
    "test",
    "train",
]

_LAZY = {
    "DatasetDefinition": "yogo.ddf",
    "UserError": "yogo.errors",
    "TrainConfig": "yogo.config",
    "CheckConfig": "yogo.config",
    "SynthConfig": "yogo.config",
    "check": "yogo.dataset_check",
    "TestConfig": "yogo.config",
    "ExportConfig": "yogo.config",
    "InferConfig": "yogo.config",
    "train": "yogo.training.loop",
    "test": "yogo.evaluation.testing",
    "export_onnx": "yogo.deploy.export",
    "load_model": "yogo.model.checkpoint",
    "load_predictor": "yogo.deploy.predictor",
    "infer": "yogo.deploy.infer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yogo' has no attribute {name!r}")
