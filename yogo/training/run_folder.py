"""Run folders: OUTPUT_DIR/NAME, never overwritten, held by one job at a time, and the
dataset record in config.yaml.

    with claim_run_folder(cfg, ctx, resume) as run_dir:   # new, reused or resumed
        ... run_dir is this job's until the block ends (or the process dies)
    record = dataset_record(ddf.path, splits)   # DDF, split sizes, SHA-256 of the sample list

A folder that holds no checkpoint and only files yogo wrote (a run stopped before its first
save) is not a run yet: the same --name (or --resume auto) starts it again in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from yogo.config import TrainConfig
from yogo.data.scan import LabelledSample
from yogo.dist import DistContext
from yogo.errors import UserError, display_path
from yogo.model.checkpoint import Checkpoint
from yogo.outputs import (
    is_partial,
    plan_folder,
    release_lock,
    remove_partial_files,
    try_lock,
    write_atomic,
)

log = logging.getLogger(__name__)

LOCK_NAME = ".yogo-run"  # the lock, and the mark of a folder yogo made (written first)
# What a run writes before its first checkpoint; a folder holding only these is restartable.
# A restart rewrites config.yaml, removes the rows, the plots and the temporary files of
# interrupted writes, and starts a new W&B run.
STALE_FILES = ("metrics.csv", "training_curves.png", "train_batch.png")
# label_index.npz: the per-run label index of yogo before the shared cache (yogo.data.index).
OLD_INDEX_NAME = "label_index.npz"
EARLY_FILES = ("config.yaml", "wandb", LOCK_NAME, OLD_INDEX_NAME, *STALE_FILES)


def restartable(run_dir: Path) -> bool:
    """`run_dir` is empty, or yogo made it (its mark is there) and it holds no checkpoint and
    nothing but files yogo writes before the first one. A folder the user made is never
    restarted, whatever its files are called."""
    names = {entry.name for entry in run_dir.iterdir()}
    return not names or (
        LOCK_NAME in names and all(name in EARLY_FILES or is_partial(name) for name in names)
    )


def require_new_run_name(cfg: TrainConfig) -> None:
    """An existing run folder of that name is never overwritten."""
    if cfg.name is None:
        return
    run_dir = Path(cfg.output_dir) / cfg.name
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UserError("is a file, not a run folder", path=run_dir, fix="choose another --name")
    if not restartable(run_dir):
        resumable = (run_dir / "last.pth").is_file() and cfg.resume is None
        raise UserError(
            f"a run named '{cfg.name}' already exists",
            path=run_dir,
            fix="choose another --name (runs are never overwritten)"
            + ("; --resume auto continues it if it is unfinished" if resumable else ""),
        )


class RunFolder:
    """A run folder held by this process: an exclusive `flock` on RUN/.yogo-run, which the kernel
    releases when the process ends in any way, so a dead job never leaves it held."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd = path, fd
        self.created = False  # this job made the folder

    @classmethod
    def claim(cls, cfg: TrainConfig, ddf_path: Path, resume_path: Path | None) -> RunFolder:
        """The resumed run's folder, or a new one (OUTPUT_DIR/NAME, or a generated name),
        or a restartable one of that name; held until `release`. A resumed or restarted
        folder loses the temporary files of writes a kill cut short (held now: none is live)."""
        if resume_path is not None:
            return cls.hold(resume_path.parent).without_partial_files()
        if cfg.name is None:
            folder = cls.hold(_new_generated_dir(Path(cfg.output_dir), ddf_path))
            folder.created = True
            return folder
        require_new_run_name(cfg)  # before the lock, and again under it
        run_dir = Path(cfg.output_dir) / cfg.name
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        folder = cls.hold(run_dir)
        folder.created = created
        try:
            require_new_run_name(cfg)  # another job may have started it meanwhile
        except UserError:
            folder.release()
            raise
        if (run_dir / "config.yaml").exists():
            log.info(
                f"{display_path(run_dir)} holds a run stopped before its first checkpoint: "
                "starting it again there"
            )
        for name in STALE_FILES:
            (run_dir / name).unlink(missing_ok=True)
        return folder.without_partial_files()

    def without_partial_files(self) -> RunFolder:
        for path in remove_partial_files(self.path):
            log.info(f"removed {display_path(path)} (a write interrupted by a crash)")
        return self

    @classmethod
    def hold(cls, run_dir: Path) -> RunFolder:
        """Lock `run_dir` for this process, or say which job holds it."""
        plan_folder(run_dir, replace=True)  # the run's own files: checkpoints, metrics, ...
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)

        def busy() -> UserError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            return UserError(
                f"this run folder is in use by another job ({holder})",
                path=run_dir,
                fix="wait for that job to end or stop it; one job at a time trains a run",
            )

        held = try_lock(fd, run_dir, busy, "make sure one job at a time trains this run")
        if held is not None:
            os.ftruncate(fd, 0)
            holder = f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now():%c}"
            os.write(fd, holder.encode())
        return cls(run_dir, held)

    def release(self, failed: bool = False) -> None:
        """Let the folder go; after a failure, a folder this job made and left empty goes
        too (a refused run leaves nothing behind)."""
        if failed and self.created and {p.name for p in self.path.iterdir()} <= {LOCK_NAME}:
            (self.path / LOCK_NAME).unlink()
            self.path.rmdir()
        if self._fd is not None:
            release_lock(self._fd)
            self._fd = None


