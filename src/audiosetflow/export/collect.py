"""What the export makes from all its parts: the per-split lhotse manifests, the Hugging Face
form's README, ``clips.parquet`` and the Croissant description.

Each reads one part at a time (a part's lines, its Parquet footer, its fates): memory does not
grow with the number of clips.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..io import atomic_path, atomic_write_text
from .formats import FATE_SCHEMA, HF_SCHEMA

__all__ = [
    "prune",
    "join_gzip",
    "write_part_info",
    "read_part_info",
    "measured_ytids",
    "write_clips",
    "hf_readme",
    "croissant",
    "write_croissant",
    "CLIPS_SCHEMA",
]

#: ``clips.parquet``: the fates and ``measured`` (the YTID is among the test clips that every
#: figure of the run was measured on: the rows of ``results/metrics/eval_scores.parquet``).
CLIPS_SCHEMA = FATE_SCHEMA.append(pa.field("measured", pa.bool_()))


def prune(export: str | Path, keep: Iterable[str | Path]) -> list[Path]:
    """Remove the per-part files under ``export`` that the current plan does not make (parts
    of an earlier, longer plan; formats no longer in ``export.formats``), so that a glob over
    ``webdataset/*.tar`` or ``hf/data/*.parquet`` finds no stale part. Only files of the
    per-part folders (``webdataset/``, ``hf/data/``, ``parts/{split}/``) are looked at, never
    hidden ones (a job's temporaries); returns the files removed."""
    export = Path(export)
    wanted = {Path(p).resolve() for p in keep}
    folders = [export / "webdataset", export / "hf" / "data"]
    parts = export / "parts"
    if parts.is_dir():
        folders += [d for d in parts.iterdir() if d.is_dir()]
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.name.startswith(".") or not f.is_file() or f.resolve() in wanted:
                continue
            f.unlink()
            removed.append(f)
    return removed


def join_gzip(parts: Sequence[str | Path], out: str | Path) -> int:
    """Concatenate gzip files into one (a gzip file may hold several members: every reader,
    Python's ``gzip`` and so lhotse's included, reads them as one stream). Nothing is
    decompressed; returns the bytes written."""
    n = 0
    with atomic_path(out) as tmp, tmp.open("wb") as dst:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
        n = dst.tell()
    return n


def write_part_info(out: str | Path, *, fmt: str, files: Mapping[str, str | Path], **info) -> None:
    """The sidecar of a part of one format: its files (name and bytes), clips and content
    key (``audiosetflow.export.formats.content_key``)."""
    doc = {
        "format": fmt,
        **info,
        "files": {k: {"path": str(p), "bytes": Path(p).stat().st_size} for k, p in files.items()},
    }
    atomic_write_text(out, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def read_part_info(path: str | Path) -> dict[str, Any]:
    """A sidecar written by :func:`write_part_info` (a bad one is one line naming it)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not an export part's sidecar: {exc}") from None


def measured_ytids(eval_scores: str | Path | None) -> set[str]:
    """The YTIDs every figure was measured on: the rows of ``eval_scores.parquet`` (the test
    clips scored by every model); empty without it."""
    if not eval_scores:
        return set()
    try:
        col = pq.read_table(eval_scores, columns=["ytid"]).column("ytid")
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise InputError(f"{eval_scores}: not the workflow's eval scores: {exc}") from None
    return {str(y) for y in col.to_pylist()}


def write_clips(
    parts: Sequence[str | Path], out: str | Path, *, measured: Iterable[str] = ()
) -> dict[str, int]:
    """``clips.parquet``: every part's fates, one row group per part, with ``measured``.

    Returns
    -------
    dict
        Rows by status, and ``measured``.
    """
    wanted = set(measured)
    counts: dict[str, int] = {}
    with atomic_path(out) as tmp:
        writer = pq.ParquetWriter(tmp, CLIPS_SCHEMA)
        try:
            for p in parts:
                t = pq.read_table(p, schema=FATE_SCHEMA)
                flags = pa.array([y in wanted for y in t.column("ytid").to_pylist()])
                t = t.append_column(CLIPS_SCHEMA.field("measured"), flags)
                writer.write_table(t)
                for s in t.column("status").to_pylist():
                    counts[s] = counts.get(s, 0) + 1
                counts["measured"] = counts.get("measured", 0) + sum(flags.to_pylist())
        finally:
            writer.close()
    return counts


def hf_readme(*, name: str, files: Mapping[str, Sequence[tuple[str, int]]]) -> str:
    """The Hugging Face form's ``README.md``: a ``configs:`` block naming every split with
    clips and its files (``data/{split}-{NNNN}.parquet``, paths relative to the folder, each
    with its clip count), the features, and the clip counts.

    A file without clips is left out (``datasets`` cannot read a Parquet file with no rows),
    and so is a split without any.
    """
    splits = {s: sum(n for _, n in fs) for s, fs in files.items()}
    kept = {s: [f for f, n in fs if n > 0] for s, fs in files.items() if splits[s] > 0}
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, paths in kept.items():
        lines += [f"  - split: {split}", "    path:"]
        lines += [f"    - {p}" for p in paths]
    lines += ["dataset_info:", "  features:"]
    for f in HF_SCHEMA:
        if f.name == "audio":
            lines += ["  - name: audio", "    dtype: audio"]
        elif pa.types.is_list(f.type):
            inner = "int32" if pa.types.is_integer(f.type.value_type) else "string"
            lines += [f"  - name: {f.name}", "    list: " + inner]
        else:
            dtype = "float64" if pa.types.is_floating(f.type) else "string"
            lines += [f"  - name: {f.name}", f"    dtype: {dtype}"]
    lines += [
        "---",
        "",
        f"# {name}",
        "",
        "AudioSet clips exported by audiosetflow: one row per clip with features (`ytid`, and "
        "`video_id` as the public Parquet mirror names it), the FLAC bytes in `audio`, the "
        "labels as MIDs (`labels`), display names (`label_names`) and indices of "
        "`class_labels_indices.csv` (`label_indices`), the segment (`start`, "
        "`end`) and where the clip came from (`source`).",
        "",
        "| split | clips |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in splits.items()],
        "",
        'Load it with `datasets.load_dataset("path/to/this/folder")`.',
        "",
    ]
    return "\n".join(lines)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def croissant(
    *, name: str, root: str | Path, hf: bool, clips: str | Path, license_url: str, url: str
) -> dict[str, Any]:
    """A Croissant 1.0 JSON-LD description of the export: ``clips.parquet`` (a file object
    with its SHA-256) and, with the Hugging Face form, its Parquet files (a file set) as the
    record set ``clips`` (YTID, split, segment, labels, source and the FLAC bytes)."""
    root = Path(root)
    clips = Path(clips)
    context = {
        "@language": "en",
        "@vocab": "https://schema.org/",
        "citeAs": "cr:citeAs",
        "column": "cr:column",
        "conformsTo": "dct:conformsTo",
        "cr": "http://mlcommons.org/croissant/",
        "rai": "http://mlcommons.org/croissant/RAI/",
        "data": {"@id": "cr:data", "@type": "@json"},
        "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
        "dct": "http://purl.org/dc/terms/",
        "equivalentProperty": "cr:equivalentProperty",
        "samplingRate": "cr:samplingRate",
        "examples": {"@id": "cr:examples", "@type": "@json"},
        "extract": "cr:extract",
        "field": "cr:field",
        "fileProperty": "cr:fileProperty",
        "fileObject": "cr:fileObject",
        "fileSet": "cr:fileSet",
        "format": "cr:format",
        "includes": "cr:includes",
        "isLiveDataset": "cr:isLiveDataset",
        "jsonPath": "cr:jsonPath",
        "key": "cr:key",
        "md5": "cr:md5",
        "parentField": "cr:parentField",
        "path": "cr:path",
        "recordSet": "cr:recordSet",
        "references": "cr:references",
        "regex": "cr:regex",
        "repeated": "cr:repeated",
        "replace": "cr:replace",
        "sc": "https://schema.org/",
        "separator": "cr:separator",
        "source": "cr:source",
        "subField": "cr:subField",
        "transform": "cr:transform",
    }
    distribution: list[dict[str, Any]] = [
        {
            "@type": "cr:FileObject",
            "@id": "clips.parquet",
            "name": "clips.parquet",
            "description": "Every selected YTID with its fate (ok, or the failure class, "
            "stage and reason), source, duration, sample rate, the SHA-256 of its clip, "
            "and whether every figure was measured on it.",
            "contentUrl": clips.relative_to(root).as_posix(),
            "encodingFormat": "application/x-parquet",
            "sha256": _sha256(clips),
        }
    ]

    def field(rs: str, col: str, dtype: str, desc: str, file: str, fileset: bool) -> dict:
        src = {"fileSet" if fileset else "fileObject": {"@id": file}, "extract": {"column": col}}
        return {
            "@type": "cr:Field",
            "@id": f"{rs}/{col}",
            "name": f"{rs}/{col}",
            "description": desc,
            "dataType": dtype,
            "source": src,
        }

    fates = [
        ("ytid", "sc:Text", "YouTube ID"),
        ("split", "sc:Text", "AudioSet split"),
        ("start", "sc:Float", "segment start (s)"),
        ("end", "sc:Float", "segment end (s)"),
        ("labels", "sc:Text", "label MIDs, comma-separated"),
        ("status", "sc:Text", "ok, permanent, auth, transient or pending"),
        ("stage", "sc:Text", "the stage that failed (empty when ok)"),
        ("reason", "sc:Text", "why it failed"),
        ("source", "sc:Text", "where the clip came from"),
        ("sha256", "sc:Text", "SHA-256 of the clip's FLAC"),
        ("measured", "sc:Boolean", "every figure was measured on this clip"),
    ]
    record_sets = [
        {
            "@type": "cr:RecordSet",
            "@id": "fates",
            "name": "fates",
            "description": "One record per selected YTID.",
            "field": [field("fates", c, t, d, "clips.parquet", False) for c, t, d in fates],
        }
    ]
    if hf:
        distribution.append(
            {
                "@type": "cr:FileSet",
                "@id": "hf-parquet",
                "name": "hf-parquet",
                "description": "The Hugging Face form: one row per clip with features.",
                "encodingFormat": "application/x-parquet",
                "includes": "hf/data/*.parquet",
            }
        )
        cols = [
            ("ytid", "sc:Text", "YouTube ID"),
            ("split", "sc:Text", "AudioSet split"),
            ("start", "sc:Float", "segment start (s)"),
            ("end", "sc:Float", "segment end (s)"),
            ("source", "sc:Text", "where the clip came from"),
        ]
        fields = [field("clips", c, t, d, "hf-parquet", True) for c, t, d in cols]
        for col, desc in (("labels", "label MIDs"), ("label_names", "label display names")):
            f = field("clips", col, "sc:Text", desc, "hf-parquet", True)
            f["repeated"] = True
            fields.append(f)
        audio = field("clips", "audio", "sc:AudioObject", "the clip (FLAC)", "hf-parquet", True)
        audio["source"]["extract"] = {"column": "audio"}
        audio["source"]["transform"] = {"jsonPath": "bytes"}
        record_sets.append(
            {
                "@type": "cr:RecordSet",
                "@id": "clips",
                "name": "clips",
                "description": "One record per clip with features.",
                "field": fields,
            }
        )
    return {
        "@context": context,
        "@type": "sc:Dataset",
        "name": name,
        "description": "AudioSet clips and labels exported by audiosetflow.",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "citeAs": "Gemmeke et al., Audio Set: An ontology and human-labeled dataset for "
        "audio events, ICASSP 2017",
        "license": license_url,
        "url": url,
        "version": "1.0.0",
        "distribution": distribution,
        "recordSet": record_sets,
    }


def write_croissant(out: str | Path, doc: Mapping[str, Any]) -> None:
    """Write a Croissant description (JSON-LD)."""
    atomic_write_text(out, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
