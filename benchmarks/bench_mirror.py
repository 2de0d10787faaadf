"""Throughput of a local mirror's clips through transcode + trim + features (issue 11).

Builds a tar like the public mirror's shards (``bal_train00.tar``, members
``audio/bal_train/{YTID}.flac``): ``--clips`` 10-s clips of 24-bit FLAC at 48 kHz, every
tenth at 44.1 kHz, generated (tones + envelope + noise, a seed per clip). Then runs the
workflow's own stage functions shard by shard, ``--procs`` processes with one shard each
(as ``bench_features.py`` part (c3) does): ``run_transcode`` -> WAV window, ``run_trim`` ->
FLAC clip, ``run_features`` -> Parquet, and prints clips/s of the whole and the CPU seconds per
clip of each stage (ffmpeg children included).

The media the transcode stage reads:

* default: each member extracted from the tar (by its offset, ``extract`` stage, timed too)
  into the shard's download folder as ``{YTID}.flac``, with ``{YTID}.offset`` = the segment
  start (a cut clip), and the shard table saying the download passed;
* ``--subfile``: nothing extracted; the table's ``media`` is the download stage's locator of
  a tar clip (``tar:{archive}@{offset}+{size}``), so ``run_transcode`` reads the member in
  place (``audiosetflow.audio.codec.Subfile``, ffmpeg's ``subfile`` protocol);
* ``--sources``: what the workflow runs with ``sources: [{kind: tar, ...}]``: the tar indexed
  once (``build_index``, timed apart), then per shard the download stage itself
  (``download_shard``: index lookup, each member read and decoded completely as its check,
  the locator recorded; stage ``download``), then transcode reading in place as above.

``--profile`` also runs one shard in this process under cProfile and prints the top functions
by cumulative and by own time. ``--check`` compares the features with those of the same
samples decoded directly (``audio.codec.decode`` of the member, cut in samples).

It also prints what each Snakemake job pays before its first clip (Python start + imports of
its stage, ~0.5-0.7 s of CPU each): per clip at the default ``shard_size`` of 250; the forked
workers here do not pay it.

Where the CPU goes (2026-12, this 2-core VM, ffmpeg 5.1, audio.sample_rate 22050; least
disturbed single-process figures, per clip): ffmpeg ~11 ms (FLAC demux + parse ~3-5, 24-bit
FLAC decoding ~7, resampling 48 kHz -> 22.05 kHz + WAV window ~3-4, one ffmpeg start ~40-90 ms
per batch), trim ~3 ms (FLAC encoding of the clip ~2.5), features ~11 ms (FLAC decoding of the
clip ~2.5, ``compute`` ~6.3, Parquet ~1.9). Removed: pandas ``.loc`` writes of the shard table
(1.4 ms per YTID and stage), the ffmpeg start of a batch of 20 (now 50, a bad batch halved),
the route check of every transcode job (0.35 s, now remembered per binary). Later,
``compute`` took 4.15 ms, and 3.7 ms once the roll-off's sums ran over all frames at once.

``--keep-clips false`` (with ``--subfile`` or ``--sources``) runs the stages as
``audio.keep_clips: false`` does: the trim stage writes no clip FLAC, and the features stage
cuts each clip from its window in memory (each clip decoded once, no FLAC encoded or decoded).

Usage::

    .venv/bin/python benchmarks/bench_mirror.py [--clips 240] [--procs 2] [--subfile]
        [--sources] [--keep-clips false]
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process, before numpy is imported (parallelism is by processes).
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402

from audiosetflow.audio import features as ft  # noqa: E402

SR = 22050  # the workflow's default audio.sample_rate
CLIP = 10.0
MID = "/m/04rlf"


@dataclass(frozen=True)
class Member:
    """A clip's member in the tar."""

    ytid: str
    start: float  # segment start in its video (= the offset of the cut clip)
    offset: int  # byte offset of the member's data in the tar
    size: int


def ytid_of(i: int) -> str:
    """AudioSet-like 11-character YTIDs, every third starting with '-'."""
    return ("-" if i % 3 == 0 else "b") + f"ench{i:06d}"


