"""Text that is safe to print: one helper, :func:`escape`, used by every output path of the
command line (``predict`` TSV and error lines, ``info``, ``status``, ``failures``).

Labels, file names and failure reasons come from metadata, checkpoints, shard records and the
file system; a control character in them would reach the terminal raw (cursor moves, colour,
a cleared screen) and a tab or newline would split a TSV row. :func:`escape` writes them as
visible escapes instead, so that every record is one line and every field one cell.
"""

from __future__ import annotations

import unicodedata

__all__ = ["escape"]

_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    cat = unicodedata.category(c)
    if cat == "Cs":  # a byte of a file name that is not UTF-8 (os.fsdecode's surrogate escape)
        code = ord(c)
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"
    if cat in ("Cc", "Zl", "Zp") or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        code = ord(c)
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
    return c


def escape(text: object) -> str:
    """``str(text)`` with backslashes, tabs, newlines, carriage returns and every other
    control character written as escapes (``\\\\``, ``\\t``, ``\\n``, ``\\r``, ``\\x1b``...).

    Also escaped: line and paragraph separators (U+2028, U+2029), the bidirectional
    overrides and isolates (U+202A-U+202E, U+2066-U+2069), which reorder what a terminal shows,
    and the undecodable bytes of a file name (``\\xff``). Printable text, non-ASCII letters
    included, is unchanged.

    Examples
    --------
    >>> escape("a\\tb\\nc\\x1b[2J")
    'a\\\\tb\\\\nc\\\\x1b[2J'
    >>> escape("Café")
    'Café'
    """
    s = str(text)
    if s.isprintable() and "\\" not in s:
        return s
    return "".join(_escape_char(c) for c in s)
