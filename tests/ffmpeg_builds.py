"""The ffmpeg builds this machine has, and switching a test to one of them.

Tests whose outcome depends on the ffmpeg build take the ``ffmpeg_build`` fixture (conftest.py)
and run once per build: the system's (``ffmpeg`` on PATH, or /usr/bin/ffmpeg: Debian 12 has
5.1) and imageio-ffmpeg's static binary (9.0 at the time of writing). A build that is absent
is skipped with the reason, never silently passed.

``./run test`` runs pytest twice (see :func:`hide_system_ffmpeg`, :func:`log_system_ffmpeg`):
first with the machine as it is, logging every test that ran the system ffmpeg by default
(not through ``ffmpeg_build``); then those tests again with the system ffmpeg hidden, as on a
fresh machine where only imageio-ffmpeg's binary exists.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = [
    "FFMPEG_BUILDS",
    "HIDE_ENV",
    "LOG_ENV",
    "ffmpeg_builds",
    "clear_ffmpeg_caches",
    "use_ffmpeg",
    "version",
    "hide_system_ffmpeg",
    "log_system_ffmpeg",
]

FFMPEG_BUILDS = ("system", "imageio")
#: Set (to anything but "" or "0"): the system ffmpeg is hidden for this test session.
HIDE_ENV = "AUDIOSETFLOW_TEST_HIDE_SYSTEM_FFMPEG"
#: A file: every test that runs the system ffmpeg by default appends its node id there.
LOG_ENV = "AUDIOSETFLOW_TEST_FFMPEG_LOG"
_NAMES = ("ffmpeg", "ffprobe")


def _hidden() -> bool:
    return os.environ.get(HIDE_ENV, "") not in ("", "0")


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
    if _hidden():
        return {"system": (None, f"system ffmpeg hidden ({HIDE_ENV} is set)"), "imageio": imageio}
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


def hide_system_ffmpeg(tmp: Path) -> str:
    """Hide the system's ffmpeg and ffprobe from this process and its children, as if the
    machine had none: every folder of PATH that holds one is replaced by a folder (in ``tmp``)
    of links to all its other programs. Returns the new PATH (also set in ``os.environ``)."""
    folders = []
    for i, d in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if d and any(os.access(Path(d, n), os.X_OK) for n in _NAMES):
            shadow = tmp / f"path-{i}"
            shadow.mkdir(parents=True, exist_ok=True)
            for entry in os.scandir(d):
                if entry.name not in _NAMES and not (shadow / entry.name).exists():
                    (shadow / entry.name).symlink_to(entry.path)
            d = str(shadow)
        folders.append(d)
    os.environ["PATH"] = os.pathsep.join(folders)
    return os.environ["PATH"]


def log_system_ffmpeg(tmp: Path, log: str) -> None:
    """Put first on PATH an ``ffmpeg`` that appends the running test's id
    (``$PYTEST_CURRENT_TEST``) to ``log``, then runs the system's. Nothing when the machine
    has no system ffmpeg. The folder's name starts with ``audiosetflow-ffmpeg``, so that
    :func:`ffmpeg_builds` looks past it."""
    exe = ffmpeg_builds()["system"][0]
    if exe is None:
        return
    shim = tmp / "audiosetflow-ffmpeg-log"
    shim.mkdir(parents=True, exist_ok=True)
    script = shim / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        f'[ -n "$PYTEST_CURRENT_TEST" ] && echo "$PYTEST_CURRENT_TEST" >>{shlex.quote(log)}\n'
        f'exec {shlex.quote(exe)} "$@"\n'
    )
    script.chmod(0o755)
    os.environ["PATH"] = f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"
