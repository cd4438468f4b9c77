"""What a model learns from and runs on: images, labels, the scan, loaders.

    from yogo.data.scan import scan_dataset          # every label file and image header once
    from yogo.data.setup import load_splits, make_data   # a training run's splits and loaders
    from yogo.data.frames import open_frames         # image folders and zarr stores (infer)

- images, labels: decode one image, parse one label file; scan, index: a DDF's samples and
  the label index that makes a second scan fast; cache: decoded frames shared by a node
- transforms, paste, dataset, loader: augmentation, copy-paste, a split as a Dataset,
  batches and samplers; setup: what `yogo train` reads; frames: what `yogo infer` reads
- synth: synthetic smear-like datasets (tests, demos, benchmarks)

May import: yogo.config, yogo.ddf, yogo.errors, yogo.outputs, yogo.dist, and for setup the
model's description (yogo.model.network.ModelConfig). Never yogo.training, yogo.evaluation
or yogo.deploy. This file imports nothing.
"""
