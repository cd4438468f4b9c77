"""The GPU check's one table (benchmarks/gpu_check.sh): its steps' logs to Markdown.

    python benchmarks/gpu_table.py WORK_DIR > "$OUT/gpu_check.md"

WORK_DIR holds machine.txt (a line about the machine), steps.tsv (per step: its name, `ok`,
`exit N`, `timed out` or `skipped`, its seconds and its log file) and the logs. A step's name
says what it measured, so a step that failed or ran out of time still has its rows, with a dash
and the reason where the figure would be:
  tests                                 pytest -m cuda (a line above the table)
  train:BATCH:CACHE:COMPILE:DEVICE[:model]  benchmarks/bench_train.py (end to end, model only)
  infer:DEVICE:FORMAT[,FORMAT]          benchmarks/infer_speed.py (batch 1, batched, yogo infer)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FORMAT_FILES = {"PyTorch fp32": ".pth", "onnxruntime fp32": ".onnx"}


def value(log: str, name: str) -> float | None:
    """The number of bench_train's `name: value` line."""
    found = re.search(rf"^{re.escape(name)}: ([0-9.]+)$", log, re.MULTILINE)
    return float(found.group(1)) if found else None


def cells(log: str, name: str, columns: int) -> list[float] | None:
    """The numbers of infer_speed's Markdown row `| name | a | b ... |` with `columns` of them
    (its first table has 4, its end-to-end table 2)."""
    for line in log.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if parts[0] == name and len(parts) == columns + 1:
            return [float(p) for p in parts[1:]]
    return None


def figure(number: float | None, status: str) -> str:
    if status != "ok":
        return "—"
    return "—" if number is None else f"{number:.1f}"


def why(status: str, note: str) -> str:
    reasons = {"timed out": "timed out", "skipped": "skipped: the 8-minute budget was spent"}
    if status == "ok":
        return note
    return reasons.get(status, f"failed ({status}; see gpu_check.log)")


def train_rows(name: str, status: str, log: str) -> list[str]:
    _, batch, cache, compile_, device, *model = name.split(":")
    rate = value(log, "train images/s")
    first = value(log, "epoch 1 train images/s")
    note = "epochs after the first (epoch 1: " + figure(first, status) + ")"
    ratio = value(log, "end-to-end / model-only")
    if ratio is not None:
        note += f"; {ratio:.2f} of model-only"
    setting = f"| {batch} | {cache} | {compile_} | {device} |"
    rows = [f"| train, end to end (`yogo train`) {setting} {figure(rate, status)} | "]
    rows[0] += why(status, note) + " |"
    if model:
        alone = value(log, "model-only images/s")
        note = "one batch already on the device, the same steps"
        rows.append(
            f"| train, model only | {batch} | — | {compile_} | {device} | "
            f"{figure(alone, status)} | {why(status, note)} |"
        )
    return rows


def infer_rows(name: str, status: str, log: str) -> list[str]:
    _, device, formats = name.split(":")
    batched = re.search(r"\| 772x1032 batch 1 \(frames/s\) \| batch (\d+) \|", log)
    size = batched.group(1) if batched else "B"
    rows = []
    for fmt in formats.split(","):
        what = f"infer {FORMAT_FILES[fmt]} ({fmt})"
        speeds = cells(log, fmt, 4) or [None] * 4
        seconds = cells(log, fmt, 2) or [None, None]
        note = "model only, uint8 frames in memory, 772x1032"
        if fmt == "onnxruntime fp32" and device == "cpu":
            note += "; onnxruntime's CPU provider"
        for batch, speed in (("1", speeds[0]), (size, speeds[1])):
            rows.append(
                f"| {what} | {batch} | — | off | {device} | {figure(speed, status)} | "
                f"{why(status, note)} |"
            )
        note = "`yogo infer --count` on PNG frames, start-up included"
        rows.append(
            f"| {what}, end to end | 8 | — | off | {device} | {figure(seconds[1], status)} | "
            f"{why(status, note)} |"
        )
    return rows


def main() -> None:
    work = Path(sys.argv[1])
    lines = [(work / "machine.txt").read_text().strip(), ""]
    train, infer = [], []  # the compile step runs last but belongs with the training rows
    for entry in (work / "steps.tsv").read_text().splitlines():
        name, status, seconds, log_file = entry.split("\t")
        log = Path(log_file).read_text() if Path(log_file).is_file() else ""
        if name == "tests":
            summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error).*?)\s*=*$", log, re.M)
            outcome = summary[-1] if summary and status in ("ok", "exit 1") else why(status, "")
            lines.append(f"Tests marked `cuda` (`pytest -m cuda`, {seconds} s): {outcome}")
            lines += [f"- {s}" for s in re.findall(r"^SKIPPED (.*)$", log, re.M)]
        elif name.startswith("train:"):
            train += train_rows(name, status, log)
        elif name.startswith("infer:"):
            infer += infer_rows(name, status, log)
    lines += [
        "",
        "| measurement | batch | cache | compile | device | images/s | notes |",
        "|---|---:|---|---|---|---:|---|",
        *train,
        *infer,
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
