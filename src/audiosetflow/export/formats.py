"""Per-part files of each export format, written one clip at a time.

Each writer takes the part's clips (:func:`~audiosetflow.export.clips.iter_clips`, sorted by
YTID) and writes its file under a temporary name, renamed into place at the end. The bytes
depend only on the clips (tar members and gzip headers carry no time stamps), so that a part
made again from the same clips is the same file, and a part's content key
(:func:`content_key`) says whether it changed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shlex
import sys
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..io import atomic_path
from ..shard import Layout
from .clips import FATE_COLUMNS, ExportClip

__all__ = [
    "HF_SCHEMA",
    "FATE_SCHEMA",
    "LHOTSE_KINDS",
    "write_webdataset_part",
    "write_hf_part",
    "write_lhotse_part",
    "write_fates_part",
    "content_key",
    "lhotse_records",
]

#: Clips per Parquet row group of the Hugging Face form (about 20 MB of FLAC each): a part is
#: written a row group at a time.
HF_ROW_GROUP = 64

#: The Hugging Face form's columns.
HF_SCHEMA = pa.schema(
    [
        ("ytid", pa.string()),
        ("video_id", pa.string()),
        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("split", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("labels", pa.list_(pa.string())),
        ("label_names", pa.list_(pa.string())),
        ("label_indices", pa.list_(pa.int32())),
        ("source", pa.string()),
    ]
)

#: The columns of the fates (``clips.parquet`` less ``measured``).
FATE_SCHEMA = pa.schema(
    [
        ("ytid", pa.string()),
        ("split", pa.string()),
        ("shard", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("labels", pa.string()),
        ("status", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("source", pa.string()),
        ("duration", pa.float64()),
        ("short", pa.bool_()),
        ("sample_rate", pa.int32()),
        ("frames", pa.int64()),
        ("sha256", pa.string()),
        ("part", pa.string()),
    ]
)
assert tuple(FATE_SCHEMA.names) == FATE_COLUMNS

#: The lhotse manifests, as icefall's AudioSet recipe names them (``{kind}`` and split).
LHOTSE_KINDS: tuple[str, ...] = ("recordings", "supervisions", "cuts")


def _hf_features() -> dict[str, Any]:
    """The ``datasets`` feature types of :data:`HF_SCHEMA` (stored in the file's metadata,
    where ``datasets`` reads them: the ``audio`` column is an ``Audio`` feature)."""
    value = {"string": {"dtype": "string", "_type": "Value"}}
    return {
        "ytid": value["string"],
        "video_id": value["string"],
        "audio": {"_type": "Audio"},
        "split": value["string"],
        "start": {"dtype": "float64", "_type": "Value"},
        "end": {"dtype": "float64", "_type": "Value"},
        "labels": {"feature": value["string"], "_type": "List"},
        "label_names": {"feature": value["string"], "_type": "List"},
        "label_indices": {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "List"},
        "source": value["string"],
    }


def _key_line(c: ExportClip) -> bytes:
    return json.dumps([c.meta(), c.sha256], sort_keys=True).encode() + b"\n"


def content_key(clips: Iterable[ExportClip]) -> str:
    """A SHA-256 over what a part holds: each clip's YTID, segment, labels, source and the
    SHA-256 of its audio, in YTID order. Two parts with the same key write the same files."""
    h = hashlib.sha256()
    for c in clips:
        h.update(_key_line(c))
    return h.hexdigest()


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_webdataset_part(clips: Iterable[ExportClip], out: str | Path) -> dict[str, Any]:
    """One WebDataset tar shard: ``{ytid}.flac`` and ``{ytid}.json`` for every clip.

    The key is the YTID (letters, digits, ``-`` and ``_``: never a dot), so that the
    ``webdataset`` library groups the two members into one sample, and the tar is also a
    ``tar`` source of the workflow (members named ``{YTID}.flac``).

    Returns
    -------
    dict
        ``clips`` (how many) and ``key`` (:func:`content_key`).
    """
    h, n = hashlib.sha256(), 0
    with atomic_path(out) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for c in clips:
            _tar_add(tar, f"{c.ytid}.flac", c.data)
            meta = json.dumps(c.meta(), ensure_ascii=False, sort_keys=True).encode()
            _tar_add(tar, f"{c.ytid}.json", meta)
            h.update(_key_line(c))
            n += 1
    return {"clips": n, "key": h.hexdigest()}


def _hf_table(rows: list[ExportClip]) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "ytid": [c.ytid for c in rows],
            "video_id": [c.ytid for c in rows],
            "audio": [{"bytes": c.data, "path": f"{c.ytid}.flac"} for c in rows],
            "split": [c.split for c in rows],
            "start": [c.start for c in rows],
            "end": [c.end for c in rows],
            "labels": [list(c.mids) for c in rows],
            "label_names": [list(c.names) for c in rows],
            "label_indices": [list(c.indices) for c in rows],
            "source": [c.source for c in rows],
        },
        schema=HF_SCHEMA,
    )


def write_hf_part(clips: Iterable[ExportClip], out: str | Path) -> dict[str, Any]:
    """One Parquet file of the Hugging Face form: a row per clip (:data:`HF_SCHEMA`), the
    FLAC bytes in ``audio.bytes``; written :data:`HF_ROW_GROUP` clips at a time. ``video_id``
    repeats the YTID under the public Parquet mirror's column name, so that the folder is a
    ``parquet`` source of the workflow too.

    Returns
    -------
    dict
        ``clips`` and ``key``.
    """
    meta = {b"huggingface": json.dumps({"info": {"features": _hf_features()}}).encode()}
    schema = HF_SCHEMA.with_metadata(meta)
    h, n = hashlib.sha256(), 0
    with atomic_path(out) as tmp:
        writer = pq.ParquetWriter(tmp, schema, compression="none")
        try:
            batch: list[ExportClip] = []
            for c in clips:
                batch.append(c)
                h.update(_key_line(c))
                n += 1
                if len(batch) == HF_ROW_GROUP:
                    writer.write_table(_hf_table(batch).replace_schema_metadata(meta))
                    batch = []
            if batch or n == 0:
                writer.write_table(_hf_table(batch).replace_schema_metadata(meta))
        finally:
            writer.close()
    return {"clips": n, "key": h.hexdigest()}


def lhotse_records(c: ExportClip, *, root: str | Path) -> dict[str, dict[str, Any]]:
    """The lhotse recording, supervision and cut of one clip, as ``lhotse`` serialises them.

    The recording's id is the YTID and its audio the workflow's clip file (an absolute path),
    or where the clip was not kept (``audio.keep_clips: false``) the command ``python -m
    audiosetflow clip PATH``, which cuts it again from the mirror (a lhotse ``command`` source);
    the supervision covers the whole clip and carries the labels in ``audio_event`` as
    icefall's AudioSet recipe reads them (the ``class_labels_indices.csv`` indices joined by
    ``;``), with the MIDs and names beside them.
    """
    clip = Layout(root).clip(c.split, c.ytid).resolve()
    if clip.is_file():
        source = {"type": "file", "channels": [0], "source": str(clip)}
    else:  # not kept (audio.keep_clips: false): cut again from the mirror on each load
        cmd = shlex.join([sys.executable, "-m", "audiosetflow", "clip", str(clip)])
        source = {"type": "command", "channels": [0], "source": cmd}
    duration = c.audio.duration
    recording = {
        "id": c.ytid,
        "sources": [source],
        "sampling_rate": c.audio.sample_rate,
        "num_samples": c.audio.frames,
        "duration": duration,
        "channel_ids": [0],
    }
    supervision = {
        "id": c.ytid,
        "recording_id": c.ytid,
        "start": 0.0,
        "duration": duration,
        "channel": 0,
        "custom": {
            "audio_event": ";".join(str(i) for i in c.indices if i >= 0),
            "audio_event_mids": ";".join(c.mids),
            "audio_event_names": ";".join(c.names),
            "ytid": c.ytid,
            "split": c.split,
            "segment_start": c.start,
            "segment_end": c.end,
            "source": c.source,
        },
    }
    cut = {
        "id": c.ytid,
        "start": 0.0,
        "duration": duration,
        "channel": 0,
        "supervisions": [supervision],
        "recording": recording,
        "type": "MonoCut",
    }
    return {"recordings": recording, "supervisions": supervision, "cuts": cut}


def write_lhotse_part(
    clips: Iterable[ExportClip], *, root: str | Path, out: dict[str, str | Path]
) -> dict[str, Any]:
    """The part's lines of the three lhotse manifests (``out``: a path per
    :data:`LHOTSE_KINDS`), each gzip-compressed JSON lines; the per-split manifests are these
    parts concatenated (:func:`~audiosetflow.export.collect.join_gzip`).

    Returns
    -------
    dict
        ``clips`` and ``key``.
    """
    h, n = hashlib.sha256(), 0
    with ExitStack() as stack:
        tmps = {k: stack.enter_context(atomic_path(out[k])) for k in LHOTSE_KINDS}
        files = {}
        for k in LHOTSE_KINDS:
            raw = tmps[k].open("wb")
            stack.callback(raw.close)
            files[k] = stack.enter_context(
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            )
        for c in clips:
            for k, rec in lhotse_records(c, root=root).items():
                files[k].write(json.dumps(rec, ensure_ascii=False).encode() + b"\n")
            h.update(_key_line(c))
            n += 1
        for f in files.values():
            f.close()
    return {"clips": n, "key": h.hexdigest()}


def write_fates_part(rows: Iterator[dict], out: str | Path) -> int:
    """The part's rows of ``clips.parquet`` (:data:`FATE_SCHEMA`); returns how many."""
    data = {c: [] for c in FATE_SCHEMA.names}
    for r in rows:
        for c in FATE_SCHEMA.names:
            data[c].append(r[c])
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pydict(data, schema=FATE_SCHEMA), tmp)
    return len(data["ytid"])