def _new_generated_dir(output: Path, ddf_path: Path) -> Path:
    """OUTPUT_DIR/<time>_<ddf name>, made new (exist_ok=False: two jobs never share one)."""
    stem = f"{datetime.now():%Y-%m-%d_%H%M%S}_{ddf_path.stem}"
    output.mkdir(parents=True, exist_ok=True)
    run_dir, n = output / stem, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = output / f"{stem}-{n}"


def dataset_record(ddf_path: Path, splits: dict[str, tuple[LabelledSample, ...]]) -> dict[str, Any]:
    """The DDF, the split sizes and a SHA-256 of the resolved sample list, for config.yaml."""
    digest = hashlib.sha256()
    for name in ("train", "val", "test"):
        for s in splits[name]:
            digest.update(f"{name}\t{s.label}\t{s.image}\n".encode())
    return {
        "ddf": str(ddf_path),
        "samples_sha256": digest.hexdigest(),
        "num_samples": {name: len(splits[name]) for name in ("train", "val", "test")},
    }


def save_config(path: Path, cfg: TrainConfig, record: dict[str, Any]) -> None:
    """Write a run's config.yaml: the version, `record` (command, dataset) and `config:`."""
    from ruamel.yaml import YAML

    from yogo import __version__

    document = {"yogo_version": __version__, **record, "config": cfg.to_dict()}
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    text = io.StringIO()
    text.write("# Written by yogo train. `yogo train --config THIS_FILE` repeats the run.\n")
    yaml.dump(document, text)
    write_atomic(path, text.getvalue())


@contextlib.contextmanager
def claim_run_folder(
    cfg: TrainConfig, ctx: DistContext, resume: Checkpoint | None
) -> Iterator[Path]:
    """The run folder, held by this job while the block runs (yogo.training.run_folder.RunFolder):
    rank 0 claims it and every rank gets its path, or rank 0's reason for refusing it."""
    folder, refusal = None, None
    if ctx.is_main:
        try:
            folder = RunFolder.claim(cfg, Path(cfg.ddf), resume.path if resume else None)
        except UserError as e:
            refusal = e
    path, reason = ctx.broadcast(
        (str(folder.path), None) if folder else (None, str(refusal) if refusal else None)
    )
    if refusal is not None:
        raise refusal
    if path is None:
        raise UserError(f"rank 0 could not use the run folder: {reason}")
    try:
        yield Path(path)
    except BaseException:
        if folder is not None:
            folder.release(failed=True)
        raise
    if folder is not None:
        folder.release()
