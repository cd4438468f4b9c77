"""Console records, progress bars, and Weights & Biases as every command starts it.

    configure_console()                       # once, in the CLI entry point
    logging.getLogger("yogo.ddf").warning("...")   # printed as "warning: ..."

Library modules only log. The CLI shows their records; so do the API's commands
(`yogo.train(...)`, `yogo.test(...)`, ...: `speak_unless_configured`) unless the caller has
set up logging, in which case its handlers decide. Rank 0 speaks, other ranks print only
warnings and errors, prefixed with their rank.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from yogo.errors import display_path


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is when the record arrives (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            tqdm = sys.modules.get("tqdm")
            if tqdm is not None and tqdm.tqdm._instances:  # a bar is shown: a line of its own
                tqdm.tqdm.write(text, file=sys.stderr)
            else:
                sys.stderr.write(text + "\n")
        except OSError:
            self.handleError(record)


class _Format(logging.Formatter):
    prefix = ""  # "[rank N] " on ranks other than 0

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{self.prefix}{record.levelname.lower()}: {message}"
        return f"{self.prefix}{message}"


def configure_console(level: int = logging.INFO) -> None:
    """Send the `yogo` loggers' records to stderr, once (idempotent)."""
    logger = logging.getLogger("yogo")
    if any(getattr(h, "_yogo_console", False) for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(_Format())
    handler._yogo_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def speak_unless_configured() -> None:
    """The console of `configure_console`, for an API call (`yogo.train` in a script or a
    notebook), unless the caller configured logging (handlers on the root or the `yogo`
    logger): a script prints what the CLI prints, an application keeps its own logging."""
    if logging.getLogger().handlers or logging.getLogger("yogo").handlers:
        return
    configure_console()


def set_console_rank(rank: int) -> None:
    """Rank 0 speaks; other ranks show only warnings and errors, prefixed with their rank."""
    _Format.prefix = f"[rank {rank}] " if rank else ""
    logger = logging.getLogger("yogo")
    if any(getattr(h, "_yogo_console", False) for h in logger.handlers):  # else: the caller's
        logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def progress(
    iterable: Any = None,
    description: str | None = None,
    total: int | None = None,
    unit: str = "it",
    leave: bool = False,
    show: bool = True,
) -> Any:
    """A tqdm bar on a terminal (unless not `show`); silent otherwise (commands print a line
    per epoch or a summary instead).

    tqdm's monitor thread is turned off: it starts with each bar and ends when the last bar is
    gone, and a thread ending while a loader forks its workers can deadlock the new worker
    (CPython 3.11 takes a lock in the child that the ending thread held; seen in a resumed
    2-process run, at the first validation after a training epoch)."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0
    return tqdm(
        iterable,
        desc=description,
        total=total,
        unit=unit,
        leave=leave,
        disable=not (show and sys.stderr.isatty()),
        dynamic_ncols=True,
    )


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def init_wandb(
    folder: Path,
    project: str | None,
    entity: str | None,
    name: str | None,
    notes: str | None,
    tags: list[str] | None,
    config: dict[str, Any],
    run_id: str | None,
    job_type: str = "train",
) -> Any:
    """`wandb.init` as every yogo command does it (None when WANDB_MODE is disabled): online
    with credentials, else offline with a one-line note; files under `folder/wandb`."""
    if os.environ.get("WANDB_MODE") == "disabled":
        return None
    import wandb

    mode = os.environ.get("WANDB_MODE")
    if mode is None and not wandb_has_credentials():
        mode = "offline"
        logging.getLogger("yogo").info(
            "W&B: no credentials found, logging offline into "
            f"{display_path(folder / 'wandb')} (`wandb sync` uploads it later)"
        )
    os.environ.setdefault("WANDB_CACHE_DIR", str(folder / "wandb" / "cache"))
    os.environ.setdefault("WANDB_DATA_DIR", str(folder / "wandb" / "data"))
    return wandb.init(
        dir=folder,
        mode=mode,  # type: ignore[arg-type]
        project=project or os.environ.get("WANDB_PROJECT") or "yogo",
        entity=entity or os.environ.get("WANDB_ENTITY"),
        name=name,
        notes=notes,
        tags=tags or None,
        config=config,
        id=run_id,
        resume="allow" if run_id else None,
        job_type=job_type,
    )
