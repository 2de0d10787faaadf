"""A budget of fetches per hour for each ``youtube`` resource slot, kept across jobs and runs.

YouTube serves about 300 videos an hour to one signed-out session and then blocks it for up
to an hour. ``download.max_per_hour`` keeps a long run under that limit instead of running
into it:

* Snakemake runs at most ``youtube`` download jobs at once (``resources: youtube=2`` in
  profiles/default/config.yaml; each job holds one unit). A job claims a *slot* for its
  lifetime: the first of ``slot-0``, ``slot-1``, ... in ``results/state/youtube/`` whose lock
  file no other process holds (``fcntl.flock``; the kernel releases it when the job ends, even
  after ``kill -9``). So concurrent jobs never share a slot, and a slot passes from job to job.
* A slot's state, ``slot-K.json``, holds the times of its fetches in the last hour (a sliding
  window). Before each fetch the job waits until the window holds fewer than
  ``max_per_hour`` fetches (a log line says how long and why), then records the fetch and
  rewrites the file atomically. The run as a whole makes at most ``max_per_hour`` fetches an
  hour *per job running at once*.
* The state is no declared output, so Snakemake never deletes it; removing the folder forgets
  the history.

The clock and the sleep are parameters, so tests check the pacing without waiting an hour.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..io import atomic_write_text

__all__ = ["WINDOW", "FetchBudget", "fetch_budget"]

#: The sliding window of the budget (seconds).
WINDOW = 3600.0

log_default = logging.getLogger("audiosetflow.download")


class FetchBudget:
    """The fetch budget of one claimed slot (see the module docstring).

    Parameters
    ----------
    folder : str or Path
        Where the slots' lock and state files live (``results/state/youtube``).
    per_hour : int
        Fetches allowed in any hour (> 0).
    clock : callable, optional
        Seconds since the epoch (default :func:`time.time`).
    sleep : callable, optional
        Waits that many seconds (default :func:`time.sleep`).
    log : logging.Logger, optional
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        per_hour: int,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
        log: logging.Logger | None = None,
    ):
        if per_hour <= 0:
            raise ValueError(f"per_hour must be > 0, not {per_hour}")
        self.folder = Path(folder)
        self.per_hour = int(per_hour)
        self.clock, self.sleep = clock, sleep
        self.log = log or log_default
        self.slot: int | None = None
        self._lock: IO[bytes] | None = None
        self.stamps: list[float] = []
        #: The waits of this budget so far (seconds), in order.
        self.waits: list[float] = []

    @property
    def state(self) -> Path:
        """The claimed slot's state file."""
        if self.slot is None:
            raise RuntimeError("no slot claimed")
        return self.folder / f"slot-{self.slot}.json"

    def claim(self) -> int:
        """Claim the first free slot (once); return its number."""
        if self.slot is not None:
            return self.slot
        self.folder.mkdir(parents=True, exist_ok=True)
        k = 0
        while True:
            f = open(self.folder / f"slot-{k}.lock", "ab")  # noqa: SIM115 - held until release
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                k += 1
                continue
            self.slot, self._lock = k, f
            break
        self.stamps = self._read()
        self.log.info(
            "youtube budget: slot %d (%s), %d fetches in the last hour, at most %d an hour",
            k, self.folder, len(self.stamps), self.per_hour,
        )  # fmt: skip
        return k

    def _read(self) -> list[float]:
        try:
            data = json.loads(self.state.read_text(encoding="utf-8"))
            stamps = sorted(float(t) for t in data.get("fetches", []))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            self.log.warning("youtube budget: unreadable %s (%s): starting it anew",
                             self.state, exc)  # fmt: skip
            return []
        now = self.clock()
        return [t for t in stamps if t > now - WINDOW]

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until the window holds fewer than ``per_hour`` fetches."""
        recent = [t for t in self.stamps if t > now - WINDOW]
        if len(recent) < self.per_hour:
            return 0.0
        return max(0.0, recent[-self.per_hour] + WINDOW - now)

    def acquire(self) -> float:
        """Wait until the slot may fetch, record the fetch; return the seconds waited."""
        self.claim()
        waited = 0.0
        while True:
            now = self.clock()
            wait = self.delay(now)
            if wait <= 0:
                break
            self.log.info(
                "youtube budget: slot %d made %d fetches in the last hour (max_per_hour %d): "
                "waiting %.0f s",
                self.slot, len([t for t in self.stamps if t > now - WINDOW]), self.per_hour, wait,
            )  # fmt: skip
            self.sleep(wait)
            waited += wait
        self.stamps = [t for t in self.stamps if t > now - WINDOW] + [now]
        atomic_write_text(self.state, json.dumps({"fetches": self.stamps}) + "\n")
        self.waits.append(waited)
        return waited

    def pace(self, fetcher: Any) -> _Paced:
        """``fetcher`` wrapped so that each of its ``fetch`` calls waits for this budget."""
        return _Paced(fetcher, self)

    def release(self) -> None:
        """Give the slot back (also done by the kernel when the process ends)."""
        if self._lock is not None:
            self._lock.close()  # closing the file drops its flock
        self._lock, self.slot = None, None


class _Paced:
    """A fetcher whose every ``fetch`` first waits for the budget."""

    def __init__(self, fetcher: Any, budget: FetchBudget):
        self._fetcher, self._budget = fetcher, budget

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self._budget.acquire()
        return self._fetcher.fetch(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fetcher, name)


class _NoBudget:
    """No budget: fetchers go unpaced."""

    def pace(self, fetcher: Any) -> Any:
        return fetcher


@contextlib.contextmanager
def fetch_budget(
    root: str | Path,
    *,
    per_hour: int | None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Any] = time.sleep,
    log: logging.Logger | None = None,
) -> Iterator[FetchBudget | _NoBudget]:
    """The fetch budget of a download job under the results folder ``root``; a slot is
    claimed at the first fetch and given back when the block ends.

    Parameters
    ----------
    root : str or Path
        The results folder; the slots are in ``root/state/youtube``.
    per_hour : int or None
        ``download.max_per_hour``; 0 or None: no budget (``pace`` returns the fetcher as is).
    clock, sleep, log
        As for :class:`FetchBudget`.
    """
    if not per_hour:
        yield _NoBudget()
        return
    budget = FetchBudget(
        Path(root) / "state" / "youtube", per_hour=per_hour, clock=clock, sleep=sleep, log=log
    )
    try:
        yield budget
    finally:
        budget.release()
