"""Size of a worst-mistakes page as the Snakemake report embeds it (one ``data:`` URI that the
report shows in a frame; Chromium leaves such a frame blank above about 2 MB).

Ten trimmed clips (five false positives, five false negatives) of 10 s at 22,050 Hz, written
as the trim stage writes them (FLAC); each is a demo clip (speech-like, music-like or other),
so that the codecs see sound, not silence. Prints the page's size and its data: URI's length
with the players as FLAC data: URIs (before) and as Ogg Opus previews (now), and the time the
previews take.

Usage: python benchmarks/bench_errors_page.py [--clips 10] [--seconds 10]
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from audiosetflow import demo
from audiosetflow.reporting import errors as er
from audiosetflow.reporting import html as h
from audiosetflow.shard import Layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--tiny", action="store_true", help="CI size: 2 clips of 2 s")
    args = ap.parse_args()
    if args.tiny:
        args.clips, args.seconds = 2, 2.0
    sr = 22050
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = demo.DemoSpec(clips_per_class=max(4, args.clips), seed=3)
        demo.write_media(root / "media", spec, threads=2)
        media = sorted((root / "media").glob("*.m4a"))[: args.clips]
        layout = Layout(root / "results")
        clip_dir = layout.audio_dir("clips", "eval")
        clip_dir.mkdir(parents=True)
        from audiosetflow.audio.codec import decode

        rows = []
        for i, m in enumerate(media):
            y = decode(m, sample_rate=sr)[: int(args.seconds * sr)]
            y = np.pad(y, (0, int(args.seconds * sr) - len(y)))
            ytid = m.stem
            sf.write(clip_dir / f"{ytid}.flac", y, sr)
            target = i % 2  # half false negatives (scored 0.1), half false positives (0.9)
            rows.append((ytid, "eval", 0.0, args.seconds, target, 0.1 if target else 0.9))
        scores = pd.DataFrame(rows, columns=["ytid", "split", "start", "end", "target", "cnn"])
        scores.to_csv(root / "scores.tsv", sep="\t", index=False)
        metrics = {"name": "Music", "models": {"cnn": {"val": {"threshold": 0.5}}},
                   "dataset": {"test_source": "eval"}}  # fmt: skip
        (root / "m.json").write_text(json.dumps(metrics))

        def page_size(out: Path) -> tuple[int, int]:
            er.write_errors_page(
                scores=root / "scores.tsv", metrics=root / "m.json", layout=layout, out=out,
                n=args.clips,
            )  # fmt: skip
            data = out.read_bytes()
            uri = "data:text/html;charset=utf8;filename=x.html;base64," + base64.b64encode(
                data
            ).decode("ascii")
            return len(data), len(uri)

        t0 = time.perf_counter()
        opus = page_size(root / "opus.html")
        seconds = time.perf_counter() - t0
        flac_player = er._player  # the page as it was: each player the FLAC clip itself
        er._player = lambda clip: h.audio(clip, "audio/flac")
        try:
            flac = page_size(root / "flac.html")
        finally:
            er._player = flac_player
    n = len(media)
    print(f"{n} clips of {args.seconds:g} s at {sr} Hz")
    print(f"FLAC players: page {flac[0] / 1e6:.2f} MB, report data: URI {flac[1] / 1e6:.2f} MB")
    print(f"Opus previews: page {opus[0] / 1e6:.2f} MB, report data: URI {opus[1] / 1e6:.2f} MB")
    print(f"Opus page written in {seconds:.2f} s ({seconds / max(n, 1) * 1000:.0f} ms/clip)")


if __name__ == "__main__":
    main()
