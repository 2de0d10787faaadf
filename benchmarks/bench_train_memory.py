"""Peak memory of one CNN training epoch for 2,000 and for 20,000 clips (10-s, 128 x 431 log-mel).

Writes synthetic feature shards (:func:`audiosetflow.audio.features.write_shard`, 250 clips a
shard as in ``config.yaml``, row groups of 64) into a temporary folder, removed afterwards:
the clips of the largest size once, the smaller sizes taking the first shards, plus one shard
of 128 clips for the val and test parts. Frame-level features are random values on a 1/8 grid
(so that zstd compresses them somewhat: about 150 KB a clip on disk).

Then, in a fresh Python process per size, runs the training job's own code path for the CNN
(:func:`~audiosetflow.learning.training.load_label_data` and
:func:`~audiosetflow.learning.training.train_cnn`, the functions
:func:`~audiosetflow.learning.training.run_train` calls, with ``epochs=1``): index the shards,
the streaming normalisation pass, one training epoch over every clip, validation, and the
scores of every part. Prints each child's peak RSS (``ru_maxrss``), the training epoch's
clips/s, and the ratio of the peaks. Goal: the largest size's peak within 1.25x of the
smallest's, and under 2 GB. ``--heap flat`` (the default) runs the children under
:data:`audiosetflow.learning.heap.FLAT_TUNABLES`, as the workflow's training jobs run with
``training.flat_memory: true``; ``--heap default`` under glibc's own settings; both compare
the two in one run.

Usage: python benchmarks/bench_train_memory.py [--sizes 2000 20000] [--threads 2]
       [--batch-size 32] [--extra-channels] [--dir /tmp] [--heap flat default]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from audiosetflow.learning.heap import FLAT_TUNABLES

POS_MID, NEG_MID = "/m/04rlf", "/m/07yv9"
SHARD, SECONDS, SR = 250, 10.0, 22050
N_HELD = 128  # clips of the val + test shard


def _params():
    from audiosetflow.audio.features import FeatureParams

    return FeatureParams.from_config({}, sample_rate=SR)


def _ytid(prefix: str, i: int) -> str:
    return f"{prefix}{i:09d}"


def _write_shard(path: Path, prefix: str, lo: int, hi: int, rng: np.random.Generator) -> None:
    from audiosetflow.audio.features import write_shard

    params = _params()
    rows = params.rows()
    t = params.n_frames(int(SECONDS * SR))
    n = hi - lo
    meta = pd.DataFrame(
        {
            "ytid": [_ytid(prefix, i) for i in range(lo, hi)],
            "split": "train",
            "start": 0.0,
            "end": SECONDS,
            "labels": [[POS_MID] if i % 2 else [NEG_MID] for i in range(lo, hi)],
            "label_names": [["Music"] if i % 2 else ["Vehicle"] for i in range(lo, hi)],
            "status": "ok",
            "reason": "",
            "short": False,
            "duration": SECONDS,
        }
    )
    feats = []
    for i in range(lo, hi):
        f = {}
        for name, r in rows.items():
            base = -40.0 + 10.0 * (i % 2) if name == "log_mel" else 0.0
            a = base + 8.0 * rng.standard_normal((r, t), dtype=np.float32)
            f[name] = (np.round(a * 8) / 8).astype(np.float32)
        feats.append(f)
    write_shard(path, meta=meta, features=feats, params=params)
    assert n == len(feats)


def write_data(root: Path, n_max: int) -> None:
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    _write_shard(root / "held.parquet", "h", 0, N_HELD, rng)
    per_clip = (root / "held.parquet").stat().st_size / N_HELD
    need = per_clip * n_max * 1.1
    free = shutil.disk_usage(root).free
    if need > free:
        sys.exit(f"{root}: needs ~{need / 1e9:.1f} GB of disk, {free / 1e9:.1f} GB free")
    t0 = time.perf_counter()
    for s, lo in enumerate(range(0, n_max, SHARD)):
        _write_shard(root / f"train/shard-{s:04d}.parquet", "c", lo, min(lo + SHARD, n_max), rng)
    size = sum(f.stat().st_size for f in (root / "train").iterdir())
    print(
        f"wrote {n_max:,} clips ({size / 1e9:.2f} GB, {size / n_max / 1e3:.0f} KB a clip) "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )


def child(root: Path, n: int, threads: int, batch_size: int, extra: bool) -> None:
    """One size: the training job's CNN path, epochs=1; prints one JSON line."""
    import torch

    from audiosetflow.learning.datasets import write_dataset
    from audiosetflow.learning.trainer import resolve_device
    from audiosetflow.learning.training import (
        LabelRef,
        TrainJob,
        TrainOutputs,
        TrainSettings,
        load_label_data,
        train_cnn,
    )

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    files = sorted((root / "train").glob("shard-*.parquet"))[: -(-n // SHARD)]
    files.append(root / "held.parquet")
    half = N_HELD // 2
    tsv = {
        "train": [(_ytid("c", i), "train", i % 2) for i in range(n)],
        "val": [(_ytid("h", i), "train", i % 2) for i in range(half)],
        "test": [(_ytid("h", i), "train", i % 2) for i in range(half, N_HELD)],
    }
    ds = root / f"dataset-{n}"
    write_dataset(
        ds, {p: pd.DataFrame(r, columns=["ytid", "split", "target"]) for p, r in tsv.items()}
    )
    out = root / f"out-{n}"
    job = TrainJob(
        label=LabelRef(slug="music", name="Music", mid=POS_MID),
        dataset=ds,
        train_features=files,
        eval_features=None,
        params=_params(),
        outputs=TrainOutputs(*(out / k for k in ("m.pt", "m.json", "a.png", "b.png", "c.png"))),
        clip_seconds=SECONDS,
    )
    settings = TrainSettings(
        epochs=1,
        batch_size=batch_size,
        threads=threads,
        extra_channels=("spectral_centroid",) if extra else (),
        device="cpu",
    )
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = load_label_data(job, settings)
    t_load = time.perf_counter() - t0
    fitted = train_cnn(data, settings, device=resolve_device(settings.device), name="bench")
    total = time.perf_counter() - t0
    epoch = fitted.history[0]
    stream = data.cnn["train"]
    print(
        json.dumps(
            {
                "n": n,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "rss_after_imports_kb": rss0,
                "epoch_seconds": epoch["seconds"],
                "clips_per_s": n / epoch["seconds"],
                "index_seconds": t_load,
                "total_seconds": total,
                "clip_mb": stream.clip_bytes / 1e6,
                "whole_part_gb": n * stream.clip_bytes / 1e9,
                "row_groups": len(stream.index.groups),
            }
        ),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--extra-channels", action="store_true", help="add spectral_centroid")
    ap.add_argument("--dir", default=None, help="where the temporary shards go")
    ap.add_argument("--tiny", action="store_true", help="CI size: just enough to run")
    ap.add_argument(
        "--heap", choices=["flat", "default"], nargs="+", default=["flat"],
        help="flat: the children run under heap.FLAT_TUNABLES, as the workflow's training jobs "
        "do with training.flat_memory: true (the default); default: glibc's own settings",
    )  # fmt: skip
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tiny:  # in the children too: the held-out shard's size
        global N_HELD
        args.sizes, N_HELD = [16, 32], 16
    if args.child:
        child(Path(args.root), args.child, args.threads, args.batch_size, args.extra_channels)
        return

    root = Path(tempfile.mkdtemp(prefix="bench-train-memory-", dir=args.dir))
    try:
        write_data(root, max(args.sizes))
        res: dict[str, dict] = {h: {} for h in args.heap}
        for heap, n in [(h, n) for h in args.heap for n in args.sizes]:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                str(n),
                "--root",
                str(root),
                "--threads",
                str(args.threads),
                "--batch-size",
                str(args.batch_size),
            ] + (["--extra-channels"] if args.extra_channels else [])
            cmd += ["--tiny"] if args.tiny else []
            env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
            if heap == "flat":
                env["GLIBC_TUNABLES"] = FLAT_TUNABLES
            p = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            res[heap][n] = r
            print(
                f"heap {heap:<7} {n:>6,} clips: peak RSS {r['maxrss_kb'] / 1024:6.0f} MiB "
                f"(after imports {r['rss_after_imports_kb'] / 1024:.0f} MiB; the part whole "
                f"would be {r['whole_part_gb']:.2f} GB), training epoch "
                f"{r['clips_per_s']:.0f} clips/s, job {r['total_seconds']:.0f} s "
                f"(index {r['index_seconds']:.1f} s)",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for heap, by_n in res.items():
        lo, hi = min(by_n), max(by_n)
        ratio = by_n[hi]["maxrss_kb"] / by_n[lo]["maxrss_kb"]
        peak_gb = by_n[hi]["maxrss_kb"] * 1024 / 1e9
        ok = ratio <= 1.25 and peak_gb < 2.0
        print(
            f"heap {heap}: peak RSS {hi:,} / {lo:,} clips: {ratio:.3f}x (goal <= 1.25x), "
            f"{peak_gb:.2f} GB at {hi:,} (goal < 2 GB): {'met' if ok else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
