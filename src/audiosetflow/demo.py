"""A deterministic offline demo corpus in AudioSet format.

The corpus has three kinds of clips, labelled with real AudioSet MIDs:

* speech-like (``Speech``, /m/09x0r): phrases of syllables, a voiced source with a wandering
  pitch whose harmonics are shaped by moving vowel formants, some fricatives, short pauses;
* music-like (``Music``, /m/04rlf): chord progressions of harmonic notes on a beat, often a
  melody and drums;
* other (``Vehicle``, /m/07yv9): vehicles passing by, plus everyday distractor sounds (chirps,
  knocks, beeps and horns, noise bursts).

As in AudioSet the labels are weak: each clip is a scene (a random background ambience,
events, a random room and microphone) in which the labelled sound fills only part (15-50 %)
of the 10 s, at -6..+6 dB against the background, so clip-level averages of spectral features
say little and the time-frequency pattern (harmonic stacks with moving formants, sustained
notes with onsets) is what identifies the label. Some clips mix speech with music (labelled
with both). Each clip lives in a longer "video" (a compressed ``.m4a`` media file) at a random
offset, and a few segments are shorter than 10 s, as in AudioSet. Everything is a pure
function of the seed.
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

from .config import section
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
        """Build from ``config['demo']`` (unknown keys ignored, missing ones from the schema)."""
        return section(cls, demo_cfg, "demo")


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


# --- synthesis -------------------------------------------------------------------------------
#
# Every clip is a scene: a background (coloured noise, maybe engine rumble and mains hum, slowly
# varying level), foreground events placed inside the labelled segment, then one "room" (random
# microphone EQ and maybe reverberation) over the whole mix and a random overall gain. Events
# are scaled relative to the background's level (SNR per event, over its active part).

_SNR_DB = (-6.0, 6.0)  # level of every foreground event against the background
_TARGET_COVERAGE = (0.15, 0.5)  # fraction of the segment covered by speech / music / vehicle
_DISTRACTOR_COVERAGE = (0.15, 0.40)  # the same for the distractors of "other" clips
# (F1, F2, F3) of a few vowels (Hz, adult male)
_VOWELS = np.array(
    [[270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410],
     [730, 1090, 2440], [640, 1190, 2390], [570, 840, 2410], [300, 870, 2240]],
    dtype=float,
)  # fmt: skip


def _fft_len(n: int) -> int:
    """Smallest 2**a * 3**b >= n (fast FFT sizes)."""
    best = 1 << max(0, int(n - 1).bit_length())
    p3 = 1
    while p3 < best:
        p2 = p3 * (1 << max(0, int(np.ceil(np.log2(max(n / p3, 1))))))
        best = min(best, p2)
        p3 *= 3
    return best


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, gain) -> np.ndarray:
    """White noise filtered by ``gain(freqs)`` (a function of the rfft frequencies)."""
    m = _fft_len(n)
    spec = np.fft.rfft(rng.standard_normal(m))
    spec *= gain(np.fft.rfftfreq(m, 1 / sr))
    y = np.fft.irfft(spec, m)[:n]
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def _smooth_random(rng: np.random.Generator, n: int, sr: int, rate: float) -> np.ndarray:
    """A smooth random curve (zero mean, about unit spread) with ~``rate`` changes per second."""
    k = max(2, int(n / sr * rate) + 2)
    return np.interp(np.arange(n), np.linspace(0, n, k), rng.standard_normal(k))


def _active_rms(y: np.ndarray, sr: int) -> float:
    """RMS over the 20-ms blocks holding at least 10 % of the loudest block's energy."""
    b = max(1, sr // 50)
    m = len(y) // b
    if m == 0:
        return float(np.sqrt(np.mean(y**2)) + 1e-12)
    e = np.mean(y[: m * b].reshape(m, b) ** 2, axis=1)
    return float(np.sqrt(np.mean(e[e >= 0.1 * e.max()])) + 1e-12)


def _env(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Linear attack, exponential release envelope of ``n`` samples."""
    t = np.arange(n) / sr
    return np.minimum(t / max(attack, 1e-4), 1.0) * np.exp(-t / max(release, 1e-4))


def _fade(y: np.ndarray, sr: int, seconds: float = 0.02) -> np.ndarray:
    k = min(len(y) // 2, int(seconds * sr))
    if k > 0:
        r = np.linspace(0.0, 1.0, k)
        y[:k] *= r
        y[-k:] *= r[::-1]
    return y


def _background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS ambience: coloured noise with a random spectral tilt and bumps, maybe engine
    rumble and mains hum, with a slowly wandering level."""
    alpha = rng.uniform(0.0, 2.0)  # white .. brown
    bumps = [(rng.uniform(np.log(100), np.log(6000)), rng.uniform(0.3, 1.2), rng.uniform(-12, 12))
             for _ in range(rng.integers(1, 4))]  # fmt: skip
    cutoff = rng.uniform(2500, 10000)

    def gain(f):
        f = np.maximum(f, 20.0)
        db = sum(g * np.exp(-0.5 * ((np.log(f) - c) / w) ** 2) for c, w, g in bumps)
        return f ** (-alpha / 2) * 10 ** (db / 20) / np.sqrt(1 + (f / cutoff) ** 8)

    y = _shaped_noise(rng, n, sr, gain)
    t = np.arange(n) / sr
    if rng.random() < 0.5:  # engine rumble, part of the ambience of any clip
        y += 10 ** (rng.uniform(-8, 6) / 20) * _engine(rng, n, sr)
    if rng.random() < 0.25:  # mains hum
        f = 50.0 if rng.random() < 0.5 else 60.0
        hum = sum((0.6**k) * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6)) for k in (1, 2, 3))
        y += 10 ** (rng.uniform(-20, -8) / 20) * hum / 0.7
    y *= np.exp(rng.uniform(0.05, 0.35) * _smooth_random(rng, n, sr, 0.5))
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def _room(rng: np.random.Generator, y: np.ndarray, sr: int) -> np.ndarray:
    """Random microphone EQ and, often, a room's reverberation (one FFT over the whole mix)."""
    n = len(y)
    ir = None
    if rng.random() < 0.6:
        rt60 = rng.uniform(0.2, 0.9)
        k = int(rt60 * sr)
        tt = np.arange(k) / sr
        ir = rng.standard_normal(k) * np.exp(-6.9 * tt / rt60)
        ir *= rng.uniform(0.1, 0.6) / np.sqrt(np.sum(ir**2))
        ir[0] += 1.0
    m = _fft_len(n + (0 if ir is None else len(ir)))
    f = np.maximum(np.fft.rfftfreq(m, 1 / sr), 20.0)
    hp = rng.uniform(40, 250)
    lp = rng.uniform(4000, 10000)
    tilt = rng.uniform(-3, 3)  # dB per octave around 1 kHz
    peak_f, peak_g = np.exp(rng.uniform(np.log(200), np.log(5000))), rng.uniform(-9, 9)
    db = tilt * np.log2(f / 1000) + peak_g * np.exp(-0.5 * (np.log(f / peak_f) / 0.5) ** 2)
    g = 10 ** (db / 20) / np.sqrt(1 + (hp / f) ** 4) / np.sqrt(1 + (f / lp) ** 6)
    spec = np.fft.rfft(y, m) * g
    if ir is not None:
        spec *= np.fft.rfft(ir, m)
    return np.fft.irfft(spec, m)[:n]


