"""Model inputs from features, with numpy only (no torch): what a CNN sees of a clip.

* :func:`stack_channels`: log-mel plus extra frame-level features as image channels.
* :func:`channel_stats`: per-channel, per-row normalisation statistics of an array.

:mod:`~.stream` builds its batches with these, so reading shards never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["stack_channels", "channel_stats"]


def _resize(a: np.ndarray, rows: int, frames: int) -> np.ndarray:
    """Linear interpolation of (N, r, t) to (N, rows, frames); one row is broadcast."""
    n, r, t = a.shape
    if t != frames:
        x_old = np.linspace(0.0, 1.0, t)
        x_new = np.linspace(0.0, 1.0, frames)
        a = np.stack([[np.interp(x_new, x_old, row) for row in clip] for clip in a])
    if r == rows:
        return a.astype(np.float32, copy=False)
    if r == 1:
        return np.broadcast_to(a, (n, rows, frames)).astype(np.float32)
    pos = np.linspace(0.0, r - 1, rows)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, r - 1)
    w = (pos - lo)[None, :, None]
    return ((1 - w) * a[:, lo, :] + w * a[:, hi, :]).astype(np.float32)


def stack_channels(
    log_mel: np.ndarray, extras: Mapping[str, np.ndarray] | Sequence[np.ndarray] = ()
) -> np.ndarray:
    """CNN input: log-mel plus each extra frame-level feature as a channel.

    Each extra feature ``(N, r, t)`` is interpolated to the log-mel's ``(n_mels, T)`` grid
    (rows linearly, a single row broadcast over all of them), so that e.g. an MFCC matrix or
    the spectral centroid become extra image channels aligned in time.

    Parameters
    ----------
    log_mel : ndarray, shape (N, n_mels, T) or (n_mels, T)
    extras : mapping or sequence of ndarray, each (N, r, t) or (r, t)

    Returns
    -------
    ndarray of float32, shape (N, 1 + len(extras), n_mels, T) (no N axis for 2-D input)
    """
    single = log_mel.ndim == 2
    lm = log_mel[None] if single else log_mel
    values = list(extras.values()) if isinstance(extras, Mapping) else list(extras)
    chans = [lm.astype(np.float32, copy=False)]
    for e in values:
        e = e[None] if e.ndim == 2 else e
        chans.append(_resize(e, lm.shape[1], lm.shape[2]))
    out = np.stack(chans, axis=1)
    return out[0] if single else out


def channel_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per channel and row over clips and frames.

    ``X`` is (N, C, R, T); returns two arrays of shape (C, R, 1).
    """
    mean = X.mean(axis=(0, 3), dtype=np.float64)[..., None]
    std = X.std(axis=(0, 3), dtype=np.float64)[..., None]
    return mean.astype(np.float32), std.astype(np.float32)
