"""A deterministic offline demo corpus in AudioSet format.

The corpus has eight labels, with real AudioSet MIDs and names (:data:`CLASSES`), each with its
own synthetic sound:

* ``Speech`` (/m/09x0r): phrases of syllables, a voiced source with a wandering pitch whose
  harmonics are shaped by moving vowel formants, some fricatives, short pauses;
* ``Music`` (/m/04rlf): chord progressions of harmonic notes on a beat, often a melody and
  drums;
* ``Guitar`` (/m/0342h, under Music in the ontology): strummed or picked chords of plucked
  strings whose upper partials die away first;
* ``Vehicle`` (/m/07yv9): vehicles passing by (engine harmonics and tyre noise, Doppler);
* ``Dog`` (/m/0bt9lr): groups of barks, short harmonic bursts with a rising-falling pitch;
* ``Bird`` (/m/015p6): songs of repeated high sweeps and trills;
* ``Rain`` (/m/06mb1): high-passed hiss full of droplet clicks;
* ``Siren`` (/m/03kmc9): wail, yelp or hi-lo tones.

There are three kinds of clips, ``clips_per_class`` of each: speech-like (Speech, some over
music), music-like (Music, a share played on guitar and labelled Music and Guitar, a few of
those labelled only Guitar, as AudioSet sometimes names only the descendant) and other (one of
Vehicle, Dog, Bird, Rain or Siren in turn). A share of every kind has a second, everyday sound
labelled too (speech with a dog barking, a vehicle in the rain), so the labels are not mutually
exclusive. ``ontology.json`` holds the labels and the AudioSet nodes between them and their
top-level category (Guitar < Plucked string instrument < Musical instrument < Music).

As in AudioSet the labels are weak: each clip is a scene (a random background ambience,
events, a random room and microphone) in which each labelled sound fills only part (15-50 %)
of the 10 s, at -6..+6 dB against the background, so clip-level averages of spectral features
say little and the time-frequency pattern (harmonic stacks with moving formants, sustained
notes with onsets) is what identifies the label. Unlabelled distractors (knocks, beeps and
horns, noise bursts) and engine rumble or hum in the ambience make the negatives varied. The
split is stratified: each group of clips (kind and main label) has its share of eval clips.
Each clip lives in a longer "video" (a compressed ``.m4a`` media file) at a random offset, and
a few segments are shorter than 10 s, as in AudioSet. Everything is a pure function of the
seed.
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

# key (also the name of its events in a scene) -> (MID, display name, index in AudioSet's
# class_labels_indices.csv)
CLASSES = {
    "speech": ("/m/09x0r", "Speech", 0),
    "dog": ("/m/0bt9lr", "Dog", 74),
    "bird": ("/m/015p6", "Bird", 111),
    "music": ("/m/04rlf", "Music", 137),
    "guitar": ("/m/0342h", "Guitar", 140),
    "rain": ("/m/06mb1", "Rain", 289),
    "vehicle": ("/m/07yv9", "Vehicle", 300),
    "siren": ("/m/03kmc9", "Siren", 396),
}
# the main label of the "other" clips, in turn, and the pool of second sounds of every clip
_SOUNDS = ("vehicle", "dog", "bird", "rain", "siren")
# AudioSet ontology nodes above the labels: MID -> (name, parent MID or None); with the labels'
# own parents in _PARENT, each label's chain up to its top-level category, as in ontology.json
_NODES = {
    "/m/0dgw9r": ("Human sounds", None),
    "/m/09l8g": ("Human voice", "/m/0dgw9r"),
    "/m/04szw": ("Musical instrument", "/m/04rlf"),
    "/m/0fx80y": ("Plucked string instrument", "/m/04szw"),
    "/m/0jbk": ("Animal", None),
    "/m/068hy": ("Domestic animals, pets", "/m/0jbk"),
    "/m/01280g": ("Wild animals", "/m/0jbk"),
    "/m/059j3w": ("Natural sounds", None),
    "/m/0838f": ("Water", "/m/059j3w"),
    "/t/dd00041": ("Sounds of things", None),
    "/m/07pp_mv": ("Alarm", "/t/dd00041"),
}
_PARENT = {
    "speech": "/m/09l8g",
    "dog": "/m/068hy",
    "bird": "/m/01280g",
    "music": None,
    "guitar": "/m/0fx80y",
    "rain": "/m/0838f",
    "vehicle": "/t/dd00041",
    "siren": "/m/07pp_mv",
}
# qa_true_counts.csv: (num_rated, num_true) per label
_QA = {
    "speech": (100, 92), "dog": (100, 88), "bird": (100, 90), "music": (100, 95),
    "guitar": (100, 86), "rain": (100, 78), "vehicle": (100, 70), "siren": (100, 84),
}  # fmt: skip
MEDIA_SR = 22050
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class DemoSpec:
    """Size and seed of the demo corpus.

    Attributes
    ----------
    clips_per_class : int
        Clips of each kind (speech-like, music-like, other).
    eval_fraction : float
        Share of the clips in the eval split (of each group of kind and main label).
    seed : int
        Seed of everything (same seed: byte-identical metadata and the same clips).
    mix_fraction : float
        Share of the speech clips with music under the speech (labelled both).
    short_fraction : float
        Share of segments shorter than 10 s.
    guitar_fraction : float
        Share of the music clips played on guitar (labelled Music and Guitar).
    descendant_only_fraction : float
        Share of the guitar clips labelled only Guitar, not Music.
    extra_fraction : float
        Share of the clips of every kind with a second, labelled everyday sound (one of
        Vehicle, Dog, Bird, Rain, Siren other than the clip's own).
    """

    clips_per_class: int = 80
    eval_fraction: float = 0.25
    seed: int = 7
    mix_fraction: float = 0.15
    short_fraction: float = 0.05
    guitar_fraction: float = 0.35
    descendant_only_fraction: float = 0.2
    extra_fraction: float = 0.35

    @classmethod
    def from_config(cls, demo_cfg: dict) -> DemoSpec:
        """Build from ``config['demo']`` (unknown keys ignored, missing ones from the schema)."""
        return section(cls, demo_cfg, "demo")


def _ytid(seed: int, i: int) -> str:
    h = hashlib.blake2b(f"demo:{seed}:{i}".encode(), digest_size=16).digest()
    return "".join(_ALPHABET[b % 64] for b in h[:11])


def _clip_labels(rng: np.random.Generator, spec: DemoSpec) -> list[tuple[str, str, list[str]]]:
    """``(kind, group, label keys)`` of every clip, kind by kind; ``group`` is the stratum of the
    split (the kind's main label: ``music``, ``guitar`` or ``guitar_only`` for music clips)."""
    n = spec.clips_per_class
    n_guitar = int(round(spec.guitar_fraction * n))
    n_only = int(round(spec.descendant_only_fraction * n_guitar))
    role = np.full(n, "music", dtype=object)
    perm = rng.permutation(n)
    role[perm[:n_guitar]] = "guitar"
    role[perm[:n_only]] = "guitar_only"
    keys_of_role = {"music": ["music"], "guitar": ["music", "guitar"], "guitar_only": ["guitar"]}
    out = []
    for kind in ("speech", "music", "other"):
        for j in range(n):
            if kind == "speech":
                group = "speech"
                keys = ["speech"] + (["music"] if rng.random() < spec.mix_fraction else [])
            elif kind == "music":
                group = str(role[j])
                keys = list(keys_of_role[group])
            else:
                group = _SOUNDS[j % len(_SOUNDS)]
                keys = [group]
            if rng.random() < spec.extra_fraction:
                pool = [k for k in _SOUNDS if k not in keys]
                keys.append(pool[int(rng.integers(len(pool)))])
            out.append((kind, group, keys))
    return out


def _stratified_eval(
    rng: np.random.Generator, groups: list[tuple[str, str]], fraction: float
) -> np.ndarray:
    """Boolean mask of the eval clips: in each group (in order of first appearance) a random
    set, as many as keep the running total at ``round(fraction * clips so far)`` (so every
    group gets its share within one clip, and the whole split its share)."""
    members: dict[tuple[str, str], list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    mask = np.zeros(len(groups), dtype=bool)
    seen = 0
    for idx in members.values():
        k = int(np.floor(fraction * (seen + len(idx)) + 0.5)) - int(np.floor(fraction * seen + 0.5))
        mask[rng.permutation(np.array(idx))[:k]] = True
        seen += len(idx)
    return mask


def corpus(spec: DemoSpec) -> pd.DataFrame:
    """Describe every demo clip.

    Parameters
    ----------
    spec : DemoSpec
        Size and seed.

    Returns
    -------
    DataFrame
        Columns ``ytid, split, kind, labels, start, end, media_seconds, seed``: ``kind`` is
        ``speech``, ``music`` or ``other``, ``labels`` the comma-separated MIDs (the main
        label first), and the segment is ``[start, end)`` of a media file ``media_seconds``
        long.
    """
    rng = np.random.default_rng(spec.seed)
    plan = _clip_labels(rng, spec)
    is_eval = _stratified_eval(rng, [(k, g) for k, g, _ in plan], spec.eval_fraction)
    rows = []
    for i, (kind, _, keys) in enumerate(plan):
        ytid = _ytid(spec.seed, i)
        if i % 17 == 3:  # AudioSet has YTIDs starting with '-': make sure the demo does too
            ytid = "-" + ytid[1:]
        seg = 10.0
        pre = float(np.round(rng.uniform(0.0, 4.0), 3))
        post = float(np.round(rng.uniform(0.0, 2.0), 3))
        if rng.random() < spec.short_fraction:
            seg = float(np.round(rng.uniform(5.0, 9.0), 3))
            post = 0.0  # the video ends with the segment, as for AudioSet's short ones
        rows.append(
            (ytid, "eval" if is_eval[i] else "train", kind,
             ",".join(CLASSES[k][0] for k in keys), pre, pre + seg, pre + seg + post,
             int(rng.integers(2**31)))
        )  # fmt: skip
    return pd.DataFrame(
        rows, columns=["ytid", "split", "kind", "labels", "start", "end", "media_seconds", "seed"]
    )


def _ontology() -> list[dict]:
    """``ontology.json`` entries of the labels and the AudioSet nodes above them, each with the
    ``child_ids`` among these entries (the real ontology's structure, cut to the demo)."""
    nodes = {m: (n, p) for m, (n, p) in _NODES.items()}
    for key, (mid, name, _) in sorted(CLASSES.items(), key=lambda kv: kv[1][2]):
        nodes[mid] = (name, _PARENT[key])
    children: dict[str, list[str]] = {m: [] for m in nodes}
    for mid, (_, parent) in nodes.items():
        if parent is not None:
            children[parent].append(mid)
    return [
        {"id": mid, "name": name, "description": f"Demo class {name}.", "citation_uri": "",
         "positive_examples": [], "child_ids": children[mid], "restrictions": []}
        for mid, (name, _) in nodes.items()
    ]  # fmt: skip


def write_metadata(folder: str | Path, spec: DemoSpec) -> bool:
    """Write the demo's AudioSet-format metadata files into ``folder`` if they are not there
    already for this spec.

    Files: ``balanced_train_segments.csv``, ``eval_segments.csv``, ``class_labels_indices.csv``,
    ``qa_true_counts.csv``, ``ontology.json``, ``corpus.tsv`` (the full description) and
    ``spec.json``.

    Parameters
    ----------
    folder : str or Path
        Where to write.
    spec : DemoSpec
        The corpus.

    Returns
    -------
    bool
        Whether anything was written.
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
    classes = sorted(CLASSES.items(), key=lambda kv: kv[1][2])
    lines = ["index,mid,display_name"] + [f'{i},{m},"{n}"' for _, (m, n, i) in classes]
    atomic_write_text(folder / "class_labels_indices.csv", "\n".join(lines) + "\n")
    lines = ["label_id,num_rated,num_true"] + [
        f"{i},{_QA[k][0]},{_QA[k][1]}" for k, (_, _, i) in classes
    ]
    atomic_write_text(folder / "qa_true_counts.csv", "\n".join(lines) + "\n")
    atomic_write_text(folder / "ontology.json", json.dumps(_ontology(), indent=1) + "\n")
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
_TARGET_COVERAGE = (0.15, 0.5)  # fraction of the segment covered by each label's sound
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


def _guitar(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A guitar-like passage of ``n`` samples: a chord progression strummed (the strings a few
    ms apart, down and up) or picked one string at a time, each string a plucked harmonic tone
    (partials weighted by the plucking point, the upper ones dying away faster, a pick click)."""
    beat = 60.0 / rng.uniform(70, 140)
    root = 82.4 * 2 ** (rng.integers(0, 10) / 12)  # E2 .. C#3
    minor = rng.random() < 0.4
    third = 3 if minor else 4
    prog = [[0, 5, 7, 3], [0, 7, 9, 5], [0, 3, 5, 7], [0, 5, 3, 7]][rng.integers(0, 4)]
    shape = np.array([0, 7, 12, 12 + third, 19, 24])  # a six-string chord voicing
    strum = rng.random() < 0.6
    pluck_at = rng.uniform(0.08, 0.25)  # plucking point, fraction of the string
    decay, damp = rng.uniform(1.5, 4.0), rng.uniform(0.15, 0.5)  # 1/s, growing per partial
    ring = int(min(1.6, 4.0 / decay) * sr)
    y = np.zeros(n)

    step = beat / 2
    if strum:  # a string rings until the next strum but one damps it
        ring = min(ring, int(2.2 * step * sr))

    def pluck(a: int, f: float, amp: float) -> None:
        k = min(ring, n - a)
        if k <= 0:
            return
        t = np.arange(k) / sr
        ph = 2 * np.pi * f * t
        s_prev, s, c2 = np.zeros(k), np.sin(ph), 2 * np.cos(ph)
        env, step = np.exp(-decay * t), np.exp(-decay * damp * t)
        out = np.zeros(k)
        for h in range(1, min(14, int(0.45 * sr / f)) + 1):
            out += (abs(np.sin(np.pi * h * pluck_at)) / h) * env * s
            env = env * step
            s_prev, s = s, c2 * s - s_prev
        click = min(k, int(0.003 * sr))
        out[:click] += 0.3 * rng.standard_normal(click)
        out *= np.minimum(t / 0.002, 1.0) * np.minimum((k - 1 - np.arange(k)) / (0.01 * sr), 1.0)
        y[a : a + k] += amp * out

    for j in range(int(n / sr / step) + 1):
        a = int(j * step * sr)
        if a >= n:
            break
        chord = root * 2 ** ((prog[(j // 4) % len(prog)] + shape) / 12)
        if strum:
            if j % 2 == 1 and rng.random() < 0.3:
                continue  # a skipped up-strum
            order = chord if j % 2 == 0 else chord[::-1]
            gap = rng.uniform(0.006, 0.025) * sr
            amp = rng.uniform(0.6, 1.0) * (1.0 if j % 2 == 0 else 0.7)
            for s_i, f in enumerate(order):
                pluck(a + int(s_i * gap), float(f), amp)
        else:
            pattern = (0, 3, 2, 4, 1, 3, 2, 5)
            pluck(a, float(chord[pattern[j % 8]]), rng.uniform(0.7, 1.0))
    return _fade(y, sr)


def _bark(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Dog barks: groups of short harmonic bursts (the pitch rising then falling, formant
    shaped, rough with noise) with a sharp attack, between pauses."""
    size = rng.uniform(0.0, 1.0)  # 0 small dog .. 1 large dog
    f0_base = 650 * 2 ** (-1.5 * size) * rng.uniform(0.9, 1.1)
    formant = 1600 * 2 ** (-size) * rng.uniform(0.85, 1.15)
    rough = rng.uniform(0.2, 0.7)
    noise = _shaped_noise(
        rng, n, sr, lambda f: np.exp(-0.5 * (np.log(np.maximum(f, 1) / formant) / 0.6) ** 2)
    )  # fmt: skip
    y = np.zeros(n)
    pos = rng.uniform(0.0, 0.1)
    in_group, group_len = 0, int(rng.integers(1, 5))
    while pos < n / sr - 0.08:
        d = rng.uniform(0.08, 0.22)
        k = min(n - int(pos * sr), int(d * sr))
        t = np.arange(k) / sr
        u = t / d
        f0 = f0_base * rng.uniform(0.9, 1.1) * (0.8 + 0.5 * np.sin(np.pi * np.minimum(u, 1)))
        weights = [
            h**-0.4 / (1 + ((h * f0_base - formant) / (0.8 * formant)) ** 2)
            for h in range(1, max(2, int(5000 / f0_base)) + 1)
        ]
        tone = _harmonics(2 * np.pi * np.cumsum(f0) / sr, weights)
        tone /= np.sqrt(np.mean(tone**2)) + 1e-12
        a = int(pos * sr)
        env = np.minimum(t / 0.006, 1.0) * np.exp(-3.0 * u)
        y[a : a + k] += rng.uniform(0.6, 1.0) * env * (tone + rough * noise[a : a + k])
        in_group += 1
        if in_group >= group_len:
            in_group, group_len = 0, int(rng.integers(1, 5))
            pos += d + rng.uniform(0.35, 0.9)
        else:
            pos += d + rng.uniform(0.1, 0.3)
    return y


def _bird(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bird song: phrases of a few syllable types (fast high sweeps, or trills: a tone
    warbling tens of times a second), each repeated a few times, with a second harmonic."""
    types = []
    for _ in range(int(rng.integers(1, 4))):
        f0, f1 = np.exp(rng.uniform(np.log(1800), np.log(min(8000, 0.3 * sr)), 2))
        types.append((rng.random() < 0.35, f0, f1, rng.uniform(0.03, 0.15), rng.uniform(15, 40)))
    y = np.zeros(n)
    pos = rng.uniform(0.0, 0.1)
    while pos < n / sr - 0.03:
        trill, f0, f1, d, rate = types[int(rng.integers(len(types)))]
        if trill:
            d *= 3
        period = d + rng.uniform(0.02, 0.12)
        for _ in range(int(rng.integers(1, 6))):
            a = int(pos * sr)
            k = min(n - a, int(d * sr))
            if k <= 0:
                break
            tt = np.arange(k) / sr
            if trill:
                f = f0 * (1 + 0.15 * np.sin(2 * np.pi * rate * tt))
            else:
                f = f0 * (f1 / f0) ** (tt / d)
            ph = 2 * np.pi * np.cumsum(f) / sr
            y[a : a + k] += np.sin(np.pi * tt / d) ** 2 * (np.sin(ph) + 0.25 * np.sin(2 * ph))
            pos += period
        pos += rng.uniform(0.1, 0.6)
    return y


def _rain(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Rain: a high-passed hiss and a dense crackle of droplets (short decaying resonances at
    random times and strengths), its intensity slowly wandering."""
    corner = rng.uniform(800, 2500)
    hiss = _shaped_noise(
        rng, n, sr, lambda f: 1 / np.sqrt(1 + (corner / np.maximum(f, 1)) ** 4)
    )  # fmt: skip
    rate = rng.uniform(80, 400)  # drops per second
    m = _fft_len(n + int(0.03 * sr))
    drops = np.zeros(m)
    for _ in range(3):  # three families of drops, each one resonance
        count = rng.poisson(rate * n / sr / 3)
        train = np.zeros(m)
        np.add.at(train, rng.integers(0, n, count), rng.lognormal(0.0, 0.8, count))
        tt = np.arange(int(0.03 * sr)) / sr
        f = rng.uniform(1500, 6000)
        kern = np.exp(-tt / rng.uniform(0.002, 0.008)) * np.sin(2 * np.pi * f * tt * (1 + 8 * tt))
        drops += np.fft.irfft(np.fft.rfft(train) * np.fft.rfft(kern, m), m)
    drops = drops[:n] / (np.sqrt(np.mean(drops[:n] ** 2)) + 1e-12)
    y = rng.uniform(0.3, 0.8) * hiss + drops
    return y * np.exp(0.25 * _smooth_random(rng, n, sr, 0.7))


def _siren(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A siren: a wail (slow rise and fall), a yelp (fast), or hi-lo (two alternating tones),
    with odd-heavy harmonics."""
    t = np.arange(n) / sr
    style = rng.integers(0, 3)
    lo = rng.uniform(450, 800)
    hi = lo * rng.uniform(1.5, 2.2)
    if style == 2:
        half = rng.uniform(0.35, 0.7)
        f = np.where((t % (2 * half)) < half, hi * 0.8, lo * 1.1)
    else:
        period = rng.uniform(2.0, 5.0) if style == 0 else rng.uniform(0.15, 0.35)
        f = lo + (hi - lo) * (0.5 - 0.5 * np.cos(2 * np.pi * (t / period + rng.uniform(0, 1))))
    ph = 2 * np.pi * np.cumsum(f) / sr
    return _harmonics(ph, (1.0, 0.15, 0.45, 0.1, 0.25, 0.05, 0.12))


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
    """Tonal beeps (an alarm's repeated beeps, or a horn with two harmonic tones)."""
    t = np.arange(n) / sr
    if rng.random() < 0.5:  # repeated beeps
        f = np.exp(rng.uniform(np.log(400), np.log(3500)))
        on, off = rng.uniform(0.08, 0.5), rng.uniform(0.05, 0.5)
        gate = ((t % (on + off)) < on).astype(float)
        tone = np.sin(2 * np.pi * f * t) + rng.uniform(0, 0.5) * np.sin(4 * np.pi * f * t)
        return tone * gate
    f = rng.uniform(300, 600)  # horn
    return sum(_note(t, ff, 6, 0.7, np.ones(n), sr) for ff in (f, f * rng.uniform(1.15, 1.3)))


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


# unlabelled events (none of them sounds like a label's)
_DISTRACTORS = (_knocks, _beeps, _noise_burst)
# label key -> (generator, shortest and longest event in seconds); the order of the scene's groups
_GENERATORS = {
    "speech": (_speech, 0.8, 2.5),
    "music": (_music, 1.0, 3.0),
    "guitar": (_guitar, 1.0, 3.0),
    "vehicle": (_vehicle, 1.5, 4.0),
    "dog": (_bark, 0.5, 2.0),
    "bird": (_bird, 0.5, 2.5),
    "rain": (_rain, 1.5, 4.0),
    "siren": (_siren, 1.0, 3.5),
}


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

    A background scene over the whole file; inside the segment ``[start, end)``, for each
    label of the clip, events of its sound covering 15-50 % of the segment (a clip labelled
    Music and Guitar: guitar passages), and distractor events (knocks, beeps and horns, noise
    bursts: 15-40 % of ``other`` clips, a little of half the speech and music clips). Events
    of one sound do not overlap; of different sounds they may. Every event is -6..+6 dB
    against the background; then a random room (EQ, reverberation) and overall level.

    Parameters
    ----------
    row : Series or dict
        A row of :func:`corpus`.
    sample_rate : int
        Of the waveform.

    Returns
    -------
    ndarray
        ``round(media_seconds * sample_rate)`` samples.
    """
    return _scene(row, sample_rate)[0]


def _scene(row, sr: int) -> tuple[np.ndarray, pd.DataFrame]:
    """:func:`synthesize`'s waveform and its events: ``event`` (a key of :data:`CLASSES`, or
    ``distractor``), ``start`` and ``end`` (seconds of the media file)."""
    rng = np.random.default_rng(int(row["seed"]))
    n = int(round(float(row["media_seconds"]) * sr))
    a = min(n, int(round(float(row.get("start", 0.0)) * sr)))
    b = min(n, int(round(float(row.get("end", row["media_seconds"])) * sr)))
    seg = (b - a) / sr
    mids = set(str(row["labels"]).split(","))
    keys = [k for k in _GENERATORS if CLASSES[k][0] in mids]
    if "guitar" in keys and "music" in keys:
        keys.remove("music")  # the guitar plays the music
    mix = _background(rng, n, sr)
    groups: list[tuple[str, list[np.ndarray]]] = []
    for key in keys:
        make, lo, hi = _GENERATORS[key]
        durs = _durations(rng, seg * rng.uniform(*_TARGET_COVERAGE), lo, hi)
        groups.append((key, [make(rng, int(d * sr), sr) for d in durs]))
    if row["kind"] == "other":
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
