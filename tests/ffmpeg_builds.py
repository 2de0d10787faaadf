"""The ffmpeg builds this machine has, and switching a test to one of them.

Tests whose outcome depends on the ffmpeg build take the ``ffmpeg_build`` fixture (conftest.py)
and run once per build: the system's (``ffmpeg`` on PATH, or /usr/bin/ffmpeg: Debian 12 has
5.1) and imageio-ffmpeg's static binary (9.0 at the time of writing). A build that is absent
is skipped with the reason, never silently passed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["FFMPEG_BUILDS", "ffmpeg_builds", "clear_ffmpeg_caches", "use_ffmpeg", "version"]

FFMPEG_BUILDS = ("system", "imageio")


@functools.cache
def ffmpeg_builds() -> dict[str, tuple[str | None, str]]:
    """Build name -> (executable, "") where present, (None, why not) where absent."""
    imageio: tuple[str | None, str]
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        bundled = (Path(imageio_ffmpeg.__file__).parent / "binaries").resolve()
        if Path(exe).resolve().parent == bundled:
            imageio = (exe, "")
        else:
            imageio = (None, f"imageio-ffmpeg ships no binary for this platform (found {exe})")
    except (ImportError, RuntimeError) as exc:
        imageio = (None, f"imageio-ffmpeg unavailable: {exc}")
    system: tuple[str | None, str] = (
        None,
        "no system ffmpeg (none on PATH, no /usr/bin/ffmpeg): apt-get install ffmpeg",
    )
    # PATH without the folders of tools.ensure_ffmpeg_on_path (a link to imageio's binary)
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep)
        if not Path(d).name.startswith("audiosetflow-ffmpeg")
    )  # fmt: skip
    for cand in (shutil.which("ffmpeg", path=path), "/usr/bin/ffmpeg"):
        if (
            cand
            and os.access(cand, os.X_OK)
            and (imageio[0] is None or Path(cand).resolve() != Path(imageio[0]).resolve())
        ):
            system = (cand, "")
            break
    return {"system": system, "imageio": imageio}


def clear_ffmpeg_caches() -> None:
    """Forget the ffmpeg found so far (tools caches it, and the folder put on PATH for it)."""
    from audiosetflow import tools

    tools.ffmpeg_exe.cache_clear()
    tools.ensure_ffmpeg_on_path.cache_clear()


def use_ffmpeg(monkeypatch: pytest.MonkeyPatch, exe: str) -> None:
    """Make ``exe`` the ffmpeg of this test: AUDIOSETFLOW_FFMPEG, and PATH restored after the
    test (yt-dlp finds ffmpeg through ``ffmpeg_location``, the folder that
    ``ensure_ffmpeg_on_path`` puts first on PATH)."""
    monkeypatch.setenv("AUDIOSETFLOW_FFMPEG", exe)
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    clear_ffmpeg_caches()


def version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
        return out.stdout.split("\n", 1)[0].split(" Copyright")[0].removeprefix("ffmpeg ")
    except (OSError, subprocess.SubprocessError):
        return "?"
