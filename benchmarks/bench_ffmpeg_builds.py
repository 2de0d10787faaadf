"""How far the features of the same clips lie apart when another ffmpeg build decodes them.

The builds are the system's ffmpeg (Debian 12: 5.1) and imageio-ffmpeg's static binary (9.0),
as tests/ffmpeg_builds.py finds them. On the demo corpus (``--clips-per-class`` clips of each
kind, seed 5):

(a) the same media (encoded once, by imageio's build, as YouTube's media are fixed) go through
    the workflow's transcode (``codec.transcode_many``) and trim with each build, then
    ``features.compute``: the largest absolute difference of the PCM and of every feature;
(b) the demo's media encoded by each build's own AAC encoder, then decoded by the same build:
    how far the whole chain (what a demo run makes with that build) lies apart.

Usage: python benchmarks/bench_ffmpeg_builds.py [--clips-per-class 10]  (1 for a quick run)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from ffmpeg_builds import clear_ffmpeg_caches, ffmpeg_builds, version  # noqa: E402

from audiosetflow import demo  # noqa: E402
from audiosetflow.audio import codec  # noqa: E402
from audiosetflow.audio.features import FeatureParams, compute  # noqa: E402

SR = 22050


def use(exe: str) -> None:
    os.environ["AUDIOSETFLOW_FFMPEG"] = exe
    clear_ffmpeg_caches()


def features(media, corpus, folder: Path, params) -> list[tuple[np.ndarray, dict]]:
    folder.mkdir(parents=True)
    windows = [folder / f"{y}-window.flac" for y in corpus["ytid"]]
    for r in codec.transcode_many(zip(media, windows, strict=True), sample_rate=SR):
        if isinstance(r, Exception):
            raise r
    out = []
    for (_, row), window in zip(corpus.iterrows(), windows, strict=True):
        clip = folder / f"{row['ytid']}.flac"
        codec.trim(window, clip, offset=0.0, start=row["start"], end=row["end"])
        y, _ = sf.read(str(clip), dtype="float32")
        out.append((y, compute(y, params=params)))
    return out


def largest(a, b, keep=None) -> dict[str, float]:
    """Largest absolute differences of PCM and features; ``keep``: per clip, how many samples
    (and the frames that read only those) to compare (None: all)."""
    keep = keep or [None] * len(a)
    worst = {"pcm": 0.0}
    for (ya, fa), (yb, fb), n in zip(a, b, keep, strict=True):
        worst["pcm"] = max(worst["pcm"], float(np.abs(ya[:n] - yb[:n]).max()))
        t = None if n is None else (n - 1024) // 512 + 1  # centred frames, n_fft 2048, hop 512
        for k in fa:
            d = np.abs(np.asarray(fa[k], np.float64) - np.asarray(fb[k], np.float64))[..., :t]
            worst[k] = max(worst.get(k, 0.0), float(d.max()))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips-per-class", type=int, default=10)
    ap.add_argument("--tiny", action="store_true", help="CI size: 2 clips a class")
    args = ap.parse_args()
    if args.tiny:
        args.clips_per_class = 2
    builds = {n: e for n, (e, _) in ffmpeg_builds().items() if e}
    if len(builds) < 2:
        sys.exit("needs both ffmpeg builds: " + str(ffmpeg_builds()))
    for n, e in builds.items():
        print(f"{n}: {e} ({version(e)})")
    spec = demo.DemoSpec(clips_per_class=args.clips_per_class, seed=5)
    corpus = demo.corpus(spec)
    params = FeatureParams.from_config({}, sample_rate=SR)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        media = {}
        for n, exe in builds.items():
            use(exe)
            media[n] = demo.write_media(root / f"media-{n}", spec, threads=2)
        got = {}
        for enc, dec in (("imageio", "system"), ("imageio", "imageio"), ("system", "system")):
            use(builds[dec])
            got[enc, dec] = features(media[enc], corpus, root / f"{enc}-{dec}", params)
    fmt = lambda d: ", ".join(f"{k} {v:.3g}" for k, v in d.items())  # noqa: E731
    print(f"{len(corpus)} demo clips; largest absolute difference system vs imageio build:")
    same = got["imageio", "system"], got["imageio", "imageio"]
    print("(a) same media, decoded by each build:", fmt(largest(*same)))
    # the last 50 ms of segments that end where their media end (AAC end padding)
    tail = corpus["media_seconds"] - corpus["end"] < 0.05
    keep = [
        int(round((e - s) * SR)) - int(0.05 * SR) if t else None
        for s, e, t in zip(corpus["start"], corpus["end"], tail, strict=True)
    ]
    print(f"(a') the same, without the last 50 ms of the {int(tail.sum())} segments that end "
          "their media:", fmt(largest(*same, keep=keep)))  # fmt: skip
    both = got["system", "system"], got["imageio", "imageio"]
    print("(b) media encoded and decoded by each build:", fmt(largest(*both)))
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
