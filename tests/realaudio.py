"""A corpus of real recordings from Debian packages, split by package (not a test module).

The demo corpus is synthetic; a model that only ranks its clips well says little about
recordings. This fixture installs a few Debian packages that ship recorded audio (apt-get, as
root) and turns their files, with the project's own pipeline code, into 10-s clips with
features: :func:`audiosetflow.audio.codec.transcode_many` (ffmpeg, mono at the feature sample
rate), :func:`audiosetflow.audio.codec.trim` (the exact 10-s clip, FLAC),
:func:`audiosetflow.audio.features.compute` and :func:`~audiosetflow.audio.features.write_shard`.

Every clip is labelled by its source as Speech, Music or other (``Sound effect``: sound
effects, event sounds and ambience), and every clip records the package it comes from. The
packages are split into two sides: the ``train`` split (the models' train and val parts) and
the ``eval`` split (the test part), so that no package, and so no recording, is on both sides;
the val part takes whole recordings of the training packages. The speech of the held-out side
is in a language the training side never has (Mexican Spanish against US English and Canadian
French), the music and effects are from other games and desktops.

=============================  ======  ====================================================
package                        side    what it gives (and why it is real audio)
=============================  ======  ====================================================
asterisk-core-sounds-en-g722   train   Speech: ~570 studio-recorded voice prompts of the
                                       Asterisk PBX (US English, a human speaker), 16 kHz
asterisk-core-sounds-fr-g722   train   Speech: the same prompts recorded in Canadian French
asc-music                      train   Music: three recorded MP3 tracks of Advanced Strategic
                                       Command
btanks-data                    train   Music: the game's OGG tunes; other: recorded ambience
                                       loops (city, forest, swamp, ...) and sound effects
sound-theme-freedesktop        train   other: desktop event sounds (the spoken
                                       ``audio-channel-*`` files are left out)
asterisk-core-sounds-es-g722   eval    Speech: the prompts in Mexican Spanish
frozen-bubble-data             eval    Music: the game's OGG music; other: its sound effects
extremetuxracer-data           eval    Music: the game's OGG music; other: its recorded
                                       sliding sounds (snow, ice, grass, mud, ...)
tuxtype-data                   eval    Music: three OGG tracks; other: its WAV effects
deepin-sound-theme             eval    other: desktop event sounds (WAV)
=============================  ======  ====================================================

About 140 MB are downloaded. Synthetic speech (espeak, festival voices) is deliberately not
used. Files shorter than a clip (prompts, effects) are concatenated in a fixed pseudo-random
order, whole files with 0.2 s of silence between them, until a clip is full; the clip is then
one recording. Longer files give up to :data:`PER_FILE` clips each, evenly spread over the
file; every clip of a file is the same recording. A package gives at most :data:`PER_GROUP`
clips of each class.

The built corpus is cached in ``$AUDIOSETFLOW_REALAUDIO_CACHE`` (default
``~/.cache/audiosetflow-realaudio``) in a folder named by a hash of the packages' versions, the
feature parameters and :data:`BUILD_VERSION`; it is built under a temporary name and renamed
into place, so an interrupted build is never taken for a corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Bump when the way clips are cut or labelled changes (a new cache folder).
BUILD_VERSION = 1
CLIP_SECONDS = 10.0
SAMPLE_RATE = 22050
#: Clips per (package, class) at most.
PER_GROUP = 40
#: Clips per long file at most.
PER_FILE = 8
#: Silence between concatenated short files (seconds).
GAP_SECONDS = 0.2

#: (name, MID) of the three classes.
CLASSES = {
    "Speech": "/m/09x0r",
    "Music": "/m/04rlf",
    "Sound effect": "/m/0c1dj",
}
AUDIO = r"\.(g722|ogg|oga|mp3|wav)$"


@dataclass(frozen=True)
class Source:
    """Files of a package that give clips of one class: paths matching ``pattern`` and not
    ``exclude`` (regular expressions, searched in the installed path)."""

    cls: str
    pattern: str
    exclude: str | None = None


@dataclass(frozen=True)
class Package:
    name: str
    side: str  # "train" or "eval"
    sources: tuple[Source, ...]


PACKAGES: tuple[Package, ...] = (
    Package("asterisk-core-sounds-en-g722", "train", (Source("Speech", r"\.g722$"),)),
    Package("asterisk-core-sounds-fr-g722", "train", (Source("Speech", r"\.g722$"),)),
    Package("asc-music", "train", (Source("Music", r"/music/.*\.mp3$"),)),
    Package(
        "btanks-data",
        "train",
        (
            Source("Music", r"/tunes/.*\.ogg$"),
            Source("Sound effect", r"/sounds/.*\.ogg$"),
        ),
    ),
    Package(
        "sound-theme-freedesktop",
        "train",
        (Source("Sound effect", r"\.oga$", exclude=r"/audio-channel-|/audio-test-signal"),),
    ),
    Package("asterisk-core-sounds-es-g722", "eval", (Source("Speech", r"\.g722$"),)),
    Package(
        "frozen-bubble-data",
        "eval",
        (
            Source("Music", r"/snd/(frozen-mainzik.*|introzik)\.ogg$"),
            Source("Sound effect", r"/snd/.*\.ogg$", exclude=r"zik"),
        ),
    ),
    Package(
        "extremetuxracer-data",
        "eval",
        (
            Source("Music", r"/music/.*\.ogg$"),
            Source("Sound effect", r"/sounds/.*\.wav$"),
        ),
    ),
    Package(
        "tuxtype-data",
        "eval",
        (
            Source("Music", r"/sounds/.*\.ogg$"),
            Source("Sound effect", r"/sounds/.*\.wav$"),
        ),
    ),
    Package("deepin-sound-theme", "eval", (Source("Sound effect", r"/stereo/.*\.wav$"),)),
)

#: Columns of the corpus table (``clips.tsv``).
CLIP_COLUMNS = ("ytid", "split", "package", "cls", "recording", "files", "duration")


class RealAudioUnavailable(RuntimeError):
    """The packages cannot be installed here (the reason is the message)."""


@dataclass(frozen=True)
class RealCorpus:
    """A built corpus: ``clips`` (one row per clip, :data:`CLIP_COLUMNS`), the feature shards
    of the ``train`` and ``eval`` splits, and the packages' versions."""

    root: Path
    clips: pd.DataFrame
    features: dict[str, Path]
    versions: dict[str, str]


