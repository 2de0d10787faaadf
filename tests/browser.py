"""Headless Chromium for the report test (not a test module): find it, install it with apt-get
when missing (as root), and load a page to get its DOM after the page's scripts ran, or a
screenshot.

Chromium runs with no network use of its own (no sync, updates, background requests, QUIC), a
fresh profile folder per call, and a virtual time budget, so that a page's scheduled scripts
(the Snakemake report renders with React) have run before the DOM is dumped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["find", "install", "skip_reason", "dump_dom", "screenshot", "audio_duration", "Elements"]

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
)


def find() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None."""
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install(*, timeout: float = 900.0) -> str:
    """Install Debian's ``chromium`` with apt-get (root); return the executable.

    Raises
    ------
    RuntimeError
        When apt-get fails, runs past ``timeout`` seconds, or leaves no executable.
    """
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    for cmd in (
        ["apt-get", *lock, "update", "-q"],
        ["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", "chromium"],
    ):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(cmd)}: no result after {timeout:.0f} s") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    exe = find()
    if exe is None:
        raise RuntimeError("apt-get install chromium finished but no chromium is on PATH")
    return exe


def skip_reason() -> str | None:
    """Why no browser can be had here, or None (one is installed, or apt-get can install it)."""
    if find():
        return None
    if os.geteuid() != 0:
        return "no chromium on PATH, and installing it with apt-get needs root"
    if shutil.which("apt-get") is None:
        return "no chromium on PATH and no apt-get to install it"
    return None


def _run(exe: str, url: str, *extra: str, timeout: float, budget_ms: int) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            exe,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *extra,
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def dump_dom(exe: str, page: str | Path, *, timeout: float = 120, budget_ms: int = 15000) -> str:
    """The page's DOM, serialised after its scripts ran (``--dump-dom``)."""
    url = Path(page).resolve().as_uri()
    return _run(exe, url, "--dump-dom", timeout=timeout, budget_ms=budget_ms)


def screenshot(
    exe: str,
    page: str | Path,
    out: str | Path,
    *,
    size: tuple[int, int] = (1600, 2400),
    timeout: float = 120,
    budget_ms: int = 15000,
) -> Path:
    """A PNG of the page's first ``size`` pixels (width, height)."""
    out = Path(out).resolve()
    url = Path(page).resolve().as_uri()
    _run(
        exe,
        url,
        f"--window-size={size[0]},{size[1]}",
        "--hide-scrollbars",
        f"--screenshot={out}",
        timeout=timeout,
        budget_ms=budget_ms,
    )
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot {out}")
    return out


def audio_duration(exe: str, src: str, folder: str | Path) -> str:
    """What Chromium's media stack makes of an audio ``src`` (e.g. a ``data:`` URI):
    ``"duration=<seconds>"`` once its metadata loaded, ``"error <code>"``, or ``"pending"``."""
    page = Path(folder) / "audio-check.html"
    page.write_text(
        '<html><body><div id="out">pending</div>'
        f'<audio id="a" preload="metadata" src="{src}"></audio><script>'
        'const a = document.getElementById("a"), out = document.getElementById("out");'
        'a.addEventListener("loadedmetadata", () => {'
        '  out.textContent = "duration=" + a.duration; });'
        'a.addEventListener("error", () => { out.textContent = "error " + a.error.code; });'
        "</script></body></html>"
    )
    dom = dump_dom(exe, page, budget_ms=5000)
    start = dom.find('<div id="out">') + len('<div id="out">')
    return dom[start : dom.find("</div>", start)]


class Elements(HTMLParser):
    """The elements of an HTML document (or of the part from the element with id ``root_id``
    on): tables (id -> rows of cell texts), images and audio players (their attributes) and
    every id. The content of scripts is text, never elements, so a page's own JavaScript
    strings do not count."""

    def __init__(self, text: str, root_id: str | None = None):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict] = []
        self.audio: list[dict] = []
        self.ids: set[str] = set()
        self._started = root_id is None
        self._root = root_id
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if not self._started:
            self._started = a.get("id") == self._root
            if not self._started:
                return
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id") or f"table{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "audio":
            self.audio.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
