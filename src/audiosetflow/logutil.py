"""Logging set-up shared by the Snakemake script adapters and the CLI."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["setup_logging"]


class _LogFile(logging.FileHandler):
    """A log file that, when it cannot be written (a full disk), says so once on stderr in one
    line and is then left alone, instead of printing a traceback for every record."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        exc = sys.exc_info()[1]
        print(f"audiosetflow: cannot write the log {self.baseFilename}: {exc}", file=sys.stderr)
        self.setLevel(logging.CRITICAL + 1)


def setup_logging(
    log_path: str | Path | None = None, *, name: str = "audiosetflow"
) -> logging.Logger:
    """Log INFO and above to stderr and, when given, to ``log_path`` (appended).

    Returns the ``audiosetflow`` logger (children such as ``audiosetflow.download`` inherit).
    """
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    logger = logging.getLogger("audiosetflow")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_LogFile(log_path, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.propagate = False

    def excepthook(exc_type, exc, tb):  # an uncaught error lands in the job's log as well
        logger.critical("failed: %s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = excepthook
    return logging.getLogger(name)
