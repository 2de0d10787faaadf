"""Throughput of the features stage, measured on the same synthetic clips in one run.

Prints clips/s for

(a) the seed's way: one librosa call per feature (melspectrogram + power_to_db, mfcc,
    spectral_centroid, zero_crossing_rate, chroma_stft, spectral_rolloff), one clip after
    another in one process;
(b) this project's features stage: ``features.compute`` + ``features.write_shard`` (shards of
    ``--shard-size`` clips), ``--procs`` processes with one BLAS thread each;
(c) decode + trim + features from compressed media (Opus in WebM, 48 kHz stereo, the clip
    at [margin, margin + 10 s) of a longer window as yt-dlp delivers it): ffmpeg decodes to
    mono float32 PCM at 22050 Hz, the clip is cut in samples and padded, features computed and
    written; ``--procs`` processes, with
    (c1) one ffmpeg process per clip, and
    (c2) one ffmpeg process per batch of ``--batch`` clips (one input and one raw output
         file in /dev/shm per clip), both as a lower bound of what decoding costs, and
    (c3) the workflow's own stage functions, exactly what the transcode, trim and features
         rules run for a shard (``run_transcode`` -> WAV window, ``codec.
         transcode_many``: 50 YTIDs per ffmpeg process, decoding inside a libavfilter graph;
         ``run_trim`` -> FLAC clip; ``run_features`` -> Parquet), one shard per process, with
         the CPU time of each stage;

and what decoding alone costs (CPU time, one process): ffmpeg per clip, per batch, the
workflow's transcode, and its floor: the same ffmpeg graphs with every frame dropped at their
end (decode + down-mix + resample), and without the resampler (reading + Opus decoding alone).

Input seeking (``-ss`` before ``-i``, decoding only the clip plus 0.2 s) was tried and
dropped: with Opus in WebM the decoded clip is shifted by ~22 samples at 22050 Hz and differs
by up to 0.03 full scale after re-alignment, i.e. not the exact [start, end) of the window.

and the ratio b / a. Usage::

    .venv/bin/python benchmarks/bench_features.py [--clips 200] [--procs 2]
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process, before numpy is imported (parallelism is by processes).
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import multiprocessing as mp  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from audiosetflow.audio import features as ft  # noqa: E402
from audiosetflow.tools import ffmpeg_exe  # noqa: E402

SR = 22050
CLIP = 10.0
MARGIN = 1.0

# Set in the parent before forking workers (inherited, no pickling of the waveforms).
_CLIPS: list[np.ndarray] = []
_MEDIA: list[Path] = []


def synth(i: int, seconds: float, sr: int = SR) -> np.ndarray:
    """Clip i: tones, noise, speech-like (AM harmonic + formant-ish emphasis) or chords."""
    rng = np.random.default_rng(i)
    t = np.arange(int(seconds * sr)) / sr
    kind = i % 4
    if kind == 0:
        f = rng.uniform(100, 2000, 3)
        y = sum(np.sin(2 * np.pi * fk * t) for fk in f) / 3
    elif kind == 1:
        y = 0.5 * rng.standard_normal(len(t))
    elif kind == 2:
        f0 = rng.uniform(90, 220)
        env = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None)
        y = env * sum(
            np.sin(2 * np.pi * k * f0 * t) * np.exp(-(((k * f0 - 800) / 600) ** 2))
            for k in range(1, 25)
        )
    else:
        root = rng.uniform(110, 330)
        y = sum(np.sin(2 * np.pi * root * r * t) for r in (1, 1.26, 1.5, 2)) / 4
    y = 0.3 * y / max(np.abs(y).max(), 1e-9) + 0.003 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def meta_rows(idx: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ytid": [f"bench{i:06d}" for i in idx],
            "split": "train",
            "start": MARGIN,
            "end": MARGIN + CLIP,
            "labels": [["/m/04rlf"] for _ in idx],
            "label_names": [["Music"] for _ in idx],
            "status": "ok",
            "reason": "",
            "short": False,
            "duration": CLIP,
        }
    )


# --- (a) -----------------------------------------------------------------------------------


def seed_features(y: np.ndarray, p: ft.FeatureParams) -> dict[str, np.ndarray]:
    import librosa

    kw = dict(y=y, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length)
    return {
        "log_mel": librosa.power_to_db(librosa.feature.melspectrogram(**kw, n_mels=p.n_mels)),
        "mfcc": librosa.feature.mfcc(**kw, n_mfcc=p.n_mfcc, n_mels=p.n_mels),
        "spectral_centroid": librosa.feature.spectral_centroid(**kw),
        "zcr": librosa.feature.zero_crossing_rate(
            y=y, frame_length=p.n_fft, hop_length=p.hop_length
        ),
        "chroma": librosa.feature.chroma_stft(**kw, tuning=p.tuning),
        "rolloff": librosa.feature.spectral_rolloff(**kw, roll_percent=p.roll_percent),
    }


# --- (b) and (c) workers --------------------------------------------------------------------


def _shards(n: int, size: int) -> list[list[int]]:
    return [list(range(lo, min(lo + size, n))) for lo in range(0, n, size)]


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (ffmpeg)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def work_b(args) -> tuple[int, float]:
    idx, out, p = args
    c0 = _cpu()
    feats = [ft.compute(_CLIPS[i], params=p) for i in idx]
    ft.write_shard(out, meta=meta_rows(idx), features=feats, params=p)
    return len(idx), _cpu() - c0


def _trim(pcm: np.ndarray, p: ft.FeatureParams) -> np.ndarray:
    """Samples [MARGIN, MARGIN + CLIP) of the decoded window, zero-padded at the end."""
    lo = round(MARGIN * p.sample_rate)
    n = round(CLIP * p.sample_rate)
    y = pcm[lo : lo + n]
    if len(y) < n:
        y = np.concatenate([y, np.zeros(n - len(y), dtype=np.float32)])
    return y


_DECODE = ["-map", "0:a:0", "-ac", "1", "-ar", str(SR), "-f", "f32le"]


def decode_one(path: Path) -> np.ndarray:
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-threads", "1", "-i", str(path)]
    proc = subprocess.run([*cmd, *_DECODE, "-"], capture_output=True, check=True)
    return np.frombuffer(proc.stdout, dtype=np.float32)


def decode_batch(paths: list[Path], tmp: Path) -> list[np.ndarray]:
    """Decode several files with ONE ffmpeg process: input k -> raw output file k."""
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-threads", "1"]
    for path in paths:
        cmd += ["-i", str(path)]
    outs = [tmp / f"{k}.f32" for k in range(len(paths))]
    for k, out in enumerate(outs):
        cmd += ["-map", f"{k}:a:0", "-ac", "1", "-ar", str(SR), "-f", "f32le", "-y", str(out)]
    subprocess.run(cmd, capture_output=True, check=True)
    res = [np.fromfile(out, dtype=np.float32) for out in outs]
    for out in outs:
        out.unlink()
    return res


def work_c(args) -> tuple[int, float]:
    idx, out, p, batch = args
    c0 = _cpu()
    if batch <= 1:
        pcms = [decode_one(_MEDIA[i]) for i in idx]
    else:
        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        with tempfile.TemporaryDirectory(dir=shm) as tmp:
            pcms = []
            for lo in range(0, len(idx), batch):
                paths = [_MEDIA[i] for i in idx[lo : lo + batch]]
                pcms += decode_batch(paths, Path(tmp))
    feats = [ft.compute(_trim(pcm, p), params=p) for pcm in pcms]
    ft.write_shard(out, meta=meta_rows(idx), features=feats, params=p)
    return len(idx), _cpu() - c0


def work_c3(args) -> tuple[int, float, dict[str, float]]:
    """transcode + trim + features of one shard with the workflow's stage functions."""
    from audiosetflow.audio.features import run_features
    from audiosetflow.audio.transcode import run_transcode
    from audiosetflow.audio.trim import run_trim
    from audiosetflow.shard import Layout, ShardTable, Status

    idx, shard_dir, media_dir, p = args
    c0 = _cpu()
    stages = {}
    shard = Layout(shard_dir / "results").shard("train", 0)
    shard.download_dir.parent.mkdir(parents=True)
    shard.download_dir.symlink_to(Path(media_dir).absolute())  # the media, as downloaded
    ytids = [f"bench{i:06d}" for i in idx]
    manifest = pd.DataFrame(
        {"ytid": ytids, "split": "train", "shard": 0, "start": MARGIN, "end": MARGIN + CLIP,
         "labels": "/m/04rlf"}
    )  # fmt: skip
    table = ShardTable.from_manifest(manifest)
    for y in ytids:
        table.set("download", y, Status.OK)
    table.save(shard, shard.table("download"))
    quiet = logging.getLogger("bench")
    quiet.setLevel(logging.WARNING)
    c = _cpu()
    run_transcode(shard.table("download"), shard=shard, out=shard.table("transcode"),
                  sample_rate=p.sample_rate, logger=quiet)  # fmt: skip
    stages["transcode"], c = _cpu() - c, _cpu()
    run_trim(shard.table("transcode"), shard=shard, out=shard.table("trim"), clip_seconds=CLIP,
             logger=quiet)  # fmt: skip
    stages["trim"], c = _cpu() - c, _cpu()
    done = run_features(shard.table("trim"), shard=shard, out=shard.parquet,
                        out_table=shard.table("features"), params=p,
                        names={"/m/04rlf": "Music"}, logger=quiet)  # fmt: skip
    assert done.passed("features") == ytids, done.status("features").tolist()
    stages["features"] = _cpu() - c
    return len(idx), _cpu() - c0, stages


