"""Errors the CLI prints as one message without a traceback: a UserError (something the user
can fix) exits 2, a RunError (the run failed: disk full, loss diverged, a rank died) exits 1,
Interrupted (a stop signal, after saving) exits 128 + the signal.

    raise UserError("unknown key 'test_dataset_paths'", path=ddf_path, line=7,
                    fix="did you mean 'test_paths'?")

prints

    error: ddfs/run.yml:7: unknown key 'test_dataset_paths'
      fix: did you mean 'test_paths'?
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path


def display_path(path: str | os.PathLike[str]) -> str:
    """`path` relative to the working directory when it lies below it, else as absolute."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    if absolute == cwd or absolute.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, cwd)
    return absolute


def where(path: str | os.PathLike[str] | None, line: int | None = None) -> str:
    """`file:line` (or just `file`) as editors and terminals understand it."""
    if path is None:
        return ""
    return f"{display_path(path)}:{line}" if line is not None else display_path(path)


class UserError(Exception):
    """A mistake in the user's input: flags, dataset definition, data or a missing file.

    `details` are extra lines (one per problem when there are several); `fix` says what to do.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        fix: str | None = None,
        details: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.fix = fix
        self.details = tuple(details)

    def __str__(self) -> str:
        location = where(self.path, self.line)
        text = f"{location}: {self.message}" if location else self.message
        for detail in self.details:
            text += f"\n  {detail}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class RunError(Exception):
    """A runtime failure explained in words (what happened, what is kept, what to try)."""


class Interrupted(Exception):
    """Training stopped on a signal after saving last.pth; `exit_code` is 128 + signal."""

    def __init__(self, signum: int, requeue: bool, position: str, continued: str) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} {position}; {continued}"
            + (
                "; requeueing the SLURM job, which continues from there by itself"
                if requeue
                else ""
            )
        )
        self.exit_code = 128 + signum


class Stopped(BaseException):
    """A command other than training stopped by SIGTERM or SIGUSR1: raised where the process
    is, so that `finally` blocks remove temporary files and folders on the way out (a
    BaseException: no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; nothing was written")
        self.exit_code = 128 + signum


def stop_by_raising(signum: int, frame: object) -> None:
    """The SIGTERM/SIGUSR1 handler of commands that have nothing to save when stopped."""
    raise Stopped(signum)
