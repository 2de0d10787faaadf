"""Example-clip figure: the waveform and every frame-level feature of one clip.

Uses matplotlib's Agg backend; the PNG is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..audio.features import FeatureParams
from ..io import atomic_path
from ..shard import Layout

__all__ = ["plot_clip", "choose_examples", "plot_examples"]

log = logging.getLogger(__name__)


def plot_clip(
    y: np.ndarray,
    feats: dict[str, np.ndarray],
    *,
    params: FeatureParams,
    title: str,
    path: str | Path,
    dpi: int = 100,
) -> None:
    """Draw one clip's waveform and features and save the figure as a PNG.

    Panels, top to bottom: waveform; log-mel spectrogram (dB) with the spectral centroid and
    roll-off drawn over it (on the mel axis, in Hz); MFCC c1 and up (c0, the log energy, is
    left out: its scale would wash out the others); zero-crossing rate; chroma.

    Parameters
    ----------
    y : ndarray, shape (n_samples,)
        The waveform the features were computed from.
    feats : dict
        Output of :func:`audiosetflow.features.compute` for ``y``.
    params : FeatureParams
    title : str
        Figure title (e.g. the YTID and its label names).
    path : path
        PNG file to write.
    dpi : int
        Resolution.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    # names from metadata are text: "$" starts no TeX (a bad formula would fail the figure)
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt
    from librosa import hz_to_mel, mel_frequencies

    sr, hop = params.sample_rate, params.hop_length
    y = np.asarray(y, dtype=np.float32)
    n_t = feats["log_mel"].shape[1]
    t_end = max(len(y) / sr, n_t * hop / sr)
    frame_t = np.arange(n_t) * hop / sr
    fmax = params.fmax if params.fmax is not None else sr / 2

    fig, axes = plt.subplots(
        5,
        1,
        figsize=(10, 12),
        sharex=True,
        gridspec_kw={"height_ratios": [1, 2.2, 1.4, 0.8, 1.2]},
        constrained_layout=True,
    )
    fig.suptitle(title)

    ax = axes[0]
    ax.plot(np.arange(len(y)) / sr, y, lw=0.4, color="0.2")
    ax.set_ylabel("amplitude")
    ax.set_title("waveform")

    # log-mel on a mel-spaced axis labelled in Hz; centroid and roll-off mapped onto it
    ax = axes[1]
    edges = mel_frequencies(n_mels=params.n_mels + 2, fmin=params.fmin, fmax=fmax)
    mel_lo, mel_hi = hz_to_mel(edges[0]), hz_to_mel(edges[-1])
    im = ax.imshow(
        feats["log_mel"],
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, t_end, mel_lo, mel_hi),
        interpolation="nearest",
    )
    for name, color in (("spectral_centroid", "cyan"), ("rolloff", "lime")):
        hz = np.clip(feats[name][0], params.fmin, fmax)
        ax.plot(frame_t, hz_to_mel(hz), color=color, lw=1.0, label=name.replace("_", " "))
    ticks = [f for f in (0, 250, 500, 1000, 2000, 4000, 8000, 16000) if params.fmin <= f <= fmax]
    ax.set_yticks(hz_to_mel(np.array(ticks, dtype=float)))
    ax.set_yticklabels([str(f) for f in ticks])
    ax.set_ylabel("Hz (mel scale)")
    ax.set_title("log-mel power (dB), spectral centroid and roll-off")
    ax.legend(loc="upper right", fontsize=8)
    fig.colorbar(im, ax=ax, label="dB")

    # c0 (the log energy) is an order of magnitude larger than the other coefficients and would
    # wash them out: the image shows c1 and up on a symmetric scale of their own
    ax = axes[2]
    mfcc = np.asarray(feats["mfcc"])
    rest = mfcc[1:] if mfcc.shape[0] > 1 else mfcc
    lo = 1 if mfcc.shape[0] > 1 else 0
    lim = float(np.nanpercentile(np.abs(rest), 99)) if rest.size else 1.0
    im = ax.imshow(
        rest,
        origin="lower",
        aspect="auto",
        cmap="coolwarm",
        extent=(0, t_end, lo - 0.5, mfcc.shape[0] - 0.5),
        interpolation="nearest",
        vmin=-max(lim, 1e-6),
        vmax=max(lim, 1e-6),
    )
    ax.set_ylabel("coefficient")
    ax.set_title(
        f"MFCC c1–c{mfcc.shape[0] - 1} (c0, the log energy, left out: it would swamp the scale)"
    )
    fig.colorbar(im, ax=ax)

    ax = axes[3]
    ax.plot(frame_t, feats["zcr"][0], color="tab:purple", lw=1.0)
    ax.set_ylabel("crossings / sample")
    ax.set_title("zero-crossing rate")

    ax = axes[4]
    n_chroma = feats["chroma"].shape[0]
    im = ax.imshow(
        feats["chroma"],
        origin="lower",
        aspect="auto",
        cmap="viridis",
        extent=(0, t_end, -0.5, n_chroma - 0.5),
        interpolation="nearest",
        vmin=0,
        vmax=1,
    )
    if n_chroma == 12:
        ax.set_yticks(range(12))
        ax.set_yticklabels(["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"])
    ax.set_ylabel("pitch class")
    ax.set_title("chroma")
    ax.set_xlabel("time (s)")
    ax.set_xlim(0, t_end)
    fig.colorbar(im, ax=ax)

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def choose_examples(
    meta,
    *,
    labels: Mapping[str, str],
    example_clips: Sequence[str] = (),
    n_examples: int = 3,
) -> list[tuple[str, str]]:
    """Which clips to draw: the configured YTIDs, or the first few finished clips per label.

    Parameters
    ----------
    meta : DataFrame
        Metadata of the finished clips (``ytid``, ``split``, ``labels`` as lists of MIDs), e.g.
        from :func:`audiosetflow.features.load_meta`.
    labels : mapping
        Target label MID to display name.
    example_clips : sequence of str
        YTIDs chosen by the user; when non-empty only these are drawn (those not among the
        finished clips are skipped with a warning).
    n_examples : int
        Clips per target label (lowest YTIDs first, so the choice is stable) when
        ``example_clips`` is empty.

    Returns
    -------
    list of (ytid, split)
        In drawing order, without repeats.
    """
    meta = meta.sort_values(["split", "ytid"], kind="stable")
    where = dict(zip(meta["ytid"], meta["split"], strict=True))
    out: list[tuple[str, str]] = []
    if example_clips:
        for ytid in example_clips:
            if ytid not in where:
                log.warning("features.example_clips: %s is not among the finished clips", ytid)
            elif (ytid, where[ytid]) not in out:
                out.append((ytid, where[ytid]))
        return out
    for mid in labels:
        hits = meta[[mid in v for v in meta["labels"]]]
        for ytid, split in zip(hits["ytid"][:n_examples], hits["split"][:n_examples], strict=True):
            if (ytid, split) not in out:
                out.append((ytid, split))
    return out


