"""Readers for the official AudioSet metadata files, with one-line errors naming file and line.

Files handled:

* segment CSVs (``balanced_train_segments.csv``, ``eval_segments.csv``,
  ``unbalanced_train_segments.csv``): three ``#`` header lines, then
  ``YTID, start_seconds, end_seconds, "mid1,mid2"``;
* ``class_labels_indices.csv``: ``index,mid,display_name``;
* ``qa_true_counts.csv``: per label, how many segments were rated and how many rated true;
* ``ontology.json``: list of ``{"id", "name", ...}`` entries.

The CSVs are read as UTF-8; a leading byte-order mark (as some editors write) is skipped.

Every YTID is checked against ``[A-Za-z0-9_-]{11}`` so that it can never name a path outside the
results folder, nor be read as an option by a subprocess (it is only ever used as a file *name*
below a folder, never as a bare argument).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

__all__ = [
    "MetadataError",
    "YTID_PATTERN",
    "Label",
    "check_ytid",
    "read_segments",
    "read_class_labels",
    "read_qa_counts",
    "read_ontology",
    "resolve_labels",
    "label_slug",
    "write_segments",
]

YTID_PATTERN = re.compile(r"[A-Za-z0-9_-]{11}")
_MID_PATTERN = re.compile(r"/[a-z]/[0-9a-z_]+")
_SEGMENT_HEADER = ("YTID", "start_seconds", "end_seconds", "positive_labels")


class MetadataError(ValueError):
    """A metadata file is malformed; the message is ``file:line: what is wrong``."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Label:
    """A target label resolved against the class list.

    Attributes
    ----------
    mid : str
        Freebase machine id, e.g. ``/m/04rlf``.
    name : str
        Display name, e.g. ``Music``.
    index : int
        Column index in ``class_labels_indices.csv``.
    slug : str
        File-system safe name used in paths and wildcards, e.g. ``music``.
    """

    mid: str
    name: str
    index: int
    slug: str


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """Open a metadata CSV for reading: UTF-8, a leading byte-order mark skipped, lines split as
    by ``newline=""``. Bytes that are not UTF-8 give a :class:`MetadataError` naming the line."""
    try:
        fh = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise MetadataError(path, None, f"cannot open: {exc.strerror}") from exc
    with fh:
        try:
            yield fh
        except UnicodeDecodeError:
            raise _not_utf8(path) from None


