"""A trained model at work: export, the predictor, `yogo infer` and what it writes.

    from yogo.deploy.export import export_onnx        # yogo.export_onnx (verified ONNX)
    from yogo.deploy.predictor import load_predictor  # yogo.load_predictor (.pth or .onnx)
    from yogo.deploy.infer import infer               # yogo.infer

- predictor: one interface over a .pth or an .onnx; export: ONNX with the normalisation inside
- ensemble: several models and test-time flips as one predictor, fused (yogo.model.fusion)
- infer: frames in, detections out; infer_files: its outputs; labelstudio: tasks both ways

May import: yogo.model, yogo.data, yogo.evaluation.draw and the top-level plumbing. Never
yogo.training. This file imports nothing.
"""