def plot_examples(
    *,
    features: Sequence[str | Path],
    layout: Layout,
    out_dir: str | Path,
    labels: Mapping[str, str],
    names: Mapping[str, str],
    example_clips: Sequence[str] = (),
    n_examples: int = 3,
) -> list[Path]:
    """Draw the example-clip figures of a finished run into a folder, replaced as a whole.

    Each clip is read back from its trimmed clip (:meth:`Layout.clip`) and its features are
    recomputed with the parameters stored in its Parquet shard, so the figure shows exactly
    what the features stage computed.

    Parameters
    ----------
    features : sequence of path
        The Parquet feature shards of the run (every split).
    layout : Layout
        Where the trimmed clips are.
    out_dir : path
        Folder to (re)create with one ``{ytid}.png`` per example; written under a temporary
        name and renamed, so a half-drawn folder is never left in its place.
    labels : mapping
        Target label MID to display name.
    names : mapping
        MID to display name of every class (for the figure titles).
    example_clips, n_examples
        See :func:`choose_examples`.

    Returns
    -------
    list of Path
        The figures written.
    """
    import pandas as pd

    from ..audio import features as ft
    from ..audio.inplace import read_segment

    metas, params = [], None
    if features:
        meta, params = ft.load_meta(features)
        metas.append(meta)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    written = []
    try:
        if metas:
            meta = pd.concat(metas, ignore_index=True)
            chosen = choose_examples(
                meta, labels=labels, example_clips=example_clips, n_examples=n_examples
            )
            by_ytid = meta.set_index("ytid")
            for ytid, split in chosen:
                y, sr = read_segment(layout.clip(split, ytid))  # kept, or from its mirror
                feats = ft.compute(y, params=params)
                row = by_ytid.loc[ytid]
                tags = ", ".join(names.get(m, m) for m in row["labels"]) or "no labels"
                title = f"{ytid} [{split}, {row['start']:g}-{row['end']:g} s]: {tags}"
                plot_clip(y, feats, params=params, title=title, path=tmp / f"{ytid}.png")
                written.append(out_dir / f"{ytid}.png")
                log.info("example figure %d/%d: %s", len(written), len(chosen), ytid)
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written
