"""Progress lines of the per-shard stages, at most one every few seconds."""

from __future__ import annotations

import logging
import time

__all__ = ["Progress"]


class Progress:
    """Logs ``[stage split/shard] i/n ok=.. permanent=..`` at most every ``every`` seconds
    and at the last step.

    Parameters
    ----------
    name : str
        What the lines start with, e.g. ``"transcode train/0003"``.
    total : int
        Steps in all.
    logger : logging.Logger
    every : float
        Seconds between two lines.
    """

    def __init__(self, name: str, total: int, logger: logging.Logger, every: float = 5.0):
        self.name, self.total, self.log, self.every = name, total, logger, every
        self.last = 0.0
        self.done = 0
        self.counts: dict[str, int] = {}

    def step(self, status: str) -> None:
        """Count one finished step with its status."""
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            parts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            self.log.info("[%s] %d/%d %s", self.name, self.done, self.total, parts)
