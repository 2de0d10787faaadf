"""A deterministic offline demo corpus in AudioSet format.

The corpus has three kinds of clips, labelled with real AudioSet MIDs:

* speech-like (``Speech``, /m/09x0r): a voiced source with a wandering pitch, shaped by moving
  formants and chopped into syllables and pauses;
* music-like (``Music``, /m/04rlf): chords of harmonic notes on a steady beat;
* other (``Vehicle``, /m/07yv9): engine-like rumble, low harmonics plus brown noise.

Some clips mix speech over music (labelled with both). Each clip lives in a longer "video"
(a compressed ``.m4a`` media file) at a random offset, and a few segments are shorter than
10 s, as in AudioSet. Everything is a pure function of the seed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path, atomic_write_text, write_tsv
from .metadata import write_segments
from .tools import ffmpeg_exe

__all__ = [
    "CLASSES",
    "DemoSpec",
    "corpus",
    "synthesize",
    "url_template",
    "write_media",
    "write_metadata",
]

CLASSES = {
    "speech": ("/m/09x0r", "Speech", 0),
    "music": ("/m/04rlf", "Music", 137),
    "other": ("/m/07yv9", "Vehicle", 300),
}
MEDIA_SR = 22050
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class DemoSpec:
    """Size and seed of the demo corpus."""

    clips_per_class: int = 80
    eval_fraction: float = 0.25
    seed: int = 7
    mix_fraction: float = 0.15
    short_fraction: float = 0.05

    @classmethod
    def from_config(cls, demo_cfg: dict) -> DemoSpec:
        """Build from ``config['demo']`` (unknown keys ignored)."""
        keys = {
            k: demo_cfg[k] for k in ("clips_per_class", "eval_fraction", "seed") if k in demo_cfg
        }
        return cls(**keys)


def _ytid(seed: int, i: int) -> str:
    h = hashlib.blake2b(f"demo:{seed}:{i}".encode(), digest_size=16).digest()
    return "".join(_ALPHABET[b % 64] for b in h[:11])


def corpus(spec: DemoSpec) -> pd.DataFrame:
    """Describe every demo clip.

    Returns
    -------
    DataFrame
        Columns ``ytid, split, kind, labels, start, end, media_seconds, seed``: the segment is
        ``[start, end)`` of a media file ``media_seconds`` long.
    """
    rng = np.random.default_rng(spec.seed)
    rows = []
    i = 0
    for kind in ("speech", "music", "other"):
        for _ in range(spec.clips_per_class):
            ytid = _ytid(spec.seed, i)
            if i % 17 == 3:  # AudioSet has YTIDs starting with '-': make sure the demo does too
                ytid = "-" + ytid[1:]
            mids = [CLASSES[kind][0]]
            if kind == "speech" and rng.random() < spec.mix_fraction:
                mids.append(CLASSES["music"][0])
            seg = 10.0
            pre = float(np.round(rng.uniform(0.0, 4.0), 3))
            post = float(np.round(rng.uniform(0.0, 2.0), 3))
            if rng.random() < spec.short_fraction:
                seg = float(np.round(rng.uniform(5.0, 9.0), 3))
                post = 0.0  # the video ends with the segment, as for AudioSet's short ones
            split = "eval" if rng.random() < spec.eval_fraction else "train"
            rows.append(
                (ytid, split, kind, ",".join(mids), pre, pre + seg, pre + seg + post,
                 int(rng.integers(2**31)))
            )  # fmt: skip
            i += 1
    return pd.DataFrame(
        rows, columns=["ytid", "split", "kind", "labels", "start", "end", "media_seconds", "seed"]
    )


def write_metadata(folder: str | Path, spec: DemoSpec) -> bool:
    """Write the demo's AudioSet-format metadata files into ``folder`` if they are not there
    already for this spec. Returns whether anything was written.

    Files: ``balanced_train_segments.csv``, ``eval_segments.csv``, ``class_labels_indices.csv``,
    ``qa_true_counts.csv``, ``ontology.json``, ``corpus.tsv`` (the full description) and
    ``spec.json``.
    """
    folder = Path(folder)
    stamp = folder / "spec.json"
    want = json.dumps(asdict(spec), sort_keys=True)
    if stamp.exists() and stamp.read_text() == want:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    c = corpus(spec)
    for split, name in (("train", "balanced_train_segments.csv"), ("eval", "eval_segments.csv")):
        write_segments(folder / name, c.loc[c["split"] == split], created="by audiosetflow demo")
    classes = sorted(CLASSES.values(), key=lambda t: t[2])
    lines = ["index,mid,display_name"] + [f'{i},{m},"{n}"' for m, n, i in classes]
    atomic_write_text(folder / "class_labels_indices.csv", "\n".join(lines) + "\n")
    qa = {"/m/09x0r": (100, 92), "/m/04rlf": (100, 95), "/m/07yv9": (100, 70)}
    lines = ["label_id,num_rated,num_true"] + [f"{i},{qa[m][0]},{qa[m][1]}" for m, _, i in classes]
    atomic_write_text(folder / "qa_true_counts.csv", "\n".join(lines) + "\n")
    onto = [
        {"id": m, "name": n, "description": f"Demo class {n}.", "citation_uri": "",
         "positive_examples": [], "child_ids": [], "restrictions": []}
        for m, n, _ in classes
    ]  # fmt: skip
    atomic_write_text(folder / "ontology.json", json.dumps(onto, indent=1) + "\n")
    write_tsv(folder / "corpus.tsv", c)
    atomic_write_text(stamp, want)
    return True


def _speech(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = 110 + 60 * rng.random() + 25 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    src = sum((0.9**k) * np.sin(k * phase) for k in range(1, 25))
    # formants: two moving resonances applied as spectral weighting in short blocks
    out = np.zeros(n)
    block = 1024
    freqs = np.fft.rfftfreq(block * 2, 1 / sr)
    win = np.hanning(block * 2)
    for b0 in range(0, n - block, block):
        seg = src[b0 : b0 + 2 * block]
        if len(seg) < 2 * block:
            break
        f1 = 300 + 500 * rng.random()
        f2 = 900 + 1500 * rng.random()
        w = np.exp(-(((freqs - f1) / 120) ** 2)) + 0.7 * np.exp(-(((freqs - f2) / 200) ** 2))
        spec = np.fft.rfft(seg * win) * w
        out[b0 : b0 + 2 * block] += np.fft.irfft(spec)
    # syllables (4-6 per second) and pauses
    syl = np.clip(np.sin(2 * np.pi * rng.uniform(3.5, 6.0) * t) + 0.2, 0, None)
    pauses = (np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * t + rng.uniform(0, 6)) > -0.6).astype(
        float
    )
    y = out * syl * pauses
    y += 0.02 * rng.standard_normal(n) * syl  # fricative noise
    return y


def _music(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    y = np.zeros(n)
    bpm = rng.uniform(80, 140)
    beat = 60.0 / bpm
    root = 220 * 2 ** (rng.integers(0, 12) / 12)
    prog = [0, 5, 7, 3, 8, 10]
    n_beats = int(n / sr / beat) + 1
    for b in range(n_beats):
        a = int(b * beat * sr)
        e = min(n, int((b + 1) * beat * sr))
        if a >= n:
            break
        deg = prog[(b // 4) % len(prog)]
        tt = t[a:e] - t[a]
        env = np.exp(-3.0 * tt)
        for iv in (0, 4, 7):
            f = root * 2 ** ((deg + iv) / 12)
            y[a:e] += env * sum((0.5**k) * np.sin(2 * np.pi * f * k * tt) for k in range(1, 6))
        if b % 2 == 0:  # kick drum
            y[a:e] += 0.8 * np.exp(-25 * tt) * np.sin(2 * np.pi * 60 * tt)
    return y


def _other(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    rpm = rng.uniform(20, 45) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t))
    phase = 2 * np.pi * np.cumsum(rpm) / sr
    y = sum((0.7**k) * np.sin(k * phase) for k in range(1, 12))
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(2048) / 2048, mode="same")
    return y + 0.05 * brown / (np.abs(brown).max() + 1e-9)


def synthesize(row: pd.Series | dict, *, sample_rate: int = MEDIA_SR) -> np.ndarray:
    """Waveform of one demo media file (the whole "video"), float32 in [-1, 1]."""
    rng = np.random.default_rng(int(row["seed"]))
    n = int(round(float(row["media_seconds"]) * sample_rate))
    kind = row["kind"]
    y = {"speech": _speech, "music": _music, "other": _other}[kind](rng, n, sample_rate)
    if kind == "speech" and "/m/04rlf" in str(row["labels"]):
        y = y / (np.abs(y).max() + 1e-9) + 0.4 * _music(rng, n, sample_rate) / 3.0
    y = y / (np.abs(y).max() + 1e-9) * rng.uniform(0.3, 0.8)
    return y.astype(np.float32)


def _encode(y: np.ndarray, dst: Path, sample_rate: int) -> None:
    with atomic_path(dst) as tmp:
        cmd = [
            ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(sample_rate),
            "-ac", "1", "-i", "-", "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart",
            "-f", "mp4", str(tmp.absolute()),
        ]  # fmt: skip
        proc = subprocess.run(cmd, input=y.tobytes(), capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{dst}: ffmpeg could not encode: {proc.stderr.decode()[-300:]}")


def url_template(media_dir: str | Path) -> str:
    """yt-dlp URL template of the demo media: ``file://`` URLs of ``media_dir/{ytid}.m4a``."""
    return Path(media_dir).absolute().as_uri() + "/{ytid}.m4a"


def write_media(
    media_dir: str | Path, spec: DemoSpec, *, threads: int = 1, logger=None
) -> list[Path]:
    """Write every demo media file (``{ytid}.m4a``) that is missing; returns all paths."""
    media_dir = Path(media_dir)
    media_dir.mkdir(parents=True, exist_ok=True)
    c = corpus(spec)
    paths = [media_dir / f"{y}.m4a" for y in c["ytid"]]
    todo = [(row, p) for (_, row), p in zip(c.iterrows(), paths, strict=True) if not p.exists()]

    def one(item):
        row, p = item
        _encode(synthesize(row), p, MEDIA_SR)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as ex:
        for i, _ in enumerate(ex.map(one, todo), start=1):
            if logger is not None and (i % 50 == 0 or i == len(todo)):
                logger.info("[demo media] %d/%d written", i, len(todo))
    return paths