def _speech(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """One speech-like phrase of ``n`` samples: syllables of a voiced source whose harmonics are
    weighted by moving vowel formants (additive synthesis), some with a fricative onset, and
    short pauses between words."""
    dur = n / sr
    t = np.arange(n) / sr
    voice = rng.uniform(0.0, 1.0)  # 0 low male .. 1 child
    f0_base = 95 * 2 ** (1.4 * voice) * rng.uniform(0.9, 1.1)
    fscale = 1.0 + 0.3 * voice
    # syllables and pauses
    starts, durs = [], []
    pos = rng.uniform(0.0, 0.05)
    while pos < dur:
        d = rng.uniform(0.1, 0.32)
        starts.append(pos)
        durs.append(d)
        pos += d + (rng.uniform(0.08, 0.35) if rng.random() < 0.25 else rng.uniform(0.0, 0.04))
    starts, durs = np.array(starts), np.array(durs)
    ns = len(starts)
    idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, ns - 1)
    u = (t - starts[idx]) / durs[idx]
    inside = u < 1.0
    amp = rng.uniform(0.5, 1.0, ns)
    env = np.where(inside, np.sin(np.pi * np.clip(u, 0, 1)) ** 0.6, 0.0) * amp[idx]
    # formant and pitch tracks, interpolated between syllable centres
    centres = starts + durs / 2
    vow = _VOWELS[rng.integers(0, len(_VOWELS), ns)] * fscale * rng.uniform(0.93, 1.07, (ns, 1))
    formants = [np.interp(t, centres, vow[:, i]) for i in range(3)]
    accent = np.interp(t, centres, rng.uniform(0.85, 1.2, ns))
    f0 = f0_base * accent * np.linspace(1.08, 0.9, n) * (1 + 0.01 * rng.standard_normal(n))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    bws = (90.0, 110.0, 170.0)
    gains = (1.0, 0.6, 0.25)
    src = np.zeros(n)
    s_prev, s = np.zeros(n), np.sin(phase)  # sin(k * phase) by the Chebyshev recurrence
    c2 = 2 * np.cos(phase)
    for k in range(1, int(5000 / f0_base) + 1):
        fk = k * f0
        a = sum(
            g / (1 + ((fk - F) * (1 / bw)) ** 2)
            for F, bw, g in zip(formants, bws, gains, strict=True)
        )
        src += (k**-0.7 * a) * s
        s_prev, s = s, c2 * s - s_prev
    y = src * env
    # fricative onsets (band-limited noise, 2.5-7 kHz) on some syllables
    fric = rng.random(ns) < 0.4
    if fric.any():
        fl = rng.uniform(0.03, 0.09, ns)
        on = inside & fric[idx] & (t - starts[idx] < fl[idx])
        lo, hi = rng.uniform(2500, 4000), rng.uniform(5500, 8000)
        noise = _shaped_noise(
            rng, n, sr, lambda f: ((f > lo) & (f < hi)).astype(float)
        )  # fmt: skip
        y += 0.3 * np.sqrt(np.mean(src**2)) * noise * on * amp[idx]
    return _fade(y, sr)


