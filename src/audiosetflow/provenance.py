"""Where a result came from: recorded in every metrics JSON and every checkpoint.

:func:`provenance` gives the project version, the git commit when the package runs from a
checkout (and whether it had uncommitted changes), a hash of the effective configuration
(``config_hash``, secrets left out: :func:`audiosetflow.config.redact_config` where present),
a hash of the data a model learnt from (``data_hash``) and of the metadata files, the versions
of the packages that decide the numbers, the device and the seeds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["provenance", "config_hash", "data_hash", "files_hash", "git_commit", "PACKAGES"]

#: Packages whose versions are recorded (those that decide features, training and metrics).
PACKAGES = (
    "audiosetflow",
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "librosa",
    "pyarrow",
    "pandas",
    "soundfile",
    "snakemake",
)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _redact(cfg: Mapping) -> Any:
    try:
        from .config import redact_config
    except ImportError:  # pragma: no cover - older config module
        return cfg
    return redact_config(cfg)


def config_hash(cfg: Mapping | None) -> str | None:
    """SHA-256 of the configuration as canonical JSON (keys sorted), secrets redacted."""
    if cfg is None:
        return None
    return _sha256(json.dumps(_redact(cfg), sort_keys=True, default=str, separators=(",", ":")))


def data_hash(rows: Iterable[Sequence[Any]]) -> str:
    """SHA-256 of records (e.g. ``(ytid, split, target)`` of every clip of a model's parts),
    sorted first so that the hash does not depend on row order."""
    lines = sorted("\x1f".join(str(v) for v in r) for r in rows)
    return _sha256("\n".join(lines))


def files_hash(paths: Iterable[str | Path]) -> dict[str, str]:
    """SHA-256 of each existing file, by file name (streamed, 1 MiB at a time)."""
    out = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[p.name] = h.hexdigest()
    return out


@functools.cache
def git_commit() -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout the package runs from, or None
    (an installed package, or no git)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())}


@functools.cache
def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def provenance(
    *,
    config: Mapping | None = None,
    seeds: Sequence[int] = (),
    device: str | None = None,
    data: str | None = None,
    metadata_files: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """The provenance block of a metrics JSON or checkpoint.

    Parameters
    ----------
    config : mapping, optional
        The effective configuration (only its hash is kept).
    seeds : sequence of int
        The seeds the result was trained with.
    device : str, optional
        ``"cpu"``, ``"cuda"``...
    data : str, optional
        :func:`data_hash` of the clips the model learnt from and was tested on.
    metadata_files : iterable of path
        AudioSet metadata files the clips were selected from (hashed by content).

    Returns
    -------
    dict
        ``version``, ``git`` (or None), ``config_hash``, ``data_hash``, ``metadata``
        (file name to SHA-256), ``packages``, ``device``, ``seeds``, ``platform``.
    """
    from . import __version__

    return {
        "version": __version__,
        "git": git_commit(),
        "config_hash": config_hash(config),
        "data_hash": data,
        "metadata": files_hash(metadata_files),
        "packages": dict(_versions()),
        "device": device,
        "seeds": [int(s) for s in seeds],
        "platform": f"{platform.system()} {platform.machine()}",
    }
