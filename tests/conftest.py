"""Shared fixtures. The real AudioSet metadata comes from $AUDIOSETFLOW_REAL_METADATA
(.ci/run points it at ../shared/audioset); tests that need it are skipped, with the reason
printed, where it is not given. The project's own small fixtures are in tests/data/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from ffmpeg_builds import (
    FFMPEG_BUILDS,
    HIDE_ENV,
    LOG_ENV,
    clear_ffmpeg_caches,
    ffmpeg_builds,
    hide_system_ffmpeg,
    log_system_ffmpeg,
    use_ffmpeg,
    version,
)

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def real_metadata() -> Path:
    env = os.environ.get("AUDIOSETFLOW_REAL_METADATA")
    if not env or not (Path(env) / "balanced_train_segments.csv").exists():
        pytest.skip("real AudioSet metadata not given: set AUDIOSETFLOW_REAL_METADATA")
    return Path(env)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture
def tiny_demo(_tiny_demo_run: Path) -> Path:
    """One run of the tiny demo (``benchmarks/demo_figures.py --tiny``: its ``run_demo`` and
    ``TINY`` overlay, the README's demo with 10 clips a class), shared by the tests that read
    a finished run (the report in a browser, the demo figures) instead of each running it.

    Returns the work folder: ``results/`` and ``overrides.yaml`` (the overlay) in it. Tests
    may add files (the HTML report) but change nothing the others read. Every test that uses
    it is logged as running the system ffmpeg (``./run test`` runs it again without), as the
    run it reads did, whichever test made it.
    """
    log = os.environ.get(LOG_ENV)
    if log and ffmpeg_builds()["system"][0] is not None and os.environ.get("PYTEST_CURRENT_TEST"):
        with open(log, "a") as fh:
            fh.write(os.environ["PYTEST_CURRENT_TEST"] + "\n")
    return _tiny_demo_run


@pytest.fixture(scope="session")
def _tiny_demo_run(tmp_path_factory) -> Path:
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from demo_figures import TINY, run_demo
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    work = tmp_path_factory.mktemp("tiny-demo")
    run_demo(work, TINY)
    return work


# --------------------------------------------------------------------------------------------
# ffmpeg builds (see ffmpeg_builds.py)


@pytest.fixture(params=FFMPEG_BUILDS)
def ffmpeg_build(request, monkeypatch) -> Iterator[str]:
    """The test runs with each ffmpeg build in turn (the parameter: ``system``, ``imageio``);
    yields the executable. An absent build is skipped with the reason; when there is no ffmpeg
    at all the test fails."""
    exe, why = ffmpeg_builds()[request.param]
    if exe is None:
        if not any(e for e, _ in ffmpeg_builds().values()):
            pytest.fail(f"no ffmpeg at all: {why}")
        pytest.skip(f"{request.param} ffmpeg absent: {why}")
    use_ffmpeg(monkeypatch, exe)
    yield exe
    clear_ffmpeg_caches()  # the next test finds its ffmpeg again (after PATH/env are restored)


def pytest_configure(config) -> None:
    """``./run test``'s two passes (ffmpeg_builds.py): hide the system ffmpeg, or log who
    runs it, before any test (and any child process) looks for ffmpeg."""
    import shutil
    import tempfile

    if os.environ.get(HIDE_ENV, "") not in ("", "0"):
        tmp = Path(tempfile.mkdtemp(prefix="audiosetflow-nosysffmpeg-"))
        hide_system_ffmpeg(tmp)
    elif os.environ.get(LOG_ENV):
        tmp = Path(tempfile.mkdtemp(prefix="audiosetflow-ffmpeglog-"))
        log_system_ffmpeg(tmp, os.environ[LOG_ENV])
    else:
        return
    config.add_cleanup(lambda: shutil.rmtree(tmp, ignore_errors=True))
    clear_ffmpeg_caches()


def pytest_report_header(config) -> list[str]:
    return [
        f"ffmpeg {name}: {f'{exe} ({version(exe)})' if exe else f'absent ({why})'}"
        for name, (exe, why) in ffmpeg_builds().items()
    ]
