"""Locating external programs (ffmpeg) in a way that works without root or a system package."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["ffmpeg_exe", "ensure_ffmpeg_on_path"]


@functools.cache
def ffmpeg_exe() -> str:
    """Return the path of an ffmpeg executable.

    The ``AUDIOSETFLOW_FFMPEG`` environment variable wins, then an ``ffmpeg`` on ``PATH``, then
    the static binary shipped by the ``imageio-ffmpeg`` wheel.

    Raises
    ------
    RuntimeError
        If no ffmpeg can be found, with the fix in the message.
    """
    env = os.environ.get("AUDIOSETFLOW_FFMPEG")
    if env:
        return env
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - imageio-ffmpeg is a dependency
        raise RuntimeError(
            "ffmpeg not found: install it (apt-get install ffmpeg) or `pip install imageio-ffmpeg`"
        ) from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ensure_ffmpeg_on_path() -> str:
    """Make ``ffmpeg`` callable by that name (yt-dlp looks it up on ``PATH``) and return its folder.

    When the binary has another name (imageio-ffmpeg's ``ffmpeg-linux-x86_64-v...``), a symbolic
    link named ``ffmpeg`` is made in a private folder that is prepended to ``PATH`` of this
    process (and so of its children).
    """
    exe = Path(ffmpeg_exe())
    if exe.name == "ffmpeg":
        folder = exe.parent
    else:
        base = Path(sys.prefix) / "libexec" / "audiosetflow-ffmpeg"
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError:
            base = Path(tempfile.gettempdir()) / f"audiosetflow-ffmpeg-{os.getuid()}"
            base.mkdir(parents=True, exist_ok=True)
        link = base / "ffmpeg"
        if not (link.exists() and link.resolve() == exe.resolve()):
            tmp = base / f".ffmpeg.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(exe)
            os.replace(tmp, link)
        folder = base
    path = os.environ.get("PATH", "")
    if str(folder) not in path.split(os.pathsep):
        os.environ["PATH"] = f"{folder}{os.pathsep}{path}" if path else str(folder)
    return str(folder)