_STAGES: list[dict[str, float]] = []  # CPU ms/clip per stage of each run_pool call (c3)


def run_pool(fn, tasks, procs: int) -> tuple[float, float]:
    """(wall-clock clips/s, CPU-bound clips/s = clips / CPU seconds x procs)."""
    ft._bank.cache_clear()  # each worker builds its filter banks, as a pipeline job does
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    with ctx.Pool(procs) as pool:
        res = pool.map(fn, tasks, chunksize=1)
    dt = time.perf_counter() - t0
    n, cpu = sum(r[0] for r in res), sum(r[1] for r in res)
    if len(res[0]) > 2:
        _STAGES.append({k: sum(r[2][k] for r in res) / n * 1e3 for k in res[0][2]})
    return n / dt, n / cpu * procs


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return max(r[0] for r in runs), max(r[1] for r in runs)


def _cpu_ms_per_clip(fn, n: int, repeat: int) -> float:
    """Least CPU time (this process and its children) of ``repeat`` calls of ``fn``, per clip."""
    costs = []
    for _ in range(repeat):
        c0 = _cpu()
        fn()
        costs.append((_cpu() - c0) / n * 1e3)
    return min(costs)


def decode_costs(sample: list[Path], batch: int, repeat: int) -> None:
    """CPU ms per clip of decoding alone, one process; and the clips/s it leaves possible."""
    from audiosetflow.audio import codec as audio

    n = len(sample)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        tmp = Path(tmp)

        def batched() -> None:
            for lo in range(0, n, batch):
                decode_batch(sample[lo : lo + batch], tmp)

        def workflow() -> None:
            audio.transcode_many([(m, tmp / f"{m.stem}.wav") for m in sample], sample_rate=SR)

        def floor(resample: bool) -> None:
            # transcode_many's own ffmpeg graph, 20 files a process, every frame dropped at the end
            for lo in range(0, n, 20):
                graphs = []
                for k, m in enumerate(sample[lo : lo + 20]):
                    g = audio._lavfi_graph(m.absolute(), SR).split(",asetnsamples=")[0]
                    if not resample:
                        g = g.split(",aresample=")[0]
                    graphs.append(f"{g},aselect=0[out{k}]")
                cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-cpucount", "1", "-threads", "1"]
                cmd += ["-f", "lavfi", "-i", ";".join(graphs)]
                for k in range(len(graphs)):
                    cmd += ["-map", f"0:a:{k}", "-f", "null", "-"]
                subprocess.run(cmd, check=True, capture_output=True)

        costs = {
            "1 ffmpeg per clip, f32 pipe": _cpu_ms_per_clip(
                lambda: [decode_one(m) for m in sample], n, repeat
            ),
            f"1 ffmpeg per {batch} clips, f32 files": _cpu_ms_per_clip(batched, n, repeat),
            "audio.transcode_many -> WAV windows": _cpu_ms_per_clip(workflow, n, repeat),
            "its floor: decode + down-mix + resample, no output": _cpu_ms_per_clip(
                lambda: floor(True), n, repeat
            ),
            "Opus decoding alone (read + decode, no output)": _cpu_ms_per_clip(
                lambda: floor(False), n, repeat
            ),
        }
    print("    decode only, CPU ms/clip, 1 process (clips/s on 2 idle cores if nothing else):")
    for k, v in costs.items():
        print(f"      {k:52s} {v:5.1f} ms  ({2e3 / v:5.0f} clips/s)")


