"""Console output: how yogo's log records reach the terminal.

    configure_console()                       # once, in the CLI entry point
    logging.getLogger("yogo.ddf").warning("...")   # printed as "warning: ..."

Library modules only log; the CLI decides what is shown. Later: rank 0 speaks, other ranks
print only warnings and errors, prefixed with their rank.
"""

from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is when the record arrives (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except OSError:
            self.handleError(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


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
