"""Seconds from `yogo train` to its first optimizer step on many label files, in the three
starts a cluster sees: a new run on new data (no label index yet), the same run requeued
(resumed after a stop), and a new run on data seen before (a sweep member, a fold, a
fine-tune: the label index shared between runs).

    python benchmarks/bench_startup.py --files 10000 100000 [--image-hw 192 256]

For each size it writes a dataset (distinct label and image files, ~130 objects per frame; see
check_speed.py), starts `yogo train` (batch 16), waits for its "first optimizer step" line,
stops it with SIGTERM (it saves last.pth, as on preemption), starts it again with `--resume
auto`, then starts a second run (another --name) on the same DDF. With `--before CHECKOUT` (an
older yogo, e.g. `git worktree add /tmp/before cff5d51`) both take turns, twice each, and each
keeps its best. Times are measured from the
command's start (Python and torch imports included). Also prints the label index's size on
disk and the memory one process holds for it (its resident set before and after a scan
through the warm index).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from check_speed import build


def seconds_to_first_step(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1, env=env
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


def three_starts(ddf: Path, out: Path, env: dict[str, str] | None) -> list[float]:
    """New run on new data, the same run requeued, a new run on the same data (seconds)."""
    train = [sys.executable, "-m", "yogo", "train", str(ddf), "-bs", "16", "--epochs", "1"]
    train += ["--no-wandb", "--output-dir", str(out), "--name", "r"]
    return [
        seconds_to_first_step(train, env),
        seconds_to_first_step([*train, "--resume", "auto"], env),
        seconds_to_first_step([*train[:-1], "s"], env),
    ]


STARTS = ("new run on new data", "requeued run", "new run on data seen before")


MEMORY = """
import sys
from yogo import DatasetDefinition
from yogo.data.index import open_cache
from yogo.data.scan import scan_dataset
from yogo.outputs import Inputs

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

ddf = DatasetDefinition.from_yaml(sys.argv[1])
before = rss_mb()
scan = scan_dataset(ddf, "error", cache=open_cache(sys.argv[2], Inputs(), None))
print(f"{rss_mb() - before:.0f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--image-hw", type=int, nargs=2, default=(192, 256))
    parser.add_argument(
        "--before", type=Path, help="another yogo checkout: both take turns (A, B, A, B)"
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    for files in args.files:
        with tempfile.TemporaryDirectory() as tmp:
            ddf = build(Path(tmp), files, tuple(args.image_hw))
            sides: dict[str, dict[str, str] | None] = {"this checkout": None}
            if args.before is not None:
                before = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
                sides = {"before": before, "this checkout": None}
            best: dict[str, list[float]] = {}
            for round_ in range(2 if args.before is not None else 1):
                for side, env in sides.items():
                    out = Path(tmp) / f"out-{side.replace(' ', '-')}-{round_}"
                    times = three_starts(ddf, out, env)
                    for start, seconds in zip(STARTS, times, strict=True):
                        print(f"{files} files, {side}, {start} s: {seconds:.1f}", flush=True)
                    best[side] = [
                        min(a, b) for a, b in zip(best.get(side, times), times, strict=True)
                    ]
            if args.before is not None:
                for start, old, new in zip(
                    STARTS, best["before"], best["this checkout"], strict=True
                ):
                    print(f"{files} files, {start}: best {old:.1f} s before, {new:.1f} s now")
            cache = Path(tmp) / "out-this-checkout-0" / ".yogo-cache"
            size = sum(p.stat().st_size for p in cache.rglob("[!.]*.npz")) / 1e6
            print(f"{files} files, index on disk MB: {size:.0f}")
            memory = subprocess.run(
                [sys.executable, "-c", MEMORY, str(ddf), str(cache)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            print(f"{files} files, index in memory per process MB: {memory}")


if __name__ == "__main__":
    main()
