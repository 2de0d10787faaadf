"""Where a YTID's audio comes from: local AudioSet mirrors first, YouTube as the fallback.

``sources:`` in ``config.yaml`` lists them in order; the first that has a YTID wins, and a
YTID whose copy there is broken falls through to the next source that has it:

``tar``
    The public mirror's tar shards (``bal_train00.tar``, ``eval03.tar``, ...), each member
    ``audio/{split}/{YTID}.flac``, already cut to the labelled segment. Members are read in
    place: ffmpeg decodes a member straight from the archive through its ``subfile`` protocol
    (:class:`~audiosetflow.audio.codec.Subfile`), so no clip is ever extracted or copied.
``parquet``
    The same mirror as Parquet: rows with ``video_id`` and ``audio`` (a struct of ``bytes`` and
    ``path``); read by row group. ffmpeg cannot read a Parquet cell, so the clip's bytes are
    written once to the shard's download folder (like a YouTube download).
``folder``
    A folder of files named by ``pattern`` with ``{ytid}`` (and optionally ``{start_ms}``,
    ``{end_ms}``, ``{ext}``): PANNs' ``Y{ytid}.wav``, older downloaders'
    ``{ytid}_{start_ms}_{end_ms}.flac`` (cut) or ``{ytid}.{ext}`` (whole videos). Read in place.
    ``cut``: whether the files are cut to the segment (``true``), whole videos (``false``), or
    decided from each file's duration (``auto``).
``youtube``
    The download stage's yt-dlp route. Leave it out to work offline.

Every source is indexed once (:func:`build_index`, the ``index_sources`` rule): which YTIDs it
has and where (tar member offsets, Parquet row groups, folder file names). Each file's own
index is cached under ``results/sources/cache/`` by path, size and modification time, so that
adding a source indexes only the new files. A shard's download job then looks its YTIDs up
(:func:`lookup`) and seeks straight to them.

A cut clip starts at the segment's start (``{start_ms}`` where the name gives it), so the trim
stage takes exactly ``[start, end)`` as for a YouTube section; a clip shorter than its segment
is flagged ``short`` there, as any other.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import logging
import os
import re
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import pandas as pd

from ..audio.codec import Subfile
from ..errors import InputError, MachineError, machine_error
from ..io import atomic_path

__all__ = [
    "KINDS",
    "INDEX_COLUMNS",
    "needs_youtube",
    "Source",
    "Entry",
    "parse_sources",
    "has_youtube",
    "mirrors",
    "fingerprints",
    "build_index",
    "index_file",
    "write_lookup",
    "lookup_path",
    "lookup",
    "MirrorReader",
    "Clip",
    "ClipError",
    "check_audio",
    "judge_duration",
    "longest_copy",
    "CUT_TOLERANCE",
    "MAX_WHOLE_SECONDS",
]

log_default = logging.getLogger("audiosetflow.sources")

#: The kinds of source, as ``sources[].kind`` spells them.
KINDS: tuple[str, ...] = ("tar", "parquet", "folder", "youtube")
#: Audio files a tar member or folder file may be (by extension, lower case).
AUDIO_EXTS = frozenset(
    {"flac", "wav", "ogg", "oga", "opus", "mp3", "m4a", "aac", "webm", "mka", "mp4", "weba"}
)
#: Columns of the source index (one row per YTID and source that has it).
INDEX_COLUMNS: tuple[str, ...] = (
    "ytid", "source", "origin", "kind", "path", "offset", "size", "row_group", "row",
    "start_ms", "end_ms", "cut", "ext",
)  # fmt: skip
_INDEX_VERSION = "1"
_PLACEHOLDERS = {
    "ytid": r"(?P<ytid>[A-Za-z0-9_-]+?)",
    "start_ms": r"(?P<start_ms>\d+)",
    "end_ms": r"(?P<end_ms>\d+)",
    "ext": r"(?P<ext>[A-Za-z0-9]+)",
}
#: Seconds by which a file may outlast its segment and still count as cut (``cut: auto``).
CUT_SLACK = 0.5


@dataclass(frozen=True)
class Source:
    """One entry of ``sources:``.

    Attributes
    ----------
    kind : {"tar", "parquet", "folder", "youtube"}
    position : int
        Its place in the list (0 is tried first).
    files : tuple of Path
        ``tar``/``parquet``: every file the ``paths`` globs match (sorted, absolute);
        ``folder``: the folder; ``youtube``: none.
    pattern : str
        ``folder``: file names relative to the folder, with ``{ytid}`` and optionally
        ``{start_ms}``, ``{end_ms}``, ``{ext}``.
    cut : bool or None
        Whether the files are cut to the segment; ``None``: decided per file from its duration
        (``cut: auto``). ``tar`` and ``parquet`` mirrors are cut.
    """

    kind: str
    position: int
    files: tuple[Path, ...] = ()
    pattern: str = ""
    cut: bool | None = True

    @property
    def name(self) -> str:
        """``sources[k] (kind)``: how messages name this source."""
        return f"sources[{self.position}] ({self.kind})"

    def origin(self, file: Path | None = None) -> str:
        """What the ledger's ``source`` column says for a clip from ``file`` of this source:
        ``youtube``, ``tar:eval03.tar``, ``parquet:part-0.parquet``, ``folder:/data/panns``."""
        if self.kind == "youtube":
            return "youtube"
        if self.kind == "folder":
            return f"folder:{self.files[0]}"
        return f"{self.kind}:{Path(file).name if file is not None else ''}"

    def regex(self) -> re.Pattern[str]:
        """The ``folder`` pattern as a regular expression over relative paths."""
        out, pos = [], 0
        for m in re.finditer(r"\{([a-z_]+)\}", self.pattern):
            out.append(re.escape(self.pattern[pos : m.start()]))
            out.append(_PLACEHOLDERS[m.group(1)])
            pos = m.end()
        out.append(re.escape(self.pattern[pos:]))
        return re.compile("".join(out) + r"\Z")


def _cut_value(v: Any, where: str) -> bool | None:
    if v in (True, "true", "yes"):
        return True
    if v in (False, "false", "no"):
        return False
    if v in (None, "auto"):
        return None
    raise InputError(f"{where}: cut must be true, false or auto, not {v!r}")


def parse_sources(cfg: Sequence[Mapping[str, Any]] | None) -> list[Source]:
    """Check ``sources:`` and expand its globs; every problem is one line, before any job.

    Parameters
    ----------
    cfg : sequence of mapping, or None
        The ``sources`` list of the config (``None`` or empty: ``[{kind: youtube}]``).

    Returns
    -------
    list of Source
        In the configured order.

    Raises
    ------
    audiosetflow.errors.InputError
        For an unknown kind, a glob that matches no file, a folder that does not exist, a
        pattern without ``{ytid}`` or with an unknown placeholder, or ``youtube`` twice.
    """
    items = list(cfg or [{"kind": "youtube"}])
    out: list[Source] = []
    for k, item in enumerate(items):
        item = dict(item or {})
        kind = str(item.get("kind", ""))
        where = f"config: sources[{k}]"
        if kind not in KINDS:
            raise InputError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if kind == "youtube":
            if any(s.kind == "youtube" for s in out):
                raise InputError(f"{where}: youtube is listed twice")
            out.append(Source("youtube", k, cut=False))
        elif kind in ("tar", "parquet"):
            paths = item.get("paths") or ([item["path"]] if item.get("path") else [])
            if isinstance(paths, str):
                paths = [paths]
            if not paths:
                raise InputError(f"{where} ({kind}): give the files as paths: [...]")
            files: list[Path] = []
            for p in paths:
                p = os.path.expanduser(str(p))
                hits = (
                    sorted(glob.glob(p)) if glob.has_magic(p) else ([p] if Path(p).exists() else [])
                )
                hits = [h for h in hits if Path(h).is_file()]
                if not hits:
                    raise InputError(
                        f"{where} ({kind}): no file matches {p}; fix the path in config.yaml "
                        "or remove the source"
                    )
                files += [Path(h).absolute() for h in hits]
            seen: dict[Path, None] = dict.fromkeys(files)
            out.append(Source(kind, k, tuple(seen), cut=_cut_value(item.get("cut", True), where)))
        else:  # folder
            folder = item.get("path")
            if not folder:
                raise InputError(f"{where} (folder): give the folder as path: ...")
            folder = Path(os.path.expanduser(str(folder)))
            if not folder.is_dir():
                raise InputError(
                    f"{where} (folder): {folder} is not a folder; fix the path in config.yaml "
                    "or remove the source"
                )
            pattern = str(item.get("pattern") or "Y{ytid}.wav")
            names = re.findall(r"\{([^}]*)\}", pattern)
            bad = [n for n in names if n not in _PLACEHOLDERS]
            if "ytid" not in names or bad or names.count("ytid") != 1:
                raise InputError(
                    f"{where} (folder): pattern {pattern!r} must hold {{ytid}} once and no "
                    f"placeholder but {{ytid}}, {{start_ms}}, {{end_ms}}, {{ext}}"
                )
            out.append(
                Source(
                    "folder",
                    k,
                    (folder.absolute(),),
                    pattern,
                    _cut_value(item.get("cut", "auto"), where),
                )  # fmt: skip
            )
    return out


def has_youtube(sources: Sequence[Source]) -> bool:
    """Whether YouTube is one of the sources."""
    return any(s.kind == "youtube" for s in sources)


def fingerprints(sources: Sequence[Source]) -> list[str]:
    """``path size mtime_ns`` of every file (and folder) of the local sources: what changes when
    a file is added, grows or is replaced (files added deeper in a folder's subfolders do not
    change it: ``--forcerun index_sources`` then)."""
    out = []
    for s in mirrors(sources):
        for f in s.files:
            st = f.stat()
            out.append(f"{f}\t{st.st_size}\t{st.st_mtime_ns}")
    return out


def mirrors(sources: Sequence[Source]) -> list[Source]:
    """The sources that are local copies (everything but ``youtube``)."""
    return [s for s in sources if s.kind != "youtube"]


# --------------------------------------------------------------------------------------------
# index


def _empty_index() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in INDEX_COLUMNS})
    return _typed(df)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for c in ("source", "offset", "size", "row_group", "row", "start_ms", "end_ms"):
        df[c] = pd.to_numeric(df[c]).astype("int64")
    df["cut"] = df["cut"].astype("int8")  # 1 cut, 0 whole, -1 auto
    for c in ("ytid", "origin", "kind", "path", "ext"):
        df[c] = df[c].astype(str)
    return df[list(INDEX_COLUMNS)]


def _rows(source: Source, file: Path, entries: Iterable[dict]) -> pd.DataFrame:
    cut = {True: 1, False: 0, None: -1}[source.cut]
    base = {"source": source.position, "origin": source.origin(file), "kind": source.kind,
            "offset": 0, "size": 0, "row_group": -1, "row": -1, "start_ms": -1, "end_ms": -1,
            "cut": cut, "ext": ""}  # fmt: skip
    rows = [{**base, **e} for e in entries]
    if not rows:
        return _empty_index()
    return _typed(pd.DataFrame(rows))


def _index_tar(source: Source, file: Path) -> pd.DataFrame:
    entries = []
    try:
        with tarfile.open(file, mode="r:") as tar:
            try:
                for m in tar:
                    if not m.isfile():
                        continue
                    name = Path(m.name)
                    ext = name.suffix.lstrip(".").lower()
                    if ext not in AUDIO_EXTS:
                        continue
                    entries.append({"ytid": name.stem, "path": str(file),
                                    "offset": m.offset_data, "size": m.size, "ext": ext,
                                    "member": m.name})  # fmt: skip
            except tarfile.ReadError as exc:  # cut off (a partial download): keep what is there
                log_default.warning(
                    "%s: ends inside a member after %d clips (%s); those are indexed, the rest "
                    "is not there: download the file again", file, len(entries), exc,
                )  # fmt: skip
        if entries and not _ends_complete(file):
            log_default.warning(
                "%s: does not end as a complete tar (two zero blocks): cut off? %d clips are "
                "indexed; download the file again", file, len(entries),
            )  # fmt: skip
    except tarfile.ReadError as exc:
        raise InputError(
            f"{file}: not a plain (uncompressed) tar file ({exc}); a tar source must be "
            "readable in place: decompress it once (e.g. gunzip) or list it under another kind"
        ) from None
    for e in entries:
        e.pop("member")
    return _rows(source, file, entries)


def _ends_complete(file: Path) -> bool:
    """Whether a tar file ends with the two zero blocks that close every complete archive."""
    with open(file, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 1024:
            return False
        f.seek(-1024, os.SEEK_END)
        return f.read(1024) == bytes(1024)


def _index_parquet(source: Source, file: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
        if (m := machine_error(exc, str(file))) is not None:
            raise m from exc
        raise InputError(f"{file}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    missing = [c for c in ("video_id", "audio") if c not in names]
    if missing:
        raise InputError(
            f"{file}: no column {missing[0]!r}; a parquet source needs video_id and audio "
            "(a struct of bytes and path)"
        )
    entries = []
    for g in range(pf.num_row_groups):
        ids = pf.read_row_group(g, columns=["video_id"]).column(0).to_pylist()
        for r, y in enumerate(ids):
            if y:
                entries.append({"ytid": str(y), "path": str(file), "row_group": g, "row": r})
    return _rows(source, file, entries)


def _index_folder(source: Source) -> pd.DataFrame:
    """Index a folder source: walk it (into subfolders where the pattern has a ``/``), following
    symbolic links; a link loop or a dangling link is skipped with one warning naming it."""
    folder = source.files[0]
    rx = source.regex()
    deep = "/" in source.pattern
    entries = []

    def skip(path: str, why: str) -> None:
        log_default.warning("%s: %s, skipped (%s)", path, why, source.name)

    def walk(d: Path, rel: str, above: frozenset[tuple[int, int]]) -> None:
        try:
            it = os.scandir(d)
        except OSError as exc:
            if (m := machine_error(exc, str(d))) is not None:
                raise m from exc
            skip(str(d), f"cannot list the folder ({exc.strerror or exc})")
            return
        with it:
            for e in it:
                if e.name.startswith("."):
                    continue
                r = f"{rel}{e.name}"
                try:
                    st = e.stat(follow_symlinks=True)
                except OSError as exc:  # ELOOP, ENOENT through a link, ...
                    if exc.errno == errno.ELOOP:
                        skip(e.path, "a symbolic link loop")
                    elif e.is_symlink() and exc.errno == errno.ENOENT:
                        skip(e.path, f"a dangling link (to {os.readlink(e.path)})")
                    elif (m := machine_error(exc, e.path)) is not None:
                        raise m from exc
                    else:
                        skip(e.path, f"cannot read ({exc.strerror or exc})")
                    continue
                # a folder named like a clip (no "/" in the pattern) is indexed: reading it
                # is then that clip's failure, with the reason
                if deep and stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in above:  # a link back to a folder above it (a -> .)
                        skip(e.path, "a symbolic link loop (back to a folder above it)")
                        continue
                    walk(Path(e.path), r + "/", above | {key})
                    continue
                m = rx.match(r)
                if m is None:
                    continue
                ext = Path(e.name).suffix.lstrip(".").lower()
                if ext not in AUDIO_EXTS:  # yt-dlp's .json, .jpg, .part beside the media
                    continue
                g = m.groupdict()
                entries.append({
                    "ytid": g["ytid"], "path": e.path, "ext": ext,
                    "start_ms": int(g["start_ms"]) if g.get("start_ms") else -1,
                    "end_ms": int(g["end_ms"]) if g.get("end_ms") else -1,
                })  # fmt: skip

    top = folder.stat()
    walk(folder, "", frozenset({(top.st_dev, top.st_ino)}))
    return _rows(source, folder, entries)


def _cache_key(source: Source, file: Path) -> tuple[Path, str]:
    st = file.stat()
    ident = "\t".join([_INDEX_VERSION, source.kind, str(file), source.pattern,
                       str(source.cut), str(st.st_size), str(st.st_mtime_ns)])  # fmt: skip
    return file, hashlib.sha1(ident.encode()).hexdigest()


def index_file(source: Source, file: Path, *, cache_dir: str | Path | None = None) -> pd.DataFrame:
    """The index of one file of ``source`` (a tar, a Parquet file, or the folder).

    Parameters
    ----------
    source : Source
    file : Path
        One of ``source.files``.
    cache_dir : str or Path, optional
        Where each file's index is kept (by path, size and modification time, and for folders
        the pattern): a file indexed before is not read again.

    Returns
    -------
    DataFrame
        :data:`INDEX_COLUMNS`, one row per YTID the file has (the first one where a file has a
        YTID twice).
    """
    file = Path(file)
    cached = None
    if cache_dir is not None:
        _, key = _cache_key(source, file)
        cached = Path(cache_dir) / f"{key}.parquet"
        if cached.exists():
            df = pd.read_parquet(cached)
            df["source"] = source.position
            return _typed(df)
    try:
        if source.kind == "tar":
            df = _index_tar(source, file)
        elif source.kind == "parquet":
            df = _index_parquet(source, file)
        else:
            df = _index_folder(source)
    except OSError as exc:
        if (m := machine_error(exc, str(file))) is not None:
            raise m from exc
        raise InputError(f"{file}: cannot read ({exc})") from None
    df = df.drop_duplicates("ytid", keep="first").reset_index(drop=True)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            df.to_parquet(tmp, index=False)
    return df


def build_index(
    sources: Sequence[Source],
    *,
    out: str | Path,
    cache_dir: str | Path | None = None,
    log: logging.Logger | None = None,
) -> pd.DataFrame:
    """Index every local source (what each has, and where) and write it to ``out``.

    Parameters
    ----------
    sources : sequence of Source
        From :func:`parse_sources`; ``youtube`` has nothing to index.
    out : str or Path
        The index (Parquet), written atomically.
    cache_dir : str or Path, optional
        See :func:`index_file`.
    log : logging.Logger, optional
        One line per file indexed.

    Returns
    -------
    DataFrame
        :data:`INDEX_COLUMNS`: per source, each YTID once (the first file that has it), sorted
        by YTID and then by the order of the sources.

    Notes
    -----
    Beside ``out`` it writes the same rows as a keyed SQLite table (:func:`lookup_path`,
    :func:`write_lookup`): a download job looks its YTIDs up there with a B-tree search each,
    so its lookup costs milliseconds whatever the size of the mirror (the Parquet file is read
    by scanning its ``ytid`` column: 0.4-1.3 s per job with 2 million rows).
    """
    log = log or log_default
    parts = []
    for s in mirrors(sources):
        for f in s.files:
            df = index_file(s, f, cache_dir=cache_dir)
            if len(df):
                log.info("%s %s: %d clips", s.name, f, len(df))
            else:
                log.warning("%s %s: no clip found (member names audio/{split}/{YTID}.flac, or "
                            "the folder's pattern %r)", s.name, f, s.pattern)  # fmt: skip
            parts.append(df)
    index = pd.concat(parts, ignore_index=True) if parts else _empty_index()
    index = index.drop_duplicates(["ytid", "source"], keep="first")
    index = index.sort_values(["ytid", "source"], kind="stable").reset_index(drop=True)
    with atomic_path(out) as tmp:
        index.to_parquet(tmp, index=False)
    write_lookup(index, lookup_path(out))
    log.info("index: %d clips of %d YTIDs in %d local sources", len(index),
             index["ytid"].nunique(), len(mirrors(sources)))  # fmt: skip
    return index


@dataclass(frozen=True)
class Entry:
    """Where one source has one YTID (a row of the index)."""

    ytid: str
    source: int
    origin: str
    kind: str
    path: str
    offset: int
    size: int
    row_group: int
    row: int
    start_ms: int
    end_ms: int
    cut: int
    ext: str

    @property
    def locator(self) -> str:
        """What the shard table's ``media`` column records for a clip read in place:
        ``tar:{path}@{offset}+{size}`` or ``file:{path}`` (a Parquet clip is copied and
        recorded by its file name instead)."""
        if self.kind == "tar":
            return f"tar:{self.path}@{self.offset}+{self.size}"
        return f"file:{self.path}"


def lookup_path(index: str | Path) -> Path:
    """The keyed lookup table written beside the index ``index`` (``index.sqlite``)."""
    return Path(index).with_suffix(".sqlite")


def write_lookup(index: pd.DataFrame, path: str | Path) -> None:
    """Write the rows of ``index`` as an SQLite table keyed by ``(ytid, source)``, atomically.

    A lookup of ``k`` YTIDs then costs ``k`` B-tree searches (:func:`lookup`), not a scan of
    the whole index: a job's lookup does not grow with the mirror.
    """
    import sqlite3

    path = Path(path)
    cols = ", ".join(f"{c} {'INTEGER' if c in _INT_COLUMNS else 'TEXT'}" for c in INDEX_COLUMNS)
    with atomic_path(path) as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            con.execute(f"CREATE TABLE entries ({cols}, PRIMARY KEY (ytid, source)) WITHOUT ROWID")
            marks = ", ".join("?" * len(INDEX_COLUMNS))
            df = index[list(INDEX_COLUMNS)]
            step = 100_000  # rows converted to Python at a time
            for lo in range(0, len(df), step):
                part = df.iloc[lo : lo + step]
                con.executemany(
                    f"INSERT OR IGNORE INTO entries VALUES ({marks})",
                    zip(*(part[c].tolist() for c in INDEX_COLUMNS), strict=True),
                )
            con.commit()
        except sqlite3.Error as exc:
            if (m := machine_error(exc, str(path))) is not None:
                raise m from exc
            raise
        finally:
            con.close()


_INT_COLUMNS = frozenset(
    {"source", "offset", "size", "row_group", "row", "start_ms", "end_ms", "cut"}
)


def _lookup_sqlite(path: Path, wanted: list[str]) -> list[tuple]:
    import sqlite3

    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        rows: list[tuple] = []
        step = 500  # bound the statement's parameters (SQLite allows 999 in old builds)
        for lo in range(0, len(wanted), step):
            part = wanted[lo : lo + step]
            q = ", ".join("?" * len(part))
            rows += con.execute(
                f"SELECT {', '.join(INDEX_COLUMNS)} FROM entries WHERE ytid IN ({q})", part
            ).fetchall()
    finally:
        con.close()
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def lookup(index: str | Path | pd.DataFrame, ytids: Iterable[str]) -> dict[str, list[Entry]]:
    """Each YTID's entries in the index, in the order of the sources (absent: no source has it).

    ``index`` is the index (a DataFrame or its Parquet file) or its keyed lookup table
    (:func:`lookup_path`, a ``.sqlite`` file). Given the Parquet file, the lookup table beside
    it is used where it is at least as new; only the rows of ``ytids`` are read either way,
    and from the lookup table in ``len(ytids)`` key searches (milliseconds at any mirror size).
    """
    wanted = sorted(set(ytids))
    if not wanted:
        return {}
    if not isinstance(index, pd.DataFrame):
        index = Path(index)
        table = index if index.suffix == ".sqlite" else lookup_path(index)
        if table.exists() and (
            table == index or table.stat().st_mtime_ns >= index.stat().st_mtime_ns
        ):
            out: dict[str, list[Entry]] = {}
            for r in _lookup_sqlite(table, wanted):
                out.setdefault(r[0], []).append(Entry(*r))
            return out
        df = pd.read_parquet(index, filters=[("ytid", "in", wanted)])
    else:
        df = index[index["ytid"].isin(wanted)]
    out = {}
    for row in df.sort_values(["ytid", "source"], kind="stable").itertuples(index=False):
        out.setdefault(row.ytid, []).append(Entry(*row))
    return out


def needs_youtube(index: str | Path | None, ytids: Iterable[str]) -> bool:
    """Whether a shard's download job may have to ask YouTube: some of ``ytids`` has no copy
    in the local sources' ``index`` (only those YTIDs' rows are read). Without an index yet
    (it is built by rule index_sources before the job runs), True: the job is held back as
    one that needs YouTube until Snakemake evaluates it again with the index there.

    A YTID whose local copy turns out broken falls through to YouTube inside a job that holds
    no ``youtube`` unit; the fetch budget (:mod:`~audiosetflow.acquisition.budget`) still
    paces it."""
    wanted = set(ytids)
    if not wanted:
        return False
    if index is not None and Path(index).suffix == ".sqlite":  # the keyed lookup: its rows
        index = Path(index).with_suffix(".parquet")  # are those of the Parquet index beside it
    if index is None or not Path(index).exists():
        return True
    return not wanted <= _indexed_ytids(Path(index))


_INDEXED: dict[str, tuple[tuple[int, int, int], frozenset[str]]] = {}


def _indexed_ytids(index: Path) -> frozenset[str]:
    """Every YTID of an index file, read once per process and file version (the main
    Snakemake process asks for every download job: one read of the ``ytid`` column instead of
    one filtered read per shard)."""
    st = index.stat()
    key = (st.st_size, st.st_mtime_ns, st.st_ino)
    hit = _INDEXED.get(str(index))
    if hit is None or hit[0] != key:
        ytids = frozenset(pd.read_parquet(index, columns=["ytid"])["ytid"].astype(str))
        _INDEXED.clear()
        _INDEXED[str(index)] = hit = (key, ytids)
    return hit[1]


def media_input(locator: str) -> Path | Subfile | None:
    """The media of a ``media`` column value that is a locator (:attr:`Entry.locator`), as
    ffmpeg reads it; ``None`` when it is not a locator or its file is gone."""
    if locator.startswith("tar:"):
        path, _, span = locator[4:].rpartition("@")
        start, _, size = span.partition("+")
        sub = Subfile(Path(path), int(start), int(size))
        return sub if sub.is_file() else None
    if locator.startswith("file:"):
        p = Path(locator[5:])
        return p if p.is_file() else None
    return None


# --------------------------------------------------------------------------------------------
# reading and checking a clip


#: errno values that make reading a mirror's file a fault of the machine (the rest: the clip's).
_READ_FAULTS = frozenset({5, 12, 23, 24})  # EIO, ENOMEM, ENFILE, EMFILE
#: Seconds by which a cut copy may outlast its segment (a mirror's clips run a few ms over).
CUT_TOLERANCE = 1.0
#: The longest a whole-video copy may last: no source of an AudioSet segment is longer.
MAX_WHOLE_SECONDS = 12 * 3600.0
_BLOCK = 1 << 16  # bytes (or frames) read or decoded at a time
#: The most audio (uncompressed bytes) a Parquet source's row group may hold: a download job
#: reads one row group at a time, and the rule declares 1000 MB.
MAX_ROW_GROUP_BYTES = 256 << 20


def _kind_of(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return what
    return "a special file"


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes of an open file from ``start``: a tar member
    read in place, in blocks (never the whole member at once)."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        super().__init__()
        self._f, self._start, self._size, self._pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(memoryview(b)[:n]) or 0
        self._pos += got
        return got

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


@dataclass(frozen=True)
class Clip:
    """A local copy of one clip, opened for checking: its size and where its bytes are.

    Attributes
    ----------
    entry : Entry
    size : int
        Bytes of the copy.
    data : bytes or None
        The bytes of a Parquet cell (they are in memory with their row group); ``None`` for a
        tar member or folder file, which are read in blocks from the file itself.
    """

    entry: Entry
    size: int
    data: bytes | None = None

    def open(self) -> BinaryIO:
        """A seekable stream of the copy's bytes (read in blocks, never whole)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        fd = _open_regular(self.entry.path)
        f = os.fdopen(fd, "rb", buffering=0)
        if self.entry.kind == "tar":
            return cast(BinaryIO, io.BufferedReader(_Window(f, self.entry.offset, self.size)))
        return cast(BinaryIO, io.BufferedReader(f))

    def head(self, n: int = 12) -> bytes:
        """The first ``n`` bytes (what :func:`sniff` reads)."""
        with self.open() as f:
            return f.read(n)


