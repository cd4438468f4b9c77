"""`yogo train`: the loop and what it needs around it.

    from yogo.training.loop import train      # yogo.train: set-up -> epochs -> finish
    run_dir = train(TrainConfig(ddf="data.yml", epochs=20))

- loop: the loop, read top to bottom (train, train_one_epoch, validate, end_epoch, finish)
- setup: building a run (resolved settings, model, loss, optimiser, precision, DDP, W&B)
- resume: start or resume, the state last.pth holds; run_folder: claiming OUTPUT_DIR/NAME
- report: console lines, metrics.csv, training curves; priors: model and class weights
  from the labels; optim: AdamW, schedule, precision; ema: EMA and SWA; lr_find: `yogo lr-find`

May import: yogo.model, yogo.data, yogo.evaluation (validation), and the top-level plumbing
(config, ddf, dist, signals, outputs, log, errors). Nothing imports this package but the CLI
and the public API. This file imports nothing (`yogo.train` is the function).
"""