def synth(i: int, sr: int) -> np.ndarray:
    """Clip i: three tones under a slow envelope plus noise, peak about 0.5 (float32)."""
    rng = np.random.default_rng(i)
    t = np.arange(int(CLIP * sr)) / sr
    f = rng.uniform(80, 4000, 3)
    y = sum(np.sin(2 * np.pi * fk * t + rng.uniform(0, 6.3)) for fk in f) / 3
    y = y * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 3) * t))
    y = 0.5 * y + rng.uniform(0.005, 0.1) * rng.standard_normal(len(t))
    return np.clip(y, -0.95, 0.95).astype(np.float32)


def sr_of(i: int) -> int:
    return 44_100 if i % 10 == 9 else 48_000


def flac_member(i: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, synth(i, sr_of(i)), sr_of(i), subtype="PCM_24", format="FLAC")
    return buf.getvalue()


def build_tar(path: Path, n: int, procs: int) -> list[Member]:
    """The mirror shard of ``n`` clips; its index (member offsets) read back with tarfile."""
    with mp.get_context("fork").Pool(procs) as pool:
        blobs = pool.map(flac_member, range(n), chunksize=8)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, data in enumerate(blobs):
            info = tarfile.TarInfo(f"audio/bal_train/{ytid_of(i)}.flac")
            info.size, info.mtime, info.mode = len(data), 1_600_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        index = {t.name: (t.offset_data, t.size) for t in tar.getmembers()}
    return [
        Member(ytid_of(i), 30.0 + i % 7, *index[f"audio/bal_train/{ytid_of(i)}.flac"])
        for i in range(n)
    ]


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (ffmpeg)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def _quiet() -> logging.Logger:
    quiet = logging.getLogger("bench")
    quiet.setLevel(logging.WARNING)
    return quiet


def run_shard(args) -> tuple[int, float, dict[str, float]]:
    """extract (unless subfile) + transcode + trim + features of one shard, stage functions."""
    from audiosetflow.audio.features import run_features
    from audiosetflow.audio.transcode import run_transcode
    from audiosetflow.audio.trim import run_trim
    from audiosetflow.shard import Layout, ShardTable, Status

    members, tar, root, k, p, subfile, batch, keep_clips = args
    sources = subfile == "sources"
    c0 = _cpu()
    stages: dict[str, float] = {}
    shard = Layout(root / "results").shard("train", k)
    shard.download_dir.mkdir(parents=True, exist_ok=True)
    ytids = [m.ytid for m in members]
    manifest = pd.DataFrame(
        {"ytid": ytids, "split": "train", "shard": k, "start": [m.start for m in members],
         "end": [m.start + CLIP for m in members], "labels": MID}
    )  # fmt: skip
    table = ShardTable.from_manifest(manifest)
    c = _cpu()
    if sources:  # the download stage itself, over the tar source and its index
        from audiosetflow.acquisition.download import DownloadConfig, download_shard
        from audiosetflow.acquisition.sources import parse_sources

        got = download_shard(
            table, shard=shard, cfg=DownloadConfig.from_config({}),
            sources=parse_sources([{"kind": "tar", "paths": [str(tar)]}]),
            index=root / "results" / "sources" / "index.parquet",
            out=shard.table("download"), log=_quiet(),
        )  # fmt: skip
        assert got.passed("download") == ytids
        stages["download"], c = _cpu() - c, _cpu()
    elif subfile:  # the member read in place: the download stage's locator of a tar clip
        for m in members:
            shard.write_offset(m.ytid, m.start)
            locator = f"tar:{Path(tar).absolute()}@{m.offset}+{m.size}"
            table.set("download", m.ytid, Status.OK, media=locator)
    else:
        with open(tar, "rb") as f:
            for m in members:  # seek straight to each member (the tar's index)
                f.seek(m.offset)
                name = f"{m.ytid}.flac"
                shard.media_name(m.ytid, "flac").write_bytes(f.read(m.size))
                shard.write_offset(m.ytid, m.start)
                table.set("download", m.ytid, Status.OK, media=name)
    if not sources:
        table.save(shard, shard.table("download"))
        stages["extract"], c = _cpu() - c, _cpu()
    quiet = _quiet()
    run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                  sample_rate=p.sample_rate, batch=batch, logger=quiet)  # fmt: skip
    stages["transcode"], c = _cpu() - c, _cpu()
    run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"), clip_seconds=CLIP,
             keep_clips=keep_clips, logger=quiet)  # fmt: skip
    stages["trim"], c = _cpu() - c, _cpu()
    done = run_features(shard.table("trim"), shard=shard, out=shard.parquet,
                        out_table=shard.table("features"), params=p,
                        names={MID: "Music"}, keep_clips=keep_clips, clip_seconds=CLIP,
                        logger=quiet)  # fmt: skip
    assert done.passed("features") == ytids, done.status("features").tolist()
    stages["features"] = _cpu() - c
    return len(members), _cpu() - c0, stages


