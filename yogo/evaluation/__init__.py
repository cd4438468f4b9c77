"""How good a model is: the evaluation pass, metrics, `yogo test`, pictures.

    from yogo.evaluation.evaluate import evaluate_model       # validation and `yogo test`
    from yogo.evaluation.testing import test                  # yogo.test
    from yogo.evaluation.plots import plot_evaluation         # PR, confusion, P/R/F1, AP

- metrics: COCO-rule AP, P/R/F1, confusion matrix (numpy); evaluate: the pass, sharded
- testing: `yogo test`; folds: `yogo test --folds`, per class over cross-validation folds
- plots: the evaluation's pictures; draw: boxes on frames

May import: yogo.model, yogo.data and the top-level plumbing. Never yogo.training or
yogo.deploy (both use this package). This file imports nothing.
"""
