"""Seconds from `yogo train` to its first optimizer step on many label files: a new run
(cold: no label index yet) and the same run resumed after a stop (warm: as a requeued or
preempted job starts again).

    python benchmarks/bench_startup.py --files 10000 100000 [--image-hw 192 256]

For each size it writes a dataset (distinct label and image files, ~130 objects per frame; see
check_speed.py), starts `yogo train` (batch 16), waits for its "first optimizer step" line,
stops it with SIGTERM (it saves last.pth, as on preemption), then starts it again with
`--resume auto` and waits for the line again. Prints `N files cold s: X` and `N files warm
s: Y`, measured from the command's start (Python and torch imports included).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from check_speed import build


def seconds_to_first_step(command: list[str]) -> float:
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "first optimizer step" in line:
            elapsed = time.perf_counter() - start
            process.send_signal(signal.SIGTERM)  # saves last.pth at the next step, exits
            process.communicate(timeout=600)
            return elapsed
    process.wait()
    raise RuntimeError("yogo train ended before its first step:\n" + "".join(lines[-20:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--image-hw", type=int, nargs=2, default=(192, 256))
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores")
    for files in args.files:
        with tempfile.TemporaryDirectory() as tmp:
            ddf = build(Path(tmp), files, tuple(args.image_hw))
            train = [sys.executable, "-m", "yogo", "train", str(ddf), "-bs", "16", "--epochs"]
            train += ["1", "--no-wandb", "--output-dir", f"{tmp}/out", "--name", "r"]
            cold = seconds_to_first_step(train)
            print(f"{files} files cold s: {cold:.1f}")
            warm = seconds_to_first_step([*train, "--resume", "auto"])
            print(f"{files} files warm s: {warm:.1f}")
            index = Path(tmp) / "out" / "r" / "label_index.npz"
            print(f"{files} files index MB: {index.stat().st_size / 1e6:.1f}")


if __name__ == "__main__":
    main()