def index_tar(tar: Path, root: Path) -> None:
    """What the index_sources rule does, once for the whole run."""
    from audiosetflow.acquisition.sources import build_index, parse_sources

    build_index(parse_sources([{"kind": "tar", "paths": [str(tar)]}]),
                out=root / "results" / "sources" / "index.parquet")  # fmt: skip


def run_all(members, tar, root, p, *, procs, shard_size, subfile, batch, keep_clips=True):
    """All shards, ``procs`` processes: (clips/s wall, CPU ms per clip by stage, load avg)."""
    ft._bank.cache_clear()  # each worker builds its filter banks, as a pipeline job does
    shards = [members[lo : lo + shard_size] for lo in range(0, len(members), shard_size)]
    tasks = [(s, tar, root, k, p, subfile, batch, keep_clips) for k, s in enumerate(shards)]
    t0 = time.perf_counter()
    if subfile == "sources":
        index_tar(tar, root)
        print(f"  index of the tar: {time.perf_counter() - t0:.2f} s wall")
    with mp.get_context("fork").Pool(procs) as pool:
        res = pool.map(run_shard, tasks, chunksize=1)
    dt = time.perf_counter() - t0
    load = os.getloadavg()[0]
    n = sum(r[0] for r in res)
    stages = {s: sum(r[2][s] for r in res) / n * 1e3 for s in res[0][2]}
    return n / dt, stages, load


def collect_features(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every frame-level feature of every clip of a run, by YTID."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in ft.FRAME_FEATURES:
        X, meta = ft.load_split(sorted(root.glob("results/**/*.parquet")), feature=name)
        for ytid, x in zip(meta["ytid"], X, strict=True):
            out.setdefault(ytid, {})[name] = x
    return out


def compare(got: dict, ref_file: Path) -> None:
    """Largest differences of this run's features from a saved run's (``--save``)."""
    ref = dict(np.load(ref_file, allow_pickle=True).item())
    assert sorted(ref) == sorted(got), "not the same clips"
    worst = {}
    for ytid, feats in got.items():
        for name, x in feats.items():
            r = ref[ytid][name]
            d = float(np.nanmax(np.abs(x.astype(np.float64) - r))) if x.size else 0.0
            scale = float(np.nanmax(np.abs(r))) or 1.0
            worst[name] = max(worst.get(name, 0.0), d / scale)
    same = all(np.array_equal(got[y][k], ref[y][k], equal_nan=True) for y in got for k in got[y])
    print(f"features vs {ref_file.name}: {'bit-identical' if same else 'differ'}; largest "
          "difference relative to the feature's range: "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))  # fmt: skip


def job_overhead(shard_size: int) -> None:
    """CPU of starting a stage job's Python and importing its stage (what each Snakemake job
    pays before its first clip, and this benchmark's forked workers do not)."""
    import subprocess
    import sys

    costs = {}
    for stage, mod in (("transcode", "transcode"), ("trim", "trim"), ("features", "features")):
        c = _cpu()
        subprocess.run([sys.executable, "-c", f"import audiosetflow.audio.{mod}"], check=True)
        costs[stage] = _cpu() - c
    total = sum(costs.values())
    print("per-job start (python + imports), CPU s: "
          + ", ".join(f"{k} {v:.2f}" for k, v in costs.items())
          + f"; {total / shard_size * 1e3:.1f} ms/clip at shard_size {shard_size}")  # fmt: skip