def _run(cmd: list[str], timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def installed_versions(names) -> dict[str, str]:
    """``{package: version}`` of the installed packages among ``names``."""
    out = {}
    for n in names:
        p = _run(["dpkg-query", "-W", "-f=${Status}\t${Version}", n], timeout=60)
        if p.returncode == 0 and p.stdout.startswith("install ok installed"):
            out[n] = p.stdout.split("\t", 1)[1].strip()
    return out


def ensure_packages(names=None) -> dict[str, str]:
    """Install the packages that are missing (``apt-get update`` first); return their
    versions.

    Raises
    ------
    RealAudioUnavailable
        Not root, no apt-get, or apt-get failed (its last line is the reason).
    """
    names = [p.name for p in PACKAGES] if names is None else list(names)
    have = installed_versions(names)
    missing = [n for n in names if n not in have]
    if missing:
        if shutil.which("apt-get") is None:
            raise RealAudioUnavailable(f"no apt-get to install {', '.join(missing)}")
        if os.geteuid() != 0:
            raise RealAudioUnavailable(f"not root: cannot apt-get install {', '.join(missing)}")
        lock = ["-o", "DPkg::Lock::Timeout=900"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", *lock, "update"],
            ["apt-get", *lock, "install", "-y", "--no-install-recommends", *missing],
        ):
            p = subprocess.run(
                cmd, capture_output=True, text=True, timeout=1800, env=env, check=False
            )
            if p.returncode != 0:
                last = (p.stderr.strip() or p.stdout.strip() or "failed").splitlines()[-1]
                raise RealAudioUnavailable(f"{' '.join(cmd[:1] + cmd[3:4])} failed: {last}")
        have = installed_versions(names)
        still = [n for n in names if n not in have]
        if still:
            raise RealAudioUnavailable(f"apt-get did not install {', '.join(still)}")
    return {n: have[n] for n in names}


def package_files(name: str) -> list[str]:
    """The installed audio files of a package (``dpkg -L``), sorted."""
    p = _run(["dpkg", "-L", name], timeout=60)
    if p.returncode != 0:
        raise RealAudioUnavailable(f"dpkg -L {name} failed: {p.stderr.strip()}")
    return sorted(
        f for f in p.stdout.splitlines() if re.search(AUDIO, f, re.I) and os.path.isfile(f)
    )


def _source_files(pkg: Package, files: list[str]) -> dict[str, list[str]]:
    """Each file goes to the first source of the package it matches."""
    out: dict[str, list[str]] = {s.cls: [] for s in pkg.sources}
    for f in files:
        for s in pkg.sources:
            if re.search(s.pattern, f) and not (s.exclude and re.search(s.exclude, f)):
                out[s.cls].append(f)
                break
    return out


def _hash(*parts) -> str:
    return hashlib.sha1("\x00".join(map(str, parts)).encode()).hexdigest()


def _ytid(*parts) -> str:
    h = hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=16).digest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    return "".join(alphabet[b % 64] for b in h[:11])


