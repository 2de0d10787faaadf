"""Small HTML helpers for the report pages: escaped tables, embedded images and audio.

Everything a page shows is inside the page (``data:`` URIs), so that the single-file Snakemake
report (``--report results/report.html``) carries it.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "esc",
    "data_uri",
    "img",
    "audio",
    "link",
    "table",
    "fmt_num",
    "STYLE",
    "SORT_SCRIPT",
]

#: Scoped styles of the report pages (``.asf`` wraps every page and fragment).
STYLE = """
.asf { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 14px;
  line-height: 1.45; color: #1f2328; max-width: 72rem; }
.asf h1 { font-size: 1.5rem; margin: 0.2rem 0 0.6rem; font-weight: 650; }
.asf h2 { font-size: 1.15rem; margin: 1.4rem 0 0.4rem; font-weight: 650;
  border-bottom: 1px solid #d0d7de; padding-bottom: 0.15rem; }
.asf h3 { font-size: 1rem; margin: 0.9rem 0 0.3rem; font-weight: 600; }
.asf p { margin: 0.3rem 0 0.6rem; }
.asf p.note { color: #57606a; font-size: 0.85rem; }
.asf table { border-collapse: collapse; margin: 0.3rem 0 0.8rem; font-size: 0.85rem;
  width: auto; }
.asf th, .asf td { border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; text-align: left;
  vertical-align: middle; }
.asf th { background: #f3f5f7; font-weight: 600; }
.asf table.kv td:first-child { background: #f3f5f7; font-weight: 600; white-space: nowrap; }
.asf td.num, .asf th.num { text-align: right; font-variant-numeric: tabular-nums; }
.asf td.nowrap { white-space: nowrap; }
.asf tr.best td { background: #eef6ee; }
.asf td.bad { color: #b3261e; }
.asf img { max-width: 100%; height: auto; margin: 0.3rem 0 0.6rem; }
.asf audio { height: 2rem; width: 16rem; vertical-align: middle; }
.asf code { font-size: 0.85em; background: #f3f5f7; padding: 0 0.2em; border-radius: 3px; }
.asf .cols { display: flex; flex-wrap: wrap; gap: 0 2rem; align-items: flex-start; }
.asf table.sortable th { cursor: pointer; user-select: none; }
.asf table.sortable th[data-dir="asc"]::after { content: " \\25B2"; }
.asf table.sortable th[data-dir="desc"]::after { content: " \\25BC"; }
"""

#: The click handler of a sortable table's header cells (an ``onclick`` attribute, so that it
#: also works where the page is inserted as HTML, as on the Snakemake report's landing page,
#: which runs no ``<script>`` of it; it needs nothing from outside). A click sorts the rows by
#: that column, ascending then descending: by the number at the start of each cell's text
#: (thousands separators ignored) where there is one, else by the text; numbers before text.
#: It reads the cells' ``textContent`` only and moves the existing rows: no HTML is built.
SORT_SCRIPT = (
    "var th=this,t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,"
    "d=th.getAttribute('data-dir')==='asc'?'desc':'asc';"
    "Array.prototype.forEach.call(th.parentNode.cells,function(c){c.removeAttribute('data-dir')});"
    "th.setAttribute('data-dir',d);"
    "function k(r){var s=r.cells[i]?r.cells[i].textContent.trim():'',"
    "n=parseFloat(s.replace(/,/g,''));return isNaN(n)?[1,s.toLowerCase()]:[0,n]}"
    "var rs=Array.prototype.slice.call(b.rows).map(function(r,j){return [k(r),j,r]});"
    "rs.sort(function(x,y){var a=x[0],c=y[0],o=a[0]-c[0]||(a[1]<c[1]?-1:a[1]>c[1]?1:0);"
    "return (d==='asc'?o:-o)||x[1]-y[1]});"
    "rs.forEach(function(x){b.appendChild(x[2])});"
)


def esc(v) -> str:
    """HTML-escaped text of a value."""
    return html.escape("" if v is None else str(v), quote=True)


def data_uri(path: str | Path | bytes, mime: str) -> str:
    """The file (or bytes) as a ``data:`` URI (base64)."""
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def img(path: str | Path | bytes, alt: str, *, width: str | None = None) -> str:
    """An ``<img>`` with the PNG (a file, or its bytes) embedded."""
    style = f' style="width:{esc(width)}"' if width else ""
    return f'<img src="{data_uri(path, "image/png")}" alt="{esc(alt)}"{style}>'


def audio(path: str | Path | bytes, mime: str = "audio/flac") -> str:
    """An ``<audio controls>`` player with the file (or bytes) embedded."""
    return f'<audio controls preload="none" src="{data_uri(path, mime)}"></audio>'


def link(url: str, text: str) -> str:
    """A link that opens in a new tab (the report itself stays open)."""
    return f'<a href="{esc(url)}" target="_blank" rel="noopener">{esc(text)}</a>'


def fmt_num(v, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` decimals for floats, thousands separators for
    integers, ``n/a`` for missing values; anything else as text."""
    if v is None or v is pd.NA:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, numbers.Real):
        return "n/a" if math.isnan(float(v)) else f"{float(v):.{digits}f}"
    return str(v)


def table(
    df: pd.DataFrame,
    *,
    headers: Mapping[str, str] | None = None,
    formats: Mapping[str, Callable[[object], str]] | None = None,
    raw: Sequence[str] = (),
    numeric: Sequence[str] | None = None,
    row_class: Callable[[pd.Series], str] | None = None,
    table_id: str | None = None,
    header: bool = True,
    nowrap: Sequence[str] = (),
    sortable: bool = False,
) -> str:
    """An HTML table of a DataFrame (no index).

    Parameters
    ----------
    df : DataFrame
    headers : mapping, optional
        Column name to header text (default: the column name).
    formats : mapping, optional
        Column name to a function giving the cell's text (escaped afterwards unless the
        column is in ``raw``); numbers default to :func:`fmt_num`.
    raw : sequence of str
        Columns whose (formatted) values are HTML already.
    numeric : sequence of str, optional
        Right-aligned columns (default: the numeric dtypes).
    row_class : callable, optional
        A row's CSS class (e.g. ``"best"``), or ``""``.
    table_id : str, optional
        The table's ``id``.
    header : bool
        False: no header row (a table of ``key, value`` rows).
    nowrap : sequence of str
        Columns whose cells never wrap.
    sortable : bool
        Clicking a header cell sorts the rows by that column (:data:`SORT_SCRIPT`).
    """
    headers = dict(headers or {})
    formats = dict(formats or {})
    if numeric is None:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    numeric = set(numeric)
    tid = f' id="{esc(table_id)}"' if table_id else ""
    kv = "" if header else ' class="kv"'
    if sortable and header:
        kv = ' class="sortable"'
    click = f' onclick="{esc(SORT_SCRIPT)}" title="sort"' if sortable and header else ""
    out = [f"<table{tid}{kv}>"]
    if header:
        out.append("<thead><tr>")
        for c in df.columns:
            cls = ' class="num"' if c in numeric else ""
            out.append(f"<th{cls}{click}>{esc(headers.get(c, c))}</th>")
        out.append("</tr></thead>")
    out.append("<tbody>")
    for _, row in df.iterrows():
        rc = row_class(row) if row_class else ""
        out.append(f'<tr class="{esc(rc)}">' if rc else "<tr>")
        for c in df.columns:
            v = row[c]
            if c in formats:
                text = formats[c](v)
            elif isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_)):
                text = fmt_num(v)
            else:
                text = "" if v is None else str(v)
            cell = text if c in raw else esc(text)
            classes = " ".join(
                k for k, on in (("num", c in numeric), ("nowrap", c in nowrap)) if on
            )
            cls = f' class="{classes}"' if classes else ""
            out.append(f"<td{cls}>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)