def profile_one(members, tar, root, p, subfile, batch, keep_clips) -> None:
    import cProfile
    import pstats

    if subfile == "sources":
        index_tar(tar, root)
    prof = cProfile.Profile()
    prof.enable()
    run_shard((members, tar, root, 9999, p, subfile, batch, keep_clips))
    prof.disable()
    st = pstats.Stats(prof)
    print("--- cProfile, one shard in this process (ffmpeg's own time not included) ---")
    st.sort_stats("cumulative").print_stats(25)
    st.sort_stats("tottime").print_stats(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=240)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=0, help="0: clips / procs")
    ap.add_argument(
        "--batch", type=int, default=0, help="YTIDs per ffmpeg process (0: the default)"
    )
    ap.add_argument("--subfile", action="store_true", help="transcode reads the tar in place")
    ap.add_argument(
        "--sources", action="store_true",
        help="the download stage over a tar source (index, check), then in place",
    )  # fmt: skip
    ap.add_argument(
        "--keep-clips", choices=["true", "false"], default="true",
        help="audio.keep_clips; false with --subfile or --sources: no clip FLAC, each clip "
        "cut from its window in memory by the features stage (decode once)",
    )  # fmt: skip
    ap.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    ap.add_argument("--tiny", action="store_true", help="CI size: just enough to run")
    ap.add_argument("--profile", type=int, default=0, help="cProfile one shard of this many")
    ap.add_argument("--keep", type=Path, help="build the tar here and keep it (reused)")
    ap.add_argument("--save", type=Path, help="save the features of the last run (.npy)")
    ap.add_argument("--compare", type=Path, help="compare the features with a --save file")
    args = ap.parse_args()
    if args.tiny:
        args.clips, args.procs, args.shard_size = 4, 1, 4
    if args.sources:
        args.subfile = "sources"
    keep_clips = args.keep_clips == "true"
    if not keep_clips and not args.subfile:
        ap.error("--keep-clips false needs --subfile or --sources (clips read in place)")
    from audiosetflow.audio import codec

    args.batch = args.batch or getattr(codec, "DEFAULT_BATCH", 20)
    p = ft.FeatureParams(sample_rate=SR)
    n = args.clips
    size = args.shard_size or -(-n // args.procs)
    work = Path(tempfile.mkdtemp(prefix="bench_mirror."))
    try:
        tar = (args.keep or work) / "bal_train00.tar"
        t0 = time.perf_counter()
        if args.keep and tar.exists():
            with tarfile.open(tar) as tf:
                index = {t.name: (t.offset_data, t.size) for t in tf.getmembers()}
            members = [
                Member(ytid_of(i), 30.0 + i % 7, *index[f"audio/bal_train/{ytid_of(i)}.flac"])
                for i in range(n)
            ]
        else:
            tar.parent.mkdir(parents=True, exist_ok=True)
            members = build_tar(tar, n, args.procs)
        mib = tar.stat().st_size / 2**20
        print(f"tar: {n} clips of {CLIP:.0f} s, 24-bit FLAC at 48 kHz (every 10th 44.1 kHz), "
              f"{mib:.0f} MiB ({mib / n * 1024:.0f} KiB/clip), ready in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        modes = {"sources": "download stage over a tar source, then read in place",
                 True: "subfile (tar read in place)"}  # fmt: skip
        mode = modes.get(args.subfile, "members extracted first")
        print(f"pipeline: {mode}; {args.procs} processes, shards of {size}, transcode batch "
              f"{args.batch}, audio.sample_rate {SR}, audio.keep_clips {args.keep_clips}; "
              f"cores: {os.cpu_count()}")  # fmt: skip
        runs = []
        for r in range(args.repeat):
            before = os.getloadavg()[0]
            rate, stages, after = run_all(members, tar, work / f"run{r}", p, procs=args.procs,
                                          shard_size=size, subfile=args.subfile,
                                          batch=args.batch, keep_clips=keep_clips)  # fmt: skip
            runs.append((rate, stages))
            print(f"  run {r}: {rate:6.1f} clips/s (goal >= 60); CPU ms/clip: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
                  + f"; total {sum(stages.values()):.1f} (CPU-bound rate on {args.procs} idle "
                  f"cores: {args.procs * 1e3 / sum(stages.values()):.0f} clips/s); load average "
                  f"{before:.2f} before, {after:.2f} after")  # fmt: skip
            if r < args.repeat - 1:
                shutil.rmtree(work / f"run{r}", ignore_errors=True)
        if args.save or args.compare:
            got = collect_features(work / f"run{args.repeat - 1}")
            if args.save:
                np.save(args.save, np.array(got, dtype=object), allow_pickle=True)
            if args.compare:
                compare(got, args.compare)
        best = max(runs, key=lambda x: x[0])
        print(f"best: {best[0]:.1f} clips/s")
        job_overhead(250)
        if args.profile:
            profile_one(members[: args.profile], tar, work / "prof", p, args.subfile, args.batch,
                        keep_clips)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