def _spread(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices evenly spread over ``range(n)``."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / (k - 1))) for i in range(k)}) if k > 1 else [0]


def _cut_group(pkg: Package, cls: str, files: list[str], work: Path) -> list[dict]:
    """Clips (rows with their FLAC path) of one package's files of one class."""
    import soundfile as sf

    from audiosetflow.audio.codec import transcode_many, trim
    from audiosetflow.io import atomic_path

    n_clip = int(round(CLIP_SECONDS * SAMPLE_RATE))
    wav = work / "wav"
    wav.mkdir(parents=True, exist_ok=True)
    pairs = [(f, wav / f"{_hash(f)}.wav") for f in files]
    secs = transcode_many(pairs, sample_rate=SAMPLE_RATE)
    ok = [(f, d, s) for (f, d), s in zip(pairs, secs, strict=True) if isinstance(s, float)]
    rows: list[dict] = []
    long = [(f, d, s) for f, d, s in ok if s >= CLIP_SECONDS]
    short = [(f, d, s) for f, d, s in ok if s < CLIP_SECONDS]
    clips = work / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    # long files: clips evenly spread over the file, each file one recording
    for f, d, s in long:
        n_seg = int(s // CLIP_SECONDS)
        for k in _spread(n_seg, PER_FILE):
            ytid = _ytid(pkg.name, f, k)
            trim(
                d,
                clips / f"{ytid}.flac",
                offset=0.0,
                start=k * CLIP_SECONDS,
                end=(k + 1) * CLIP_SECONDS,
                clip_seconds=CLIP_SECONDS,
            )
            rows.append(
                {
                    "ytid": ytid,
                    "recording": _hash(pkg.name, f)[:12],
                    "files": Path(f).name,
                    "start": k * CLIP_SECONDS,
                }
            )
    # short files: whole files in a fixed pseudo-random order, concatenated to a clip
    short.sort(key=lambda t: _hash(pkg.name, t[0]))
    gap = np.zeros(int(round(GAP_SECONDS * SAMPLE_RATE)), dtype=np.int16)
    chunk: list[np.ndarray] = []
    names: list[str] = []
    for f, d, _ in short:
        chunk += [sf.read(str(d), dtype="int16")[0], gap]
        names.append(Path(f).name)
        if sum(map(len, chunk)) < n_clip:
            continue
        ytid = _ytid(pkg.name, *names)
        window = wav / f"window-{ytid}.wav"
        with atomic_path(window) as tmp:
            sf.write(str(tmp), np.concatenate(chunk), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        trim(
            window,
            clips / f"{ytid}.flac",
            offset=0.0,
            start=0.0,
            end=CLIP_SECONDS,
            clip_seconds=CLIP_SECONDS,
        )
        rows.append(
            {
                "ytid": ytid,
                "recording": _hash(pkg.name, *names)[:12],
                "files": " ".join(names),
                "start": 0.0,
            }
        )
        chunk, names = [], []
    keep = _spread(len(rows), PER_GROUP)
    out = []
    for i in keep:
        r = rows[i]
        r.update(split=pkg.side, package=pkg.name, cls=cls, clip=clips / f"{r['ytid']}.flac")
        out.append(r)
    return out


def _build(root: Path, versions: dict[str, str]) -> None:
    """Cut, compute and write the corpus into ``root`` (a new folder)."""
    import soundfile as sf

    from audiosetflow.audio.features import FeatureParams, compute, write_shard

    params = FeatureParams(sample_rate=SAMPLE_RATE)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="realaudio-") as work:
        for pkg in PACKAGES:
            groups = _source_files(pkg, package_files(pkg.name))
            for cls, files in groups.items():
                if not files:
                    raise RuntimeError(f"{pkg.name}: no {cls} files (its layout changed?)")
                rows += _cut_group(pkg, cls, files, Path(work) / pkg.name / cls)
        clips = pd.DataFrame(rows)
        for split in ("train", "eval"):
            part = clips[clips["split"] == split].reset_index(drop=True)
            meta = pd.DataFrame(
                {
                    "ytid": part["ytid"],
                    "split": split,
                    "start": 0.0,
                    "end": CLIP_SECONDS,
                    "labels": [[CLASSES[c]] for c in part["cls"]],
                    "label_names": [[c] for c in part["cls"]],
                    "status": "ok",
                    "reason": "",
                    "short": False,
                    "duration": CLIP_SECONDS,
                }
            )
            folder = root / "features" / split
            folder.mkdir(parents=True)
            for k, lo in enumerate(range(0, len(meta), 64)):
                feats = [
                    compute(sf.read(str(p), dtype="float32")[0], params=params)
                    for p in part["clip"].iloc[lo : lo + 64]
                ]
                write_shard(
                    folder / f"shard-{k:04d}.parquet",
                    meta=meta.iloc[lo : lo + 64].reset_index(drop=True),
                    features=feats,
                    params=params,
                )
        clips["duration"] = CLIP_SECONDS
        clips[list(CLIP_COLUMNS)].to_csv(root / "clips.tsv", sep="\t", index=False)
        (root / "versions.json").write_text(json.dumps(versions, indent=1, sort_keys=True))


def cache_root() -> Path:
    env = os.environ.get("AUDIOSETFLOW_REALAUDIO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "audiosetflow-realaudio"


def real_corpus() -> RealCorpus:
    """Install the packages if needed and return the corpus, built once per set of package
    versions (cached).

    Raises
    ------
    RealAudioUnavailable
        If the packages cannot be installed here.
    """
    from audiosetflow.audio.features import FeatureParams

    versions = ensure_packages()
    key = _hash(
        BUILD_VERSION,
        json.dumps(versions, sort_keys=True),
        json.dumps(FeatureParams(sample_rate=SAMPLE_RATE).to_dict(), sort_keys=True),
        PER_GROUP,
        PER_FILE,
    )[:16]
    root = cache_root() / f"v{BUILD_VERSION}-{key}"
    if not (root / "clips.tsv").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            _build(tmp, versions)
            try:
                tmp.rename(root)
            except OSError:  # built meanwhile by another process
                if not (root / "clips.tsv").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    clips = pd.read_csv(root / "clips.tsv", sep="\t", dtype={"ytid": str})
    return RealCorpus(
        root=root,
        clips=clips,
        features={s: root / "features" / s for s in ("train", "eval")},
        versions=versions,
    )


def write_label_dataset(
    corpus: RealCorpus, out_dir: Path, *, cls: str, val_fraction: float = 0.25
) -> dict[str, pd.DataFrame]:
    """The dataset of one class, split by package: ``train`` and ``val`` from the training
    packages (val: about ``val_fraction`` of each package's recordings of each class, whole
    recordings), ``test`` from the held-out packages. Written as ``out_dir/{part}.tsv``
    (:func:`audiosetflow.learning.datasets.write_dataset`)."""
    from audiosetflow.learning.datasets import write_dataset

    c = corpus.clips.copy()
    c["target"] = (c["cls"] == cls).astype(int)
    train = c[c["split"] == "train"]
    # whole recordings to val, chosen by hash within each (package, class)
    is_val = np.zeros(len(train), dtype=bool)
    for _, idx in train.groupby(["package", "cls"]).groups.items():
        recs = sorted(set(train.loc[idx, "recording"]), key=lambda r: _hash("val", r))
        n_val = max(1, int(round(val_fraction * len(recs)))) if len(recs) > 1 else 0
        chosen = set(recs[:n_val])
        is_val[train.index.get_indexer(idx)] = train.loc[idx, "recording"].isin(chosen).to_numpy()
    parts = {
        "train": train[~is_val].reset_index(drop=True),
        "val": train[is_val].reset_index(drop=True),
        "test": c[c["split"] == "eval"].reset_index(drop=True),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_dataset(out_dir, parts)
    return parts


def label_data(corpus: RealCorpus, cls: str, out_dir: Path, settings=None):
    """One class's dataset (:func:`write_label_dataset`) loaded as the training job loads it
    (:func:`audiosetflow.learning.training.load_label_data`).

    Returns
    -------
    data : audiosetflow.learning.training.LabelData
    parts : dict of str to DataFrame
        The dataset parts with the corpus columns (``package``, ``recording``, ...).
    """
    import logging

    from audiosetflow.audio.features import FeatureParams
    from audiosetflow.learning.training import (
        LabelRef,
        TrainJob,
        TrainOutputs,
        TrainSettings,
        load_label_data,
    )

    parts = write_label_dataset(corpus, out_dir, cls=cls)
    job = TrainJob(
        label=LabelRef(slug=cls.lower().replace(" ", "_"), name=cls, mid=CLASSES[cls]),
        dataset=out_dir,
        train_features=corpus.features["train"],
        eval_features=corpus.features["eval"],
        params=FeatureParams(sample_rate=SAMPLE_RATE),
        outputs=TrainOutputs(model="", metrics="", roc_pr="", confusion="", curves=""),
    )
    settings = settings or TrainSettings.from_config({}, seed=1234)
    data = load_label_data(job, settings, logger=logging.getLogger("realaudio"))
    return data, parts