def _harmonics(phase: np.ndarray, weights) -> np.ndarray:
    """``sum_k weights[k - 1] * sin(k * phase)``, by the Chebyshev recurrence (one sin, one cos)."""
    s_prev, s = np.zeros_like(phase), np.sin(phase)
    c2 = 2 * np.cos(phase)
    out = np.zeros_like(phase)
    for w in weights:
        out += w * s
        s_prev, s = s, c2 * s - s_prev
    return out


def _note(
    t: np.ndarray, f: float, n_harm: int, roll: float, env: np.ndarray, sr: int
) -> np.ndarray:
    """A harmonic note: ``n_harm`` partials (those below 0.45 ``sr`` only), amplitudes
    ``roll ** k``, under the envelope ``env``."""
    n_harm = max(1, min(n_harm, int(0.45 * sr / f)))
    return env * _harmonics(2 * np.pi * f * t, roll ** np.arange(n_harm))


def _music(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A music-like passage of ``n`` samples: a chord progression of harmonic notes on a beat
    with a random instrument timbre, often a melody an octave up and a drum pattern."""
    beat = 60.0 / rng.uniform(70, 160)
    root = 110 * 2 ** (rng.integers(0, 24) / 12)
    minor = rng.random() < 0.4
    scale = [0, 2, 3, 5, 7, 8, 10] if minor else [0, 2, 4, 5, 7, 9, 11]
    prog = [[0, 5, 7, 3], [0, 7, 9, 5], [0, 3, 5, 7], [0, 5, 3, 7]][rng.integers(0, 4)]
    third = 3 if minor else 4
    n_harm, roll = int(rng.integers(3, 9)), rng.uniform(0.3, 0.8)
    attack, release = rng.uniform(0.005, 0.06), rng.uniform(0.15, 1.0)
    melody = rng.random() < 0.7
    drums = rng.random() < 0.6
    y = np.zeros(n)
    n_beats = int(n / sr / beat) + 1
    for b in range(n_beats):
        a = int(b * beat * sr)
        if a >= n:
            break
        e = min(n, int((b + 1) * beat * sr))
        tt = np.arange(e - a) / sr
        deg = prog[(b // 2) % len(prog)]
        env = _env(e - a, sr, attack, release)
        for iv in (0, third, 7):
            y[a:e] += 0.5 * _note(tt, root * 2 ** ((deg + iv) / 12), n_harm, roll, env, sr)
        if melody:
            for h in (0, 1):
                a2 = a + int(h * beat * sr / 2)
                e2 = min(n, a2 + int(beat * sr / 2))
                if a2 >= e2 or rng.random() < 0.2:
                    continue
                t2 = np.arange(e2 - a2) / sr
                f = 2 * root * 2 ** (scale[rng.integers(0, 7)] / 12)
                y[a2:e2] += 0.7 * _note(t2, f, n_harm, roll, _env(e2 - a2, sr, attack, release), sr)
        if drums:
            if b % 2 == 0:  # kick
                y[a:e] += (
                    1.2 * np.exp(-25 * tt) * np.sin(2 * np.pi * (50 + 60 * np.exp(-30 * tt)) * tt)
                )
            else:  # snare
                y[a:e] += 0.5 * np.exp(-18 * tt) * rng.standard_normal(e - a)
    return _fade(y, sr)


def _chirps(rng, n, sr):
    """Bird-like chirps: short exponential sweeps (with a second harmonic), repeated."""
    y = np.zeros(n)
    d = rng.uniform(0.04, 0.3)
    f0, f1 = np.exp(rng.uniform(np.log(300), np.log(0.22 * sr), 2))
    period = d + rng.uniform(0.03, 0.4)
    for s in np.arange(0, n / sr - d, period):
        k = int(d * sr)
        tt = np.arange(k) / sr
        ph = 2 * np.pi * np.cumsum(f0 * (f1 / f0) ** (tt / d)) / sr
        a = int(s * sr)
        y[a : a + k] += np.sin(np.pi * tt / d) * (np.sin(ph) + 0.3 * np.sin(2 * ph))
    return y


def _knocks(rng, n, sr):
    """Knocks / footsteps: a few decaying resonances with a click, at irregular times."""
    y = np.zeros(n)
    modes = np.exp(rng.uniform(np.log(120), np.log(2500), 3))
    decay = rng.uniform(15, 80)
    s = 0.0
    while s < n / sr - 0.05:
        a = int(s * sr)
        k = min(n - a, int(0.3 * sr))
        tt = np.arange(k) / sr
        hit = sum(np.sin(2 * np.pi * f * tt) for f in modes) * np.exp(-decay * tt)
        hit[: int(0.004 * sr)] += rng.standard_normal(int(0.004 * sr))[: min(k, int(0.004 * sr))]
        y[a : a + k] += hit * rng.uniform(0.5, 1.0)
        s += rng.uniform(0.08, 0.6)
    return y


def _beeps(rng, n, sr):
    """Tonal beeps (alarm, horn with two harmonic tones, or a siren sweep)."""
    t = np.arange(n) / sr
    style = rng.integers(0, 3)
    if style == 0:  # repeated beeps
        f = np.exp(rng.uniform(np.log(400), np.log(3500)))
        on, off = rng.uniform(0.08, 0.5), rng.uniform(0.05, 0.5)
        gate = ((t % (on + off)) < on).astype(float)
        tone = np.sin(2 * np.pi * f * t) + rng.uniform(0, 0.5) * np.sin(4 * np.pi * f * t)
        return tone * gate
    if style == 1:  # horn
        f = rng.uniform(300, 600)
        return sum(_note(t, ff, 6, 0.7, np.ones(n), sr) for ff in (f, f * rng.uniform(1.15, 1.3)))
    f = rng.uniform(500, 1200) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 3) * t))
    ph = 2 * np.pi * np.cumsum(f) / sr
    return np.sin(ph) + 0.3 * np.sin(2 * ph)


def _noise_burst(rng, n, sr):
    """A band of noise with a random attack and decay (steam, a door, wind in a microphone)."""
    c = np.exp(rng.uniform(np.log(250), np.log(5000)))
    bw = rng.uniform(0.3, 1.5)
    y = _shaped_noise(rng, n, sr, lambda f: np.exp(-0.5 * (np.log(np.maximum(f, 1) / c) / bw) ** 2))
    return y * _env(n, sr, rng.uniform(0.005, 0.2), rng.uniform(0.05, 0.8) * n / sr)


def _engine(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS engine-like rumble: low harmonics of a wandering rotation rate plus brown
    noise."""
    t = np.arange(n) / sr
    rpm = rng.uniform(20, 45) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t))
    phase = 2 * np.pi * np.cumsum(rpm) / sr
    y = _harmonics(phase, 0.7 ** np.arange(1, 12))
    brown = _shaped_noise(rng, n, sr, lambda f: 1 / np.maximum(f, 20.0))
    y = y / np.sqrt(np.mean(y**2)) + 0.5 * brown
    return y / np.sqrt(np.mean(y**2))


