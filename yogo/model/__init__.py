"""The network and its maths: pure tensors (and numpy for the grid), no files but checkpoints.

    from yogo.model.network import YOGO, ModelConfig, build_model   # the family and registry
    from yogo.model.boxes import postprocess                         # decode, IoU, NMS, targets
    from yogo.model.grid import grid_shape, grid_collisions          # the cell rule (numpy)
    from yogo.model.loss import YOGOLoss, forward_loss               # the one training step
    from yogo.model.fusion import detect_views, fuse_detections      # ensembles, flips (WBF)
    from yogo.model.checkpoint import load_checkpoint                # versioned, atomic, safe

May import: torch, numpy, yogo.errors, yogo.outputs (checkpoint's atomic write). `grid` is
numpy only, so `yogo check` never loads torch. Nothing here imports the data, training,
evaluation or deploy packages. This file imports nothing: `yogo.model.grid` stays torch-free.
"""
