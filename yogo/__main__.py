"""`python -m yogo ...`: the `yogo` console script, as torchrun and srun launch it."""

from yogo.cli import main

main()
