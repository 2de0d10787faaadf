"""Progress lines of the per-shard stages, at most one every few seconds (:class:`Progress`,
for job logs: files and cluster jobs), and a progress bar for the command line on a terminal
(:class:`ProgressBar`)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import TextIO

__all__ = ["Progress", "ProgressBar"]


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


class ProgressBar:
    """A one-line progress bar on a terminal, e.g.
    ``predict 3/40 [###.......]   7% 2.1 files/s ETA 0:18``.

    It is drawn only when ``stream`` is a terminal (and ``TERM`` is not ``dumb``) and there are
    at least ``min_total`` steps; otherwise it does nothing, so output that goes to a file or a
    pipe carries no bar. Lines written through :meth:`write` while the bar is shown clear it
    first and draw it again after them. Use it as a context manager; at the end the bar is
    erased.

    Parameters
    ----------
    total : int
        Steps in all.
    desc : str
        What the bar starts with.
    unit : str
        What a step is, for the rate (``files``).
    stream : file, optional
        Where the bar goes (default: ``sys.stderr`` at the time of the call).
    enabled : bool, optional
        Force the bar on or off (default: whether ``stream`` is a terminal).
    min_total : int
        No bar for fewer steps.
    min_interval : float
        Seconds between two redraws (the last step is always drawn).
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        unit: str = "it",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_total: int = 2,
        min_interval: float = 0.1,
    ):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = _is_terminal(self.stream)
        self.enabled = bool(enabled) and self.total >= min_total
        self.min_interval = min_interval
        self.n = 0
        self._start = time.monotonic()
        self._last_draw = -1e9
        self._shown = False

    def __enter__(self) -> ProgressBar:
        self._draw(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` finished steps."""
        self.n += n
        self._draw(force=self.n >= self.total)

    def write(self, text: str, *, file: TextIO | None = None) -> None:
        """Print a line (to ``file``, default the bar's stream) without garbling the bar."""
        file = file if file is not None else self.stream
        self._clear()
        print(text, file=file, flush=True)
        self._draw(force=True)

    def close(self) -> None:
        """Erase the bar."""
        self._clear()
        self.enabled = False

    # --- drawing ----------------------------------------------------------------------------

    def render(self, width: int = 80) -> str:
        """The bar's text for a terminal ``width`` columns wide."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = self.n / elapsed
        frac = min(self.n / self.total, 1.0) if self.total else 1.0
        eta = (self.total - self.n) / rate if rate > 0 else None
        right = f" {100 * frac:3.0f}% {rate:.1f} {self.unit}/s"
        right += f" ETA {_clock(eta)}" if eta is not None and self.n < self.total else ""
        left = f"{self.desc} {self.n}/{self.total} " if self.desc else f"{self.n}/{self.total} "
        room = width - 1 - len(left) - len(right) - 2
        if room < 5:
            return (left + right.strip())[: width - 1]
        filled = int(round(frac * room))
        return f"{left}[{'#' * filled}{'.' * (room - filled)}]{right}"

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        width = _columns(self.stream)
        self.stream.write("\r" + self.render(width) + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def _columns(stream) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns if columns > 0 else shutil.get_terminal_size((80, 24)).columns


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