def _open_regular(path: str) -> int:
    """Open ``path`` for reading without blocking (a FIFO never hangs the job) and make sure
    that what was opened is a regular file; the descriptor, or :class:`ClipError`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ClipError(f"{path}: a symbolic link loop") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ClipError(f"{path} is {_kind_of(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class MirrorReader:
    """Opens clips of the local sources for one job (keeps the last Parquet row group)."""

    def __init__(self) -> None:
        self._group: tuple[str, int] | None = None
        self._audio: Any = None  # the audio column of the row group read last

    def open(self, entry: Entry) -> Clip:
        """A clip's copy (a tar member, a Parquet cell or a folder's file), checked to be a
        regular file that holds it; its bytes are read only as :meth:`Clip.open` streams them.

        Raises
        ------
        ClipError
            The copy is no regular file (a FIFO, a device, a folder, a link loop).
        audiosetflow.errors.MachineError
            On a fault of the machine while reading.
        OSError
            When the file is gone or cannot be read.
        """
        try:
            if entry.kind == "parquet":
                data = self._parquet_bytes(entry)
                return Clip(entry, len(data), data)
            fd = _open_regular(entry.path)
            try:
                total = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if entry.kind == "tar":
                if total < entry.offset + entry.size:
                    raise OSError(f"{entry.path}: ends inside the member of {entry.ytid}")
                return Clip(entry, entry.size)
            return Clip(entry, total)
        except MemoryError:
            raise MachineError(errno.ENOMEM, entry.path, "out of memory reading") from None
        except OSError as exc:
            # a file of the mirror that is gone or unreadable (EACCES, ENOENT) is that clip's
            # problem, recorded; a disk or memory fault is the machine's and stops the job
            if exc.errno in _READ_FAULTS and (m := machine_error(exc, entry.path)) is not None:
                raise m from exc
            raise

    def read(self, entry: Entry) -> bytes:
        """The whole bytes of a clip (for small clips and tests; the download stage streams
        with :meth:`open`)."""
        clip = self.open(entry)
        if clip.data is not None:
            return clip.data
        with clip.open() as f:
            return f.read()

    def _parquet_bytes(self, entry: Entry) -> bytes:
        import pyarrow.parquet as pq

        key = (entry.path, entry.row_group)
        if self._group != key:
            self._audio = None  # the last group goes before the next is read
            pf = pq.ParquetFile(entry.path)
            md = pf.metadata.row_group(entry.row_group)
            size = sum(
                md.column(c).total_uncompressed_size
                for c in range(md.num_columns)
                if md.column(c).path_in_schema.split(".")[0] == "audio"
            )
            if size > MAX_ROW_GROUP_BYTES:
                raise ClipError(
                    f"row group {entry.row_group} of {entry.path} holds {size / 2**20:.0f} MiB "
                    f"of audio, more than a download job reads at once "
                    f"({MAX_ROW_GROUP_BYTES >> 20} MiB): rewrite the file with smaller row "
                    "groups"
                )
            self._audio = pf.read_row_group(entry.row_group, columns=["audio"]).column("audio")
            self._group = key
        # only this clip's cell becomes Python bytes; the row group stays in Arrow memory
        cell = self._audio[entry.row].as_py() if self._audio is not None else None
        if isinstance(cell, Mapping):
            data = cell.get("bytes")
        else:
            data = cell
        return bytes(data or b"")

    @staticmethod
    def parquet_ext(entry: Entry, data: bytes) -> str:
        """The extension to write a Parquet clip under: from its bytes, else ``bin``."""
        return sniff(data) or "bin"


def sniff(data: bytes) -> str:
    """The audio container ``data`` starts with (an extension), or ``""``."""
    head = data[:12]
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    return ""


class ClipError(RuntimeError):
    """A local copy of a clip is unusable (empty, not audio, truncated, too long, no regular
    file); the message says which, in the words the ledger records."""


def check_audio(
    data: bytes | Clip,
    *,
    name: str,
    media: Path | Subfile | None = None,
    max_seconds: float | None = None,
) -> float:
    """Decode a clip completely, in blocks, and return its seconds of audio.

    FLAC, WAV and Ogg are decoded in this process (libsndfile, about 6 ms for 10 s of 48-kHz
    24-bit FLAC), from a stream of the copy; other containers by ffmpeg, from ``media`` where
    given (an MP4 whose index comes last cannot be read from a pipe), else from the bytes.
    Memory does not grow with the copy's length.

    Parameters
    ----------
    data : bytes or Clip
        The whole file, or a copy opened by :meth:`MirrorReader.open` (read in blocks).
    name : str
        Its name, for ffmpeg's messages.
    media : Path or Subfile, optional
        Where the same bytes are, for ffmpeg.
    max_seconds : float, optional
        Decoding stops once the copy is known to last longer (its header says so, or that much
        has been decoded); the value returned is then a lower bound above ``max_seconds``
        (:func:`judge_duration` refuses it).

    Returns
    -------
    float
        Seconds of audio.

    Raises
    ------
    ClipError
        ``empty``, ``not audio``, or ``does not decode: ...`` (a truncated or corrupt file).
    """
    import soundfile as sf

    clip = data if isinstance(data, Clip) else None
    if clip is not None and clip.size == 0 or clip is None and not data:
        raise ClipError("empty file")
    head = clip.head() if clip is not None else cast(bytes, data)[:12]
    kind = sniff(head)
    if kind in ("flac", "wav", "ogg"):
        stream = clip.open() if clip is not None else io.BytesIO(cast(bytes, data))
        try:
            with stream, sf.SoundFile(stream) as f:
                want, sr = f.frames, f.samplerate
                if max_seconds is not None and want / sr > max_seconds:
                    return want / sr  # the header says it: nothing to decode
                got = 0
                limit = None if max_seconds is None else int(max_seconds * sr) + 1
                for block in f.blocks(blocksize=_BLOCK, dtype="int16", always_2d=True):
                    got += len(block)
                    if limit is not None and got > limit:
                        return got / sr
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise ClipError(f"does not decode: {_sf_reason(exc)}") from None
        if got == 0:
            raise ClipError("does not decode: no samples")
        if want > 0 and got < want:
            raise ClipError(f"truncated: {got / sr:.2f} s of {want / sr:.2f} s decode")
        return got / sr
    if not kind:
        raise ClipError("not audio (no known audio format)")
    return _ffmpeg_seconds(data, name=name, media=media, max_seconds=max_seconds)


def _sf_reason(exc: BaseException) -> str:
    msg = str(exc)
    if "Error :" in msg:
        msg = msg.split("Error :", 1)[1]
    msg = re.sub(r"Error opening <[^>]*>: ", "", msg)
    return msg.strip().rstrip(".").lower() or type(exc).__name__


def _ffmpeg_seconds(
    data: bytes | Clip,
    *,
    name: str,
    media: Path | Subfile | None = None,
    max_seconds: float | None = None,
) -> float:
    """Seconds of audio ffmpeg decodes (mono 8 kHz, counted block by block as they come)."""
    import subprocess
    import tempfile
    import threading

    from ..tools import ffmpeg_exe

    rate = 8000
    src = str(media.absolute()) if media is not None else "pipe:0"
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i", src,
           "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar", str(rate)]  # fmt: skip
    if max_seconds is not None:  # a little more than the limit: enough to tell it is too long
        cmd += ["-t", f"{max_seconds + 1:.3f}"]
    cmd.append("pipe:1")
    got = 0
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE if media is None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err,
            )  # fmt: skip
        except OSError as exc:  # ffmpeg could not be started: the machine's fault, not the clip's
            raise MachineError(exc.errno or errno.ENOMEM, name, f"starting ffmpeg: {exc}") from exc
        feeder = None
        if media is None:

            def feed() -> None:
                assert proc.stdin is not None
                try:
                    if isinstance(data, Clip):
                        with data.open() as f:
                            while block := f.read(_BLOCK):
                                proc.stdin.write(block)
                    else:
                        proc.stdin.write(data)
                except (BrokenPipeError, ValueError, OSError):
                    pass  # ffmpeg stopped reading: its exit status says why
                finally:
                    try:
                        proc.stdin.close()
                    except OSError:
                        pass

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
        assert proc.stdout is not None
        with proc.stdout:
            while block := proc.stdout.read(_BLOCK):
                got += len(block)
        rc = proc.wait()
        if feeder is not None:
            feeder.join()
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - 4096))
        stderr = err.read()
    if rc < 0:  # killed (the OOM killer, a signal): not the clip's fault
        raise MachineError(errno.ENOMEM, name, f"ffmpeg killed by signal {-rc}")
    if rc != 0 or not got:
        lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines()]
        lines = [ln for ln in lines if ln]
        raise ClipError(f"does not decode: {lines[-1] if lines else 'no samples'}")
    return got / 2 / rate


def is_cut(entry: Entry, *, seconds: float, start: float, end: float) -> bool:
    """Whether a clip of ``seconds`` from ``entry`` is cut to the segment ``[start, end)``:
    as configured, or (``cut: auto``) when its name gives ``{start_ms}`` or it lasts no longer
    than the segment plus :data:`CUT_SLACK`."""
    if entry.cut >= 0:
        return bool(entry.cut)
    if entry.start_ms >= 0:  # the name says where the clip starts: a cut clip
        return True
    return seconds <= (end - start) + CUT_SLACK


def longest_copy(entry: Entry, *, start: float, end: float) -> float:
    """The longest a copy from ``entry`` of the segment ``[start, end)`` can plausibly last:
    the segment plus :data:`CUT_TOLERANCE` where the copy is known to be cut (``cut: true``, or
    its name gives ``{start_ms}``), else :data:`MAX_WHOLE_SECONDS`."""
    if entry.cut == 1 or (entry.cut < 0 and entry.start_ms >= 0):
        return (end - start) + CUT_TOLERANCE
    return MAX_WHOLE_SECONDS


def judge_duration(entry: Entry, *, seconds: float, start: float, end: float) -> bool:
    """Whether a copy of ``seconds`` is a cut copy of ``[start, end)`` (``True``) or a whole
    video (``False``); :class:`ClipError` when it can be neither.

    The rule: a cut copy lasts at most the segment plus :data:`CUT_TOLERANCE`; a whole video
    lasts longer than the segment's start (else none of the segment is in it) and at most
    :data:`MAX_WHOLE_SECONDS`. A copy outside that is not the segment's source (a mislabelled
    or damaged file): the clip's failure, and the next source is tried.
    """
    seg = end - start
    cut = is_cut(entry, seconds=seconds, start=start, end=end)
    if cut and seconds > seg + CUT_TOLERANCE:
        raise ClipError(
            f"too long: {seconds:.2f} s or more for a cut copy of a {seg:.2f} s segment "
            f"(at most {seg + CUT_TOLERANCE:.2f} s); if the files are whole videos, set the "
            "source's cut: false"
        )
    if not cut and seconds > MAX_WHOLE_SECONDS:
        raise ClipError(
            f"too long: {seconds:.0f} s or more, longer than any source of a segment can be "
            f"(a whole video lasts at most {MAX_WHOLE_SECONDS / 3600:.0f} h)"
        )
    if not cut and seconds <= start:
        raise ClipError(
            f"source shorter than segment start: the whole video lasts {seconds:.2f} s, the "
            f"segment starts at {start:.2f} s"
        )
    return cut


def clip_offset(entry: Entry, *, cut: bool, start: float) -> float:
    """Seconds of the source video at which the clip's first sample lies: the segment start for
    a cut clip (``{start_ms}`` where the file name gives it), 0 for a whole video."""
    if not cut:
        return 0.0
    return entry.start_ms / 1000.0 if entry.start_ms >= 0 else float(start)
