"""The trim stage: cut exactly ``[start, end)`` of each segment out of its window."""

from __future__ import annotations

import logging
from pathlib import Path

import soundfile as sf

from ..errors import machine_error
from ..shard import ShardLayout, ShardTable, StageRun, Status, stage_run
from .codec import AudioError, cut_length, trim
from .inplace import InPlace, is_in_place, write_source_record

__all__ = ["run_trim"]

log = logging.getLogger("audiosetflow.trim")


def run_trim(
    table_in: str | Path,
    *,
    shard: ShardLayout,
    out: str | Path,
    clip_seconds: float,
    keep_intermediate: bool = False,
    keep_clips: bool = True,
    logger: logging.Logger | None = None,
) -> ShardTable:
    """Cut each transcoded window to exactly ``[start, end)``, padding short clips.

    Parameters
    ----------
    table_in : str or Path
        The shard table of the transcode stage.
    shard : ShardLayout
        Where windows, offsets and clips are (:meth:`ShardLayout.clip`: mono 16-bit FLAC).
    out : str or Path
        Where the table is written (the rule's declared output; also the shard's record).
    clip_seconds : float
        Minimum clip length in seconds, > 0; clips with less real audio are zero-padded at
        the end and flagged ``short``.
    keep_intermediate : bool
        Keep the window once its clip is written (default: delete it).
    keep_clips : bool
        ``audio.keep_clips``. ``False``: a clip read in place from a mirror (the table's
        ``media`` is a ``tar:`` or ``file:`` locator) is not written at all. Its window's header
        gives its duration, the ``{ytid}.source`` record says how to cut it, and the window
        stays for the features stage, which cuts the clip from it in memory and then deletes
        it (:func:`audiosetflow.audio.inplace.read_segment`): each clip is decoded once and no
        FLAC is encoded or decoded.
    logger : logging.Logger, optional

    Returns
    -------
    ShardTable
        With ``trim_status`` per YTID (``ok``, ``permanent`` when the window cannot be cut,
        ``transient`` when it is missing: rerun the transcode), ``duration`` (seconds of real
        audio) and ``short``.

    Raises
    ------
    audiosetflow.errors.MachineError
        On a fault of the machine (a full disk, ...), after recording what was done.

    See Also
    --------
    audiosetflow.audio.codec.trim : the cut itself (sample-exact).
    audiosetflow.audio.features.run_features : the next stage.
    """
    with stage_run("trim", table_in, shard=shard, out=out, logger=logger or log) as run:
        if run.interrupted:  # a killed run may have left half-written clips
            names = [n for y in run.todo for n in (f"{y}.flac", f"{y}.duration", f"{y}.source")]
            shard.clean_temporaries(shard.clips_dir, names)
        for ytid in run.todo:
            run.in_flight[:] = [ytid]
            _trim_one(run, shard, ytid, clip_seconds, keep_intermediate, keep_clips)
        run.in_flight.clear()
    return run.table


def _trim_one(
    run: StageRun, shard: ShardLayout, ytid: str, clip_seconds: float, keep: bool, keep_clips: bool
):
    """Cut one YTID's clip (or find it cut) and record the outcome."""
    row = run.table.row(ytid)
    window = shard.window(ytid)
    made_for = {"start": float(row["start"]), "end": float(row["end"])}
    if window is not None:  # the window that is there is what the clip must come from
        made_for["sample_rate"] = sf.info(str(window)).samplerate
    duration = shard.clip_duration(ytid, **made_for)
    if duration is not None:
        if not keep and window is not None and shard.clip(ytid).exists():
            window.unlink(missing_ok=True)  # e.g. keep_intermediate was true, or a kill came
        short = bool(duration < clip_seconds - 1e-6)
        return run.record(ytid, Status.OK, "reused", duration=duration, short=short)
    if window is None:
        return run.record(ytid, Status.TRANSIENT, "window missing (rerun: --forcerun transcode)")
    seg = {"offset": shard.offset(ytid), "start": made_for["start"], "end": made_for["end"]}
    in_place = not keep_clips and is_in_place(str(row["media"]))
    try:
        res = cut_length(window, clip_seconds=clip_seconds, **seg) if in_place else None
        if res is not None:  # not kept: the record, and the window for the features stage
            write_source_record(shard.clip(ytid), InPlace(
                str(row["media"]), seg["offset"], seg["start"], seg["end"],
                int(made_for["sample_rate"]), float(clip_seconds)))  # fmt: skip
        else:
            res = trim(window, shard.clip(ytid), clip_seconds=clip_seconds, **seg)
    except (AudioError, sf.LibsndfileError, ValueError) as exc:
        if machine_error(exc) is not None:
            raise
        reason = str(exc).replace(f"{window}: ", "")  # the reason, not the path
        return run.record(ytid, Status.PERMANENT, reason)
    shard.write_clip_duration(ytid, res.duration, sample_rate=made_for["sample_rate"],
                              start=made_for["start"], end=made_for["end"])  # fmt: skip
    run.record(ytid, Status.OK, "", duration=res.duration, short=res.short)
    if not keep and shard.clip(ytid).exists():
        window.unlink(missing_ok=True)