def encode_media(i: int, folder: Path) -> Path:
    """A 12-s window (clip at [1, 11) s) as Opus in WebM, 48 kHz stereo, like YouTube audio."""
    y = synth(i, CLIP + 2 * MARGIN)
    out = folder / f"bench{i:06d}.webm"
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(SR)]
    cmd += ["-ac", "1", "-i", "-", "-ar", "48000", "-ac", "2", "-c:a", "libopus", "-b:a", "128k"]
    subprocess.run([*cmd, str(out)], input=y.tobytes(), check=True, capture_output=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--batch", type=int, default=25, help="clips per ffmpeg process in (c2)")
    ap.add_argument("--seed-clips", type=int, default=0, help="clips for (a); 0: all")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs (b, c)")
    ap.add_argument("--tiny", action="store_true", help="CI size: just enough to run")
    args = ap.parse_args()
    if args.tiny:
        args.clips, args.procs, args.shard_size, args.batch = 4, 1, 2, 2
        args.seed_clips, args.repeat = 2, 1
    p = ft.FeatureParams(sample_rate=SR)
    n = args.clips
    print(f"load average before: {os.getloadavg()[0]:.2f}; figures are the best of "
          f"{args.repeat} runs (a: of {args.repeat} chunks of the clips); 'CPU-bound' = clips "
          "per CPU-second (ffmpeg children included) x processes: the rate on otherwise idle "
          "cores")  # fmt: skip
    print(f"{n} clips of {CLIP:.0f} s at {SR} Hz; {args.procs} processes x 1 thread; cores: "
          f"{os.cpu_count()}; shards of {args.shard_size}")  # fmt: skip

    global _CLIPS, _MEDIA
    _CLIPS = [synth(i, CLIP) for i in range(n)]
    work = Path(tempfile.mkdtemp(prefix="bench_features."))
    try:
        # (a) the seed's way
        import librosa

        n_a = args.seed_clips or n
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seed_features(_CLIPS[0], p)  # warm-up: lazy imports, caches
            # best of chunks of the clips (the machine may be shared: best = least disturbed)
            rates, cpu_rates = [], []
            step = max(1, n_a // args.repeat)
            for lo in range(0, n_a, step):
                chunk = _CLIPS[lo : min(lo + step, n_a)]
                t0, c0 = time.perf_counter(), time.process_time()
                for y in chunk:
                    seed_features(y, p)
                rates.append(len(chunk) / (time.perf_counter() - t0))
                cpu_rates.append(len(chunk) / (time.process_time() - c0))
            a, a_cpu = max(rates), max(cpu_rates)
        print(f"(a) seed: one librosa {librosa.__version__} call per feature, 1 process: "
              f"{a:8.1f} clips/s  ({1e3 / a:.1f} ms/clip; CPU-bound: {a_cpu:.1f})")  # fmt: skip

        # parity spot check on the benchmark clips
        for y in _CLIPS[:4]:
            ours, ref = ft.compute(y, params=p), seed_features(y, p)
            assert np.abs(ours["log_mel"] - ref["log_mel"]).max() < 1e-3
            assert np.array_equal(ours["rolloff"], ref["rolloff"].astype(np.float32))

        # single process, compute only (for reference)
        t0 = time.perf_counter()
        for y in _CLIPS:
            ft.compute(y, params=p)
        one = n / (time.perf_counter() - t0)
        print(f"    compute() alone, 1 process:                   {one:8.1f} clips/s  "
              f"({1e3 / one:.1f} ms/clip)")  # fmt: skip

        # (b) features stage
        shards = _shards(n, args.shard_size)
        out_b = work / "b"
        tasks = [(idx, out_b / f"shard-{k:04d}.parquet", p) for k, idx in enumerate(shards)]
        b, b_cpu = best([run_pool(work_b, tasks, args.procs) for _ in range(args.repeat)])
        mb = sum(f.stat().st_size for f in out_b.glob("*.parquet")) / 2**20
        X, _ = ft.load_split(out_b)
        assert X.shape[0] == n
        print(f"(b) compute + write_shard, {args.procs} processes:           {b:8.1f} clips/s  "
              f"(CPU-bound: {b_cpu:.1f}; Parquet {mb / n * 1024:.0f} KiB/clip)")  # fmt: skip
        print(f"    ratio b / a: {b / a:.2f}x wall-clock, {b_cpu / a_cpu:.2f}x CPU-bound "
              "(goal >= 6x)")  # fmt: skip

        # (c) from compressed media
        media_dir = work / "media"
        media_dir.mkdir()
        t0 = time.perf_counter()
        with mp.get_context("fork").Pool(args.procs) as pool:
            _MEDIA = pool.starmap(encode_media, [(i, media_dir) for i in range(n)])
        print(f"    (encoded {n} Opus/WebM windows in {time.perf_counter() - t0:.1f} s)")
        for label, batch in (("c1", 1), ("c2", args.batch)):
            out_c = work / label
            tasks = [
                (idx, out_c / f"shard-{k:04d}.parquet", p, batch) for k, idx in enumerate(shards)
            ]
            reps = max(1, args.repeat - 1)
            c, c_cpu = best([run_pool(work_c, tasks, args.procs) for _ in range(reps)])
            how = "1 ffmpeg per clip" if batch == 1 else f"1 ffmpeg per {batch} clips"
            print(f"({label}) decode + trim + features, {how:20s}: {c:8.1f} clips/s  "
                  f"(CPU-bound: {c_cpu:.1f}; goal >= 60)")  # fmt: skip
        reps = max(1, args.repeat - 1)
        runs = []
        for r in range(reps):
            tasks = [(idx, work / f"c3-{r}" / f"shard-{k:04d}", media_dir, p)
                     for k, idx in enumerate(shards)]  # fmt: skip
            runs.append(run_pool(work_c3, tasks, args.procs))
        c3, c3_cpu = best(runs)
        print(f"(c3) the workflow's transcode + trim + features stages: {c3:8.1f} clips/s  "
              f"(CPU-bound: {c3_cpu:.1f}; goal >= 60)")  # fmt: skip
        st = min(_STAGES, key=lambda d: sum(d.values()))
        print("     CPU ms/clip by stage (least disturbed run): "
              + ", ".join(f"{k} {v:.1f}" for k, v in st.items())
              + f"; total {sum(st.values()):.1f}")  # fmt: skip
        decode_costs(_MEDIA[: min(n, 60)], args.batch, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