def _not_utf8(path: Path) -> MetadataError:
    """The error for a file that is not UTF-8, with the line of its first bad bytes (only ever
    computed on this error path, so reading stays one pass over decoded text)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Line breaks as the text reader counts them (newline=""): \n, \r\n and a lone \r.
        cr, lf = data.count(b"\r", 0, exc.start), data.count(b"\n", 0, exc.start)
        line = 1 + cr + lf - data.count(b"\r\n", 0, exc.start)
        col = exc.start - max(data.rfind(b"\n", 0, exc.start), data.rfind(b"\r", 0, exc.start))
        bad = data[exc.start : exc.end]
        return MetadataError(
            path, line, f"not UTF-8 text: bytes {bad!r} at byte {col} of the line; save it as UTF-8"
        )
    return MetadataError(path, None, "not UTF-8 text; save it as UTF-8")


def check_ytid(ytid: str) -> bool:
    """Return whether ``ytid`` is a well-formed YouTube id (11 of ``[A-Za-z0-9_-]``)."""
    return YTID_PATTERN.fullmatch(ytid) is not None


def label_slug(name: str) -> str:
    """File-system and wildcard safe slug of a label name: ``"Male speech, man speaking"`` ->
    ``"male_speech_man_speaking"``."""
    slug = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    if not slug:
        raise ValueError(f"label name {name!r} gives an empty slug")
    return slug


def read_segments(
    path: str | Path,
    *,
    known_mids: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Read an AudioSet segment CSV.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    known_mids : iterable of str, optional
        When given, every label must be one of these MIDs.

    Returns
    -------
    pandas.DataFrame
        One row per segment, in file order, with columns ``ytid`` (str), ``start`` and ``end``
        (float64 seconds) and ``labels`` (str, comma-separated MIDs without quotes), plus
        ``line`` (int, 1-based line number in the file, for error messages downstream).

    Raises
    ------
    MetadataError
        On a bad header, malformed YTID, unparsable or negative times, ``start >= end``, unknown
        or malformed MID, a YTID listed twice, or bytes that are not UTF-8; the message names
        file and line.
    """
    path = Path(path)
    known = set(known_mids) if known_mids is not None else None
    ytids: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    labels: list[str] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    ytid_ok = YTID_PATTERN.fullmatch
    mid_ok = _MID_PATTERN.fullmatch
    header_seen = False
    checked_mids: set[str] = set()
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if line.startswith("#"):
                cols = tuple(c.strip() for c in line[1:].split(","))
                if cols and cols[0] == "YTID":
                    if cols != _SEGMENT_HEADER:
                        raise MetadataError(
                            path,
                            lineno,
                            f"bad header {line!r}, expected '# {', '.join(_SEGMENT_HEADER)}'",
                        )
                    header_seen = True
                continue
            if not header_seen:
                raise MetadataError(
                    path,
                    lineno,
                    "bad header: data before the '# YTID, start_seconds, end_seconds, "
                    "positive_labels' line (is this an AudioSet segment CSV?)",
                )
            parts = line.split(",", 3)
            if len(parts) != 4:
                raise MetadataError(
                    path, lineno, f"expected 4 fields 'YTID, start, end, \"labels\"', got {line!r}"
                )
            ytid = parts[0].strip()
            if ytid_ok(ytid) is None:
                raise MetadataError(
                    path, lineno, f"malformed YTID {ytid!r}: must match [A-Za-z0-9_-]{{11}}"
                )
            try:
                start = float(parts[1])
                end = float(parts[2])
            except ValueError:
                raise MetadataError(
                    path,
                    lineno,
                    f"start/end are not numbers: {parts[1].strip()!r}, {parts[2].strip()!r}",
                ) from None
            if not (np.isfinite(start) and np.isfinite(end)) or start < 0:
                raise MetadataError(path, lineno, f"start/end out of range: {start}, {end}")
            if start >= end:
                raise MetadataError(path, lineno, f"start >= end ({start} >= {end}) for {ytid}")
            lab = parts[3].strip()
            if len(lab) >= 2 and lab[0] == '"' and lab[-1] == '"':
                lab = lab[1:-1]
            if not lab:
                raise MetadataError(path, lineno, f"no labels for {ytid}")
            for mid in lab.split(","):
                if mid in checked_mids:
                    continue
                if mid_ok(mid) is None:
                    raise MetadataError(path, lineno, f"malformed MID {mid!r} for {ytid}")
                if known is not None and mid not in known:
                    raise MetadataError(
                        path, lineno, f"unknown MID {mid!r} for {ytid} (not in the class list)"
                    )
                checked_mids.add(mid)
            prev = seen.get(ytid)
            if prev is not None:
                raise MetadataError(
                    path, lineno, f"YTID {ytid} listed twice (first on line {prev})"
                )
            seen[ytid] = lineno
            ytids.append(ytid)
            starts.append(start)
            ends.append(end)
            labels.append(lab)
            lines.append(lineno)
    if not header_seen:
        raise MetadataError(
            path, None, "bad header: no '# YTID, start_seconds, end_seconds, positive_labels' line"
        )
    return pd.DataFrame(
        {
            "ytid": pd.Series(ytids, dtype=object),
            "start": np.asarray(starts, dtype=np.float64),
            "end": np.asarray(ends, dtype=np.float64),
            "labels": pd.Series(labels, dtype=object),
            "line": np.asarray(lines, dtype=np.int64),
        }
    )


def write_segments(path: str | Path, segments: pd.DataFrame, *, created: str = "") -> None:
    """Write segments in the official AudioSet CSV format (three ``#`` lines, ``, `` separators).

    ``segments`` needs ``ytid``, ``start``, ``end`` and ``labels`` (comma-separated MIDs).
    Written under a temporary name and renamed.
    """
    path = Path(path)
    n_labels = sum(len(s.split(",")) for s in segments["labels"])
    uniq = len({m for s in segments["labels"] for m in s.split(",")})
    rows = [
        f"# Segments csv created {created or 'by audiosetflow'}",
        f"# num_ytids={len(segments)}, num_segs={len(segments)}, "
        f"num_unique_labels={uniq}, num_positive_labels={n_labels}",
        "# " + ", ".join(_SEGMENT_HEADER),
    ]
    for y, s, e, lab in segments[["ytid", "start", "end", "labels"]].itertuples(index=False):
        rows.append(f'{y}, {s:.3f}, {e:.3f}, "{lab}"')
    _atomic_write_text(path, "\n".join(rows) + "\n")


