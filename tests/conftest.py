"""Shared fixtures. The real AudioSet metadata comes from $AUDIOSETFLOW_REAL_METADATA
(.ci/run points it at ../shared/audioset); tests that need it are skipped, with the reason
printed, where it is not given. The project's own small fixtures are in tests/data/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
