"""The transcode stage: every downloaded YTID of a shard to a mono 16-bit window.

Each runner of a stage takes the shard table the stage before it wrote, skips every YTID whose
product already exists (so reruns and resumes cost nothing for finished clips), processes the
others, and writes the table back (:meth:`audiosetflow.shard.ShardTable.save`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import MachineError, machine_error_in_message
from ..shard import ShardLayout, ShardTable, StageRun, Status, stage_run
from .codec import DEFAULT_BATCH, AudioError, transcode_many

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
    batch: int = DEFAULT_BATCH,
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
        finished window and leaves nothing half-written under a final name; the temporaries
        of a killed run are removed by the next.
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
    with stage_run("transcode", table_in, shard=shard, out=out, logger=logger) as run:
        if run.interrupted:  # a killed run may have left half-written windows
            names = [shard.window_target(y).name for y in run.todo]
            n = shard.clean_temporaries(shard.pcm_dir, names)
            logger.info("[transcode %s] removed %d temporaries of a killed run", shard.name, n)
        df = run.table.df
        media_of = shard.media_index(run.todo, dict(zip(df.index, df["media"], strict=True)))
        pending = run.in_flight  # YTIDs of the batch being transcoded
        for ytid in run.todo:
            seg = {"start": df.at[ytid, "start"], "end": df.at[ytid, "end"]}
            if shard.transcoded(ytid, sample_rate=sample_rate, **seg):
                run.record(ytid, Status.OK, "reused")
            elif ytid not in media_of:
                run.record(ytid, Status.TRANSIENT, "media missing (rerun: --forcerun download)")
            else:
                pending.append(ytid)
                if len(pending) >= batch:
                    _transcode_batch(run, shard, media_of, sample_rate, batch)
        if pending:
            _transcode_batch(run, shard, media_of, sample_rate, batch)
    return run.table


def _transcode_batch(
    run: StageRun, shard: ShardLayout, media_of: dict[str, Path], sample_rate: int, batch: int
) -> None:
    """Transcode the YTIDs in flight (one ffmpeg process) and record each outcome."""
    pending = run.in_flight
    pairs = [(media_of[y], shard.window_target(y)) for y in pending]
    results = transcode_many(pairs, sample_rate=sample_rate, batch=batch)
    for (media, window), ytid, res in zip(pairs, pending, results, strict=True):
        if isinstance(res, AudioError):
            if (code := machine_error_in_message(str(res))) is not None:
                raise MachineError(code, str(window), str(res))
            run.record(ytid, Status.PERMANENT, _reason(res, media))
        else:
            run.record(ytid, Status.OK)
    pending.clear()
