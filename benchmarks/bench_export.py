"""Disk per clip, speed and memory of the export's per-part writers (``snakemake export``).

Writes ``--clips`` trimmed clips as the trim stage does (10 s, 22,050 Hz, mono 16-bit FLAC;
demo sounds: speech-like, music-like and others, so that FLAC sees sound, not noise or
silence), then one part of each format from them: the WebDataset tar, the Hugging Face
Parquet file, the three lhotse manifests and the fates of ``clips.parquet``. Prints, per
format, bytes per clip (beside the clip's own FLAC), clips per second and the peak Python
allocation while writing (tracemalloc: the writers hold one clip at a time).

Usage: python benchmarks/bench_export.py [--clips 512] [--tiny]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from audiosetflow import demo
from audiosetflow.export import formats
from audiosetflow.export.clips import LabelNames, fate_rows, iter_clips
from audiosetflow.shard import Layout, ShardTable

SR = 22050


def _make_part(root: Path, n: int) -> ShardTable:
    spec = demo.DemoSpec(clips_per_class=max(3, n // 3 + 1), seed=5)
    corpus = demo.corpus(spec).head(n)
    rows = []
    for row in corpus.to_dict("records"):
        y = demo.synthesize(row, sample_rate=SR)
        a = int(float(row["start"]) * SR)
        clip = np.zeros(10 * SR, dtype=np.float32)
        seg = y[a : a + 10 * SR]
        clip[: len(seg)] = seg
        path = Layout(root).clip("train", row["ytid"])
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, clip, SR, subtype="PCM_16", format="FLAC")
        rows.append({**row, "split": "train", "shard": 0})
    table = ShardTable.from_manifest(pd.DataFrame(rows))
    for y in table.ytids:
        for stage in ("download", "transcode", "trim", "features"):
            table.set(stage, y, "ok")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--tiny", action="store_true", help="CI size: 12 clips")
    args = ap.parse_args()
    n = 12 if args.tiny else args.clips
    labels = LabelNames(
        {"/m/04rlf": "Music", "/m/09x0r": "Speech"}, {"/m/09x0r": 0, "/m/04rlf": 137}
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        table = _make_part(root, n)
        made = time.perf_counter() - t0
        n = len(table)
        flac = sum(Layout(root).clip("train", y).stat().st_size for y in table.ytids)
        print(f"{n} clips made in {made:.1f} s; the trimmed FLAC: {flac / n / 1000:.1f} kB/clip")
        out = root / "export"
        out.mkdir()
        lhotse = {k: out / f"{k}.jsonl.gz" for k in formats.LHOTSE_KINDS}
        jobs = {
            "webdataset": (
                lambda: formats.write_webdataset_part(
                    iter_clips([table], root=root, labels=labels), out / "part.tar"
                ),
                [out / "part.tar"],
            ),
            "hf": (
                lambda: formats.write_hf_part(
                    iter_clips([table], root=root, labels=labels), out / "part.parquet"
                ),
                [out / "part.parquet"],
            ),
            "lhotse": (
                lambda: formats.write_lhotse_part(
                    iter_clips([table], root=root, labels=labels), root=root, out=lhotse
                ),
                list(lhotse.values()),
            ),
            "fates": (
                lambda: formats.write_fates_part(
                    fate_rows([table], root=root, part="train/0000"), out / "fates.parquet"
                ),
                [out / "fates.parquet"],
            ),
        }
        print("format      bytes/clip   clips/s   peak alloc")
        for name, (write, files) in jobs.items():
            tracemalloc.start()
            t0 = time.perf_counter()
            write()
            took = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            size = sum(f.stat().st_size for f in files)
            print(f"{name:<10} {size / n / 1000:>9.1f} kB {n / took:>9.0f} {peak / 1e6:>9.1f} MB")
        print(f"(a part's clips: {flac / 1e6:.1f} MB of FLAC)")


if __name__ == "__main__":
    main()
