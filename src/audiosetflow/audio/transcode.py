"""The transcode stage: every downloaded YTID of a shard to a mono 16-bit window.

Each runner of a stage takes the shard table the stage before it wrote, skips every YTID whose
product already exists (so reruns and resumes cost nothing for finished clips), processes the
others, and writes the table back (:meth:`audiosetflow.shard.ShardTable.save`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import MachineError, machine_error_in_message
from ..progress import Progress
from ..shard import ShardLayout, ShardTable, Status
from .codec import AudioError, transcode_many

__all__ = ["run_transcode"]

log = logging.getLogger("audiosetflow.transcode")


def _reason(exc: AudioError, media: Path) -> str:
    """The reason of a transcode error, without the leading file name."""
    msg = str(exc)
    for prefix in (f"{media.absolute()}: ", f"{media}: "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg.split(": ", 1)[-1]


def run_transcode(
    table_in: str | Path,
    *,
    shard: ShardLayout,
    out: str | Path,
    sample_rate: int,
    batch: int = 20,
    logger: logging.Logger | None = None,
) -> ShardTable:
    """Transcode every downloaded YTID of a shard to a mono 16-bit window at ``sample_rate``.

    Parameters
    ----------
    table_in : str or Path
        The shard table of the download stage.
    shard : ShardLayout
        Where media, windows and clips are (:meth:`ShardLayout.window_target`).
    out : str or Path
        Where the table is written (the rule's declared output; also the shard's record).
    sample_rate : int
        Sample rate of the windows in Hz, > 0.
    batch : int
        YTIDs per ffmpeg process (>= 1; :func:`audiosetflow.audio.codec.transcode_many`).
        Each window is renamed into place on its own, so an interrupted run keeps every
        finished window and leaves nothing half-written under a final name; temporaries that
        a killed run left are removed first.
    logger : logging.Logger, optional

    Returns
    -------
    ShardTable
        With ``transcode_status`` per YTID: ``ok`` (reason ``reused`` when the window, or the
        clip cut from it, existed), ``permanent`` (the media do not decode; the reason is
        ffmpeg's) or ``transient`` (the media file is missing: rerun the download); YTIDs the
        download did not pass stay ``pending``.

    Raises
    ------
    audiosetflow.errors.MachineError
        On a fault of the machine (a full disk, ...), after recording what was done.

    See Also
    --------
    audiosetflow.audio.trim.run_trim : the next stage.
    """
    logger = logger or log
    table = ShardTable.read(table_in)
    table.reset("transcode")
    todo = table.entering("transcode")
    if removed := shard.clean_pcm_tmp(todo):
        logger.info("[transcode %s] removed %d temporaries of a killed run", shard.name, removed)
    prog = Progress(f"transcode {shard.name}", len(todo), logger)
    pending: list[tuple[str, Path]] = []  # (ytid, media)

    def record(ytid: str, status: Status, reason: str = "") -> None:
        table.set("transcode", ytid, status, reason)
        prog.step(status.value)

    def flush() -> None:
        pairs = [(media, shard.window_target(y)) for y, media in pending]
        results = transcode_many(pairs, sample_rate=sample_rate, batch=batch)
        for (ytid, media), res in zip(pending, results, strict=True):
            if isinstance(res, AudioError):
                if (code := machine_error_in_message(str(res))) is not None:
                    raise MachineError(code, str(shard.window_target(ytid)), str(res))
                record(ytid, Status.PERMANENT, _reason(res, media))
            else:
                record(ytid, Status.OK)
        pending.clear()

    try:
        media_of = shard.media_index(todo)
        for ytid in todo:
            if shard.transcoded(ytid):
                record(ytid, Status.OK, "reused")
                continue
            media = media_of.get(ytid)
            if media is None:
                record(ytid, Status.TRANSIENT, "downloaded media missing (rerun the download)")
                continue
            pending.append((ytid, media))
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
    except Exception as exc:
        machine = table.save_after_fault(shard, "transcode", [y for y, _ in pending], exc)
        if machine is None:
            raise
        raise machine from exc
    table.save(shard, out)
    return table