def read_class_labels(path: str | Path) -> pd.DataFrame:
    """Read ``class_labels_indices.csv``.

    Returns
    -------
    pandas.DataFrame
        Columns ``index`` (int), ``mid`` (str), ``display_name`` (str).
    """
    path = Path(path)
    out = []
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["index", "mid", "display_name"]:
            raise MetadataError(path, 1, f"bad header {header!r}, expected index,mid,display_name")
        seen: set[str] = set()
        for row in reader:
            lineno = reader.line_num
            if not row:
                continue
            if len(row) != 3:
                raise MetadataError(path, lineno, f"expected 3 fields, got {len(row)}: {row!r}")
            try:
                idx = int(row[0])
            except ValueError:
                raise MetadataError(path, lineno, f"index {row[0]!r} is not an integer") from None
            mid, name = row[1].strip(), row[2].strip()
            if _MID_PATTERN.fullmatch(mid) is None:
                raise MetadataError(path, lineno, f"malformed MID {mid!r}")
            if mid in seen:
                raise MetadataError(path, lineno, f"MID {mid} listed twice")
            seen.add(mid)
            out.append((idx, mid, name))
    if not out:
        raise MetadataError(path, None, "no classes listed")
    return pd.DataFrame(out, columns=["index", "mid", "display_name"])


def read_qa_counts(path: str | Path, *, class_labels: pd.DataFrame) -> pd.DataFrame:
    """Read the label-quality file ``qa_true_counts.csv``.

    The documented format is one row per label with the label, how many of its segments were
    rated, and how many were rated true. The header ``label_id,num_rated,num_true`` is expected
    (``index`` or ``mid`` are accepted for the first column); the label is a class index or a MID.

    Returns
    -------
    pandas.DataFrame
        Columns ``mid``, ``num_rated``, ``num_true``, ``ratio`` (num_true / num_rated, NaN when
        nothing was rated).
    """
    path = Path(path)
    by_index = dict(zip(class_labels["index"], class_labels["mid"], strict=True))
    mids = set(class_labels["mid"])
    out = []
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        norm = [h.strip().lower() for h in header] if header else []
        if (
            len(norm) != 3
            or norm[0] not in {"label_id", "index", "mid"}
            or norm[1:]
            != [
                "num_rated",
                "num_true",
            ]
        ):
            raise MetadataError(
                path, 1, f"bad header {header!r}, expected label_id,num_rated,num_true"
            )
        for row in reader:
            lineno = reader.line_num
            if not row:
                continue
            if len(row) != 3:
                raise MetadataError(path, lineno, f"expected 3 fields, got {len(row)}: {row!r}")
            key = row[0].strip()
            if key.lstrip("-").isdigit():
                mid = by_index.get(int(key))
                if mid is None:
                    raise MetadataError(path, lineno, f"unknown label index {key}")
            elif key in mids:
                mid = key
            else:
                raise MetadataError(path, lineno, f"unknown label {key!r}")
            try:
                rated, true = int(row[1]), int(row[2])
            except ValueError:
                raise MetadataError(path, lineno, f"counts are not integers: {row[1:]!r}") from None
            if rated < 0 or true < 0 or true > rated:
                raise MetadataError(
                    path, lineno, f"impossible counts num_rated={rated}, num_true={true}"
                )
            out.append((mid, rated, true))
    df = pd.DataFrame(out, columns=["mid", "num_rated", "num_true"])
    with np.errstate(invalid="ignore", divide="ignore"):
        df["ratio"] = np.where(df["num_rated"] > 0, df["num_true"] / df["num_rated"], np.nan)
    return df


def read_ontology(path: str | Path) -> dict[str, dict]:
    """Read ``ontology.json`` into a dict ``mid -> entry``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MetadataError(path, None, f"cannot open: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise MetadataError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) and "id" in e for e in data):
        raise MetadataError(path, None, "expected a list of objects with an 'id'")
    return {e["id"]: e for e in data}


def resolve_labels(
    wanted: Sequence[str],
    *,
    class_labels: pd.DataFrame,
    source: str = "config.yaml: labels",
) -> list[Label]:
    """Resolve label display names or MIDs against the class list.

    Matching is exact on MID, then case-insensitive on display name.

    Raises
    ------
    ValueError
        For an unknown label, naming it and suggesting close display names.
    """
    by_mid = {m: (i, n) for i, m, n in class_labels.itertuples(index=False)}
    by_name = {n.lower(): (i, m, n) for i, m, n in class_labels.itertuples(index=False)}
    out: list[Label] = []
    for item in wanted:
        key = str(item).strip()
        if key in by_mid:
            idx, name = by_mid[key]
            mid = key
        elif key.lower() in by_name:
            idx, mid, name = by_name[key.lower()]
        else:
            import difflib

            close = difflib.get_close_matches(key, list(class_labels["display_name"]), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{source}: unknown label {key!r} (not a display name or MID){hint}")
        lab = Label(mid=mid, name=name, index=int(idx), slug=label_slug(name))
        if any(o.mid == lab.mid for o in out):
            raise ValueError(f"{source}: label {key!r} listed twice")
        out.append(lab)
    slugs = [o.slug for o in out]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"{source}: two labels map to the same file name: {slugs}")
    return out


def _atomic_write_text(path: Path, text: str) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, text)
