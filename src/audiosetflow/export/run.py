"""The export's jobs, as the workflow's rules run them (``workflow/rules/export.smk``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..errors import InputError
from ..io import atomic_write_text
from ..shard import Layout
from . import collect
from .clips import LabelNames, fate_rows, iter_clips, read_tables
from .formats import (
    LHOTSE_KINDS,
    write_fates_part,
    write_hf_part,
    write_lhotse_part,
    write_webdataset_part,
)

__all__ = ["export_part", "export_join"]

_log = logging.getLogger("audiosetflow.export")


def export_part(
    *,
    fmt: str,
    tables: Sequence[str | Path],
    classes: str | Path,
    part: str,
    outputs: Mapping[str, str | Path],
    log: logging.Logger | None = None,
) -> dict[str, Any]:
    """Write one part of one format.

    Parameters
    ----------
    fmt : {"webdataset", "hf", "lhotse", "fates"}
        What to write.
    tables : sequence of path
        The part's workflow shard tables (``features.tsv``); the results folder (where the
        clips are) is the one they are in.
    classes : path
        ``class_labels_indices.csv`` (label names and indices).
    part : str
        ``{split}/{NNNN}``, for ``clips.parquet``'s ``part`` column and the log.
    outputs : mapping
        The rule's outputs: ``info`` (the part's sidecar) and, by format, ``tar``,
        ``parquet``, ``recordings``/``supervisions``/``cuts`` or ``fates``.
    log : Logger, optional

    Returns
    -------
    dict
        ``clips`` and (formats) ``key``.
    """
    log = log or _log
    if not tables:
        raise ValueError(f"export part {part} without shards")
    root = Layout.locate(tables[0]).layout.root
    shard_tables = read_tables(tables)
    if fmt == "fates":
        n = write_fates_part(fate_rows(shard_tables, root=root, part=part), outputs["fates"])
        log.info("export fates %s: %d YTIDs", part, n)
        return {"clips": n}
    clips = iter_clips(shard_tables, root=root, labels=LabelNames.read(classes))
    if fmt == "webdataset":
        info = write_webdataset_part(clips, outputs["tar"])
        files = {"tar": outputs["tar"]}
    elif fmt == "hf":
        info = write_hf_part(clips, outputs["parquet"])
        files = {"parquet": outputs["parquet"]}
    elif fmt == "lhotse":
        files = {k: outputs[k] for k in LHOTSE_KINDS}
        info = write_lhotse_part(clips, root=root, out=files)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    collect.write_part_info(outputs["info"], fmt=fmt, files=files, part=part, **info)
    log.info("export %s %s: %d clips, content key %s", fmt, part, info["clips"], info["key"])
    return info


def _hf_files(parquets: Sequence[str | Path], folder: Path) -> dict[str, list[tuple[str, int]]]:
    """The hf form's files by split (``data/{split}-{NNNN}.parquet``), each with its clips
    (from its footer), paths relative to the folder of the README."""
    files: dict[str, list[tuple[str, int]]] = {}
    for p in parquets:
        split = Path(p).stem.rsplit("-", 1)[0]
        try:
            n = pq.ParquetFile(p).metadata.num_rows
        except OSError as exc:
            raise InputError(f"{p}: not a Parquet file: {exc}") from None
        rel = Path(os.path.relpath(p, folder)).as_posix()
        files.setdefault(split, []).append((rel, n))
    return files


def export_join(
    *,
    what: str,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, str | Path],
    settings: Mapping[str, Any],
    keep: Sequence[str | Path] = (),
    log: logging.Logger | None = None,
) -> None:
    """Write one of the export's joined files.

    Parameters
    ----------
    what : {"lhotse", "hf", "clips", "croissant"}
        ``lhotse``: a split's three manifests from its parts (inputs ``recordings``,
        ``supervisions``, ``cuts``); ``hf``: the README (input ``parquet``: every part);
        ``clips``: ``clips.parquet`` (inputs ``fates``, ``eval_scores``); ``croissant``:
        ``croissant.json`` (inputs ``clips`` and, with the hf form, ``readme``).
    inputs, outputs : mapping
        The rule's inputs and outputs.
    settings : mapping
        The ``export:`` config section.
    keep : sequence of path
        ``clips``: every per-part file the plan makes; the others under the export's
        per-part folders are removed (:func:`~.collect.prune`).
    log : Logger, optional
    """
    log = log or _log
    if what == "lhotse":
        for k in LHOTSE_KINDS:
            n = collect.join_gzip(inputs[k], outputs[k])
            log.info("export lhotse: %s from %d parts, %d bytes", outputs[k], len(inputs[k]), n)
    elif what == "hf":
        files = _hf_files(inputs["parquet"], Path(outputs["readme"]).parent)
        text = collect.hf_readme(name=settings["name"], files=files)
        atomic_write_text(outputs["readme"], text)
        log.info(
            "export hf: README, clips by split %s",
            {s: sum(n for _, n in fs) for s, fs in files.items()},
        )
    elif what == "clips":
        scores = inputs.get("eval_scores") or []
        measured = collect.measured_ytids(scores[0] if scores else None)
        counts = collect.write_clips(inputs["fates"], outputs["clips"], measured=measured)
        log.info("export clips: %s", counts)
        for f in collect.prune(Path(outputs["clips"]).parent, keep):
            log.info("export: removed %s (no part of this plan makes it)", f)
    elif what == "croissant":
        doc = collect.croissant(
            name=settings["name"],
            root=Path(outputs["croissant"]).parent,
            hf=bool(inputs.get("readme")),
            clips=inputs["clips"],
            license_url=settings["license"],
            url=settings["url"],
        )
        collect.write_croissant(outputs["croissant"], doc)
        log.info("export croissant: %s", outputs["croissant"])
    else:
        raise ValueError(f"unknown export step {what!r}")
