"""Small I/O helpers: every file is written under a temporary name and renamed into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

__all__ = ["atomic_path", "atomic_write_text", "write_tsv", "write_tsv_parts", "read_tsv"]


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary name starts with ``.`` and ends with ``.tmp`` plus ``suffix`` (default: the
    suffix of ``path``, so tools that guess formats from the extension still work). On an
    exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sfx = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{sfx}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_tsv(path: str | Path, df: pd.DataFrame) -> None:
    """Write a DataFrame as a tab-separated file atomically, without the index."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def write_tsv_parts(path: str | Path, parts: Iterable[pd.DataFrame]) -> None:
    """Write consecutive row blocks of one table as one tab-separated file atomically: the
    same file :func:`write_tsv` writes from their concatenation, with memory for one block.

    Raises
    ------
    ValueError
        A block's columns differ from the first block's, or there is no block.
    """
    columns = None
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        for part in parts:
            if columns is None:
                columns = list(part.columns)
            elif list(part.columns) != columns:
                raise ValueError(f"{path}: a block has columns {list(part.columns)}, not {columns}")
            part.to_csv(fh, sep="\t", index=False, header=fh.tell() == 0)
        if columns is None:
            raise ValueError(f"{path}: no rows block to write")


def read_tsv(path: str | Path, **kwargs) -> pd.DataFrame:
    """Read a tab-separated file written by :func:`write_tsv`; YTIDs stay strings."""
    dtype = {"ytid": str, "reason": str, **kwargs.pop("dtype", {})}
    return pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=False, **kwargs)
