"""The clips of one export part, read one at a time from the workflow's shard tables.

An export *part* is a run of consecutive workflow shards of one split (:func:`part_groups`),
so that a part holds about ``export.clips_per_part`` selected YTIDs. Every format's per-part
file is made from the same part, and a part is rewritten only when one of its shards' tables
changed (Snakemake reruns a part's job when its inputs are newer than its outputs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..audio.codec import AudioError
from ..errors import InputError
from ..metadata import MetadataError, read_class_labels
from ..shard import STAGES, Layout, ShardTable, Status
from .audio import ClipAudio, clip_flac_bytes, clip_info

__all__ = [
    "ExportClip",
    "LabelNames",
    "part_groups",
    "part_name",
    "read_tables",
    "iter_clips",
    "fate_rows",
    "FATE_COLUMNS",
]


def part_name(part: int | str) -> str:
    """The four-digit name of a part number (``3`` -> ``"0003"``)."""
    return f"{int(part):04d}"


def part_groups(shards: Sequence[int], *, shard_size: int, clips_per_part: int) -> list[list[int]]:
    """Split a split's shard numbers into export parts of consecutive shards.

    Parameters
    ----------
    shards : sequence of int
        The split's workflow shards, in order.
    shard_size : int
        YTIDs per workflow shard (config ``shard_size``, or more where ``max_shards`` caps
        the split's shards: :meth:`audiosetflow.plan.Plan.clips_per_shard`).
    clips_per_part : int
        About how many selected YTIDs a part should hold (config ``export.clips_per_part``).

    Returns
    -------
    list of list of int
        Each part's shards: ``max(1, round(clips_per_part / shard_size))`` shards a part.
    """
    per = max(1, round(clips_per_part / max(1, shard_size)))
    ordered = list(shards)
    return [ordered[i : i + per] for i in range(0, len(ordered), per)]


@dataclass(frozen=True)
class LabelNames:
    """Display name and index (``class_labels_indices.csv``) of every MID."""

    names: Mapping[str, str]
    indices: Mapping[str, int]

    @classmethod
    def read(cls, path: str | Path) -> LabelNames:
        """Read ``class_labels_indices.csv`` (a bad line is one error naming file and line)."""
        try:
            df = read_class_labels(path)
        except MetadataError as exc:
            raise InputError(str(exc)) from None
        return cls(
            dict(zip(df["mid"], df["display_name"], strict=True)),
            {m: int(i) for m, i in zip(df["mid"], df["index"], strict=True)},
        )

    def name(self, mid: str) -> str:
        return self.names.get(mid, mid)


@dataclass(frozen=True)
class ExportClip:
    """One clip with features, as every format exports it."""

    ytid: str
    split: str
    start: float
    end: float
    mids: tuple[str, ...]
    names: tuple[str, ...]
    indices: tuple[int, ...]
    source: str
    data: bytes
    audio: ClipAudio

    @property
    def sha256(self) -> str:
        """SHA-256 of the clip's FLAC bytes (hex)."""
        return hashlib.sha256(self.data).hexdigest()

    def meta(self) -> dict:
        """The clip's description (the WebDataset ``.json``)."""
        return {
            "ytid": self.ytid,
            "split": self.split,
            "segment": {"start": self.start, "end": self.end},
            "labels": list(self.mids),
            "label_names": list(self.names),
            "label_indices": list(self.indices),
            "source": self.source,
            "sample_rate": self.audio.sample_rate,
            "duration": self.audio.duration,
        }


def read_tables(paths: Sequence[str | Path]) -> list[ShardTable]:
    """The part's shard tables (each stage's columns), in the given order.

    Raises
    ------
    InputError
        When a file is not a shard table (one line naming it).
    """
    out = []
    for p in paths:
        try:
            out.append(ShardTable.read(p))
        except ValueError as exc:
            raise InputError(str(exc)) from None
    return out


def _mids(labels: str) -> tuple[str, ...]:
    return tuple(m for m in str(labels).split(",") if m)


def _read(root: str | Path, split: str, ytid: str) -> tuple[bytes, ClipAudio]:
    """A clip's bytes and header; a missing or unreadable clip is one line naming it."""
    path = Layout(root).clip(split, ytid)
    try:
        data = clip_flac_bytes(root=root, split=split, ytid=ytid)
        return data, clip_info(data)
    except FileNotFoundError:
        raise InputError(
            f"{path}: clip of {ytid} is gone though its features were made; run again with "
            "--forcerun trim to cut it anew"
        ) from None
    except AudioError as exc:  # read in place: the mirror's copy moved or does not decode
        raise InputError(str(exc)) from None
    except ValueError as exc:
        raise InputError(f"{path}: {exc}; run again with --forcerun trim") from None


def iter_clips(
    tables: Sequence[ShardTable], *, root: str | Path, labels: LabelNames
) -> Iterator[ExportClip]:
    """Every clip with features of the part's tables, sorted by YTID, its bytes read one clip
    at a time (memory holds one clip and the part's table rows, never all the audio).

    Raises
    ------
    InputError
        When the clip file of a YTID with features is gone or unreadable (one line naming
        the file and how to make it again).
    """
    rows = []
    for t in tables:
        df = t.df[t.is_("features", Status.OK)]
        rows += df[["ytid", "split", "start", "end", "labels", "source"]].to_dict("records")
    for r in sorted(rows, key=lambda r: r["ytid"]):
        ytid, split = str(r["ytid"]), str(r["split"])
        data, audio = _read(root, split, ytid)
        mids = _mids(r["labels"])
        yield ExportClip(
            ytid=ytid,
            split=split,
            start=float(r["start"]),
            end=float(r["end"]),
            mids=mids,
            names=tuple(labels.name(m) for m in mids),
            indices=tuple(labels.indices.get(m, -1) for m in mids),
            source=str(r["source"]),
            data=data,
            audio=audio,
        )


#: Columns of ``clips.parquet`` (and of each part's fates), in order; ``measured`` is added
#: when the parts are joined (:func:`~audiosetflow.export.collect.write_clips`).
FATE_COLUMNS: tuple[str, ...] = (
    "ytid", "split", "shard", "start", "end", "labels", "status", "stage", "reason",
    "source", "duration", "short", "sample_rate", "frames", "sha256", "part",
)  # fmt: skip


def fate_rows(tables: Sequence[ShardTable], *, root: str | Path, part: str) -> Iterator[dict]:
    """One row per selected YTID of the part (:data:`FATE_COLUMNS`), sorted by YTID: ``ok``
    with the clip's sample rate, frames and SHA-256, or the failure class, the stage that
    failed and its reason.

    Raises
    ------
    InputError
        As :func:`iter_clips`, for a clip with features whose file is gone.
    """
    rows = []
    for t in tables:
        rows += t.df.to_dict("records")
    for r in sorted(rows, key=lambda r: r["ytid"]):
        ytid, split = str(r["ytid"]), str(r["split"])
        status, stage, reason = Status.OK.value, "", ""
        for s in STAGES:
            st = Status(r[f"{s}_status"])
            if st is not Status.OK:
                status, stage = st.value, s
                reason = r[f"{s}_reason"] or ("not reached" if st is Status.PENDING else "")
                break
        row = {
            "ytid": ytid, "split": split, "shard": int(r["shard"]), "start": float(r["start"]),
            "end": float(r["end"]), "labels": str(r["labels"]), "status": status,
            "stage": stage, "reason": reason, "source": str(r["source"]),
            "duration": float(r["duration"]), "short": bool(r["short"]), "sample_rate": None,
            "frames": None, "sha256": None, "part": part,
        }  # fmt: skip
        if status == Status.OK.value:
            data, info = _read(root, split, ytid)
            row.update(
                sample_rate=info.sample_rate,
                frames=info.frames,
                sha256=hashlib.sha256(data).hexdigest(),
            )
        yield row