def _vehicle(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A vehicle passing by: engine rumble and tyre noise swelling and fading, its pitch
    dropping a little as it passes (Doppler)."""
    t = np.arange(n) / sr
    dur = n / sr
    centre, width = rng.uniform(0.3, 0.7) * dur, rng.uniform(0.15, 0.35) * dur
    swell = np.exp(-0.5 * ((t - centre) / width) ** 2)
    shift = 1 + rng.uniform(0.02, 0.08) * np.tanh((centre - t) / (0.3 * width))
    rpm = rng.uniform(25, 70) * shift
    engine = _harmonics(2 * np.pi * np.cumsum(rpm) / sr, 0.75 ** np.arange(1, 16))
    corner = rng.uniform(400, 1500)
    tyres = _shaped_noise(rng, n, sr, lambda f: 1 / np.sqrt(1 + (f / corner) ** 2))
    y = engine / np.sqrt(np.mean(engine**2)) + rng.uniform(0.3, 1.0) * tyres
    return y * swell


_DISTRACTORS = (_chirps, _knocks, _beeps, _noise_burst)


def _durations(rng: np.random.Generator, total: float, lo: float, hi: float) -> list[float]:
    out = []
    while sum(out) < total - 1e-9:
        out.append(min(rng.uniform(lo, hi), max(total - sum(out), lo)))
    return out


def _place(rng, mix, events, a: int, b: int, level: float, sr: int) -> list[tuple[int, int]]:
    """Add ``events`` (waveforms) at random, non-overlapping places of ``mix[a:b]``, in random
    order, each at a random SNR against ``level`` (the background's RMS). Events that do not
    fit are cut at ``b``. Returns the ``(first, end)`` samples of each event, in input order."""
    n_ev = sum(len(e) for e in events)
    free = max(0, b - a - n_ev)
    cuts = np.sort(rng.integers(0, free + 1, len(events)))
    pos = a
    prev = 0
    spans = [(a, a)] * len(events)
    for ev, c in zip(rng.permutation(len(events)), cuts, strict=True):
        e = events[ev]
        pos += int(c) - prev
        prev = int(c)
        gain = level * 10 ** (rng.uniform(*_SNR_DB) / 20) / _active_rms(e, sr)
        e = e[: max(0, b - pos)]
        mix[pos : pos + len(e)] += gain * e
        spans[ev] = (pos, pos + len(e))
        pos += len(e)
    return spans


def synthesize(row: pd.Series | dict, *, sample_rate: int = MEDIA_SR) -> np.ndarray:
    """Waveform of one demo media file (the whole "video"), float32 in [-1, 1].

    A background scene over the whole file; inside the segment ``[start, end)``: speech
    phrases and/or music passages covering 15-50 % of it (per label), or for ``other`` clips
    vehicles passing by (the same coverage) and distractor events (chirps, knocks, beeps,
    noise bursts, 15-40 %); half of the speech and music clips get a few distractors too.
    Events of one kind do not overlap; speech may overlap music or a distractor. Every event
    is -6..+6 dB against the background; then a random room (EQ, reverberation) and overall
    level.
    """
    return _scene(row, sample_rate)[0]


def _scene(row, sr: int) -> tuple[np.ndarray, pd.DataFrame]:
    """:func:`synthesize`'s waveform and its events: ``event`` (``speech``, ``music``,
    ``vehicle`` or ``distractor``), ``start`` and ``end`` (seconds of the media file)."""
    rng = np.random.default_rng(int(row["seed"]))
    n = int(round(float(row["media_seconds"]) * sr))
    a = min(n, int(round(float(row.get("start", 0.0)) * sr)))
    b = min(n, int(round(float(row.get("end", row["media_seconds"])) * sr)))
    seg = (b - a) / sr
    kind = row["kind"]
    labels = str(row["labels"])
    mix = _background(rng, n, sr)
    cover = float(rng.uniform(*_TARGET_COVERAGE))
    groups: list[tuple[str, list[np.ndarray]]] = []
    if kind == "speech" or CLASSES["speech"][0] in labels:
        durs = _durations(rng, seg * cover, 0.8, 2.5)
        groups.append(("speech", [_speech(rng, int(d * sr), sr) for d in durs]))
    if kind == "music" or CLASSES["music"][0] in labels:
        durs = _durations(rng, seg * rng.uniform(*_TARGET_COVERAGE), 1.0, 3.0)
        groups.append(("music", [_music(rng, int(d * sr), sr) for d in durs]))
    if kind == "other":
        durs = _durations(rng, seg * cover, 1.5, 4.0)
        groups.append(("vehicle", [_vehicle(rng, int(d * sr), sr) for d in durs]))
        distract = rng.uniform(*_DISTRACTOR_COVERAGE)
    else:
        distract = rng.uniform(0.0, 0.15) if rng.random() < 0.5 else 0.0
    if distract > 0:
        durs = _durations(rng, seg * distract, 0.2, 1.5)
        groups.append(("distractor",
                       [_DISTRACTORS[rng.integers(len(_DISTRACTORS))](rng, int(d * sr), sr)
                        for d in durs]))  # fmt: skip
    placed = []
    for name, events in groups:  # events of one group do not overlap, of different ones may
        spans = _place(rng, mix, [_fade(e, sr, 0.005) for e in events], a, b, 1.0, sr)
        placed += [(name, s / sr, e / sr) for s, e in spans]
    y = _room(rng, mix, sr)
    y *= 10 ** (rng.uniform(-34, -16) / 20) / (np.sqrt(np.mean(y**2)) + 1e-12)
    peak = np.abs(y).max()
    if peak > 0.98:
        y *= 0.98 / peak
    return y.astype(np.float32), pd.DataFrame(placed, columns=["event", "start", "end"])


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
