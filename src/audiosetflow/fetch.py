"""Fetching metadata files over HTTP(S), atomically."""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from .io import atomic_path

__all__ = ["fetch"]


def fetch(
    url: str, dst: str | Path, *, timeout: float = 60.0, logger: logging.Logger | None = None
) -> Path:
    """Download ``url`` to ``dst`` (temporary name, then rename).

    Raises
    ------
    RuntimeError
        One line naming the URL and what went wrong, with the way out (metadata.dir).
    """
    logger = logger or logging.getLogger(__name__)
    dst = Path(dst)
    logger.info("fetching %s -> %s", url, dst)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dst) as tmp:
            with tmp.open("wb") as fh:
                shutil.copyfileobj(resp, fh)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(
            f"{url}: cannot fetch ({reason}); download it by hand into a folder and set "
            "metadata.dir in config.yaml"
        ) from None
    logger.info("fetched %s (%d bytes)", dst, dst.stat().st_size)
    return dst
