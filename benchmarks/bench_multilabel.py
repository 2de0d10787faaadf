"""Training speed and peak memory of the multi-label CNN, streamed from synthetic shards.

Writes synthetic feature shards of 10-s clips (128 x 431 log-mel, all frame-level features, on
a 1/8 grid so that zstd compresses them as real ones; 250 clips a shard, row groups of 64) into
a temporary folder, removed afterwards: ``--train`` training clips and 256 eval clips, each
with a random set of ``--labels`` labels of falling frequency (the first on half the clips, the
last on 1 in 20). Each label shifts a band of the log-mel, so the task is learnable.

Then, in a fresh Python process per CNN width, runs the training job's own code
(:func:`audiosetflow.learning.multilabel.run_multilabel`) for ``--epochs`` epochs with the
balanced sampler, SpecAugment and mixup on, on the CPU with ``--threads`` threads: the index
pass, the normalisation pass, training, validation, test scores and every output file. Prints
per width the training clips/s (median over epochs; training batches only), the whole job's
time and its peak RSS (``ru_maxrss``). Goal: >= 150 clips/s on 2 CPU threads. On a machine
shared with other work the wall-clock rate falls with the load; the clips per CPU second
(the process's CPU time, both threads together) say what the model costs.

Usage: python benchmarks/bench_multilabel.py [--train 2000] [--labels 10] [--widths 16 8]
       [--threads 2] [--epochs 1] [--batch-size 32] [--device cpu] [--dir /tmp]
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

SHARD, SECONDS, SR, N_EVAL = 250, 10.0, 22050, 256


def _params():
    from audiosetflow.audio.features import FeatureParams

    return FeatureParams.from_config({}, sample_rate=SR)


def _mids(n_labels: int) -> list[str]:
    return [f"/m/bench{j:03d}" for j in range(n_labels)]


def _write_shard(path: Path, split: str, lo: int, hi: int, n_labels: int, rng) -> None:
    from audiosetflow.audio.features import write_shard

    params = _params()
    rows, t = params.rows(), params.n_frames(int(SECONDS * SR))
    mids = _mids(n_labels)
    prevalence = np.geomspace(0.5, 0.05, n_labels)
    Y = rng.random((hi - lo, n_labels)) < prevalence
    meta = pd.DataFrame(
        {
            "ytid": [f"{split[0]}{i:010d}" for i in range(lo, hi)],
            "split": split,
            "start": 0.0,
            "end": SECONDS,
            "labels": [[m for m, on in zip(mids, y, strict=True) if on] for y in Y],
            "label_names": [[] for _ in range(lo, hi)],
            "status": "ok",
            "reason": "",
            "short": False,
            "duration": SECONDS,
        }
    )
    feats = []
    band = max(1, params.n_mels // max(n_labels, 1))
    for y in Y:
        f = {}
        for name, r in rows.items():
            a = 8.0 * rng.standard_normal((r, t), dtype=np.float32)
            if name == "log_mel":
                a -= 40.0
                for j in np.flatnonzero(y):
                    a[j * band : (j + 1) * band] += 6.0
            f[name] = (np.round(a * 8) / 8).astype(np.float32)
        feats.append(f)
    write_shard(path, meta=meta, features=feats, params=params)


def write_data(root: Path, n_train: int, n_labels: int) -> None:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for split, n in (("train", n_train), ("eval", N_EVAL)):
        (root / split).mkdir(parents=True)
        for s, lo in enumerate(range(0, n, SHARD)):
            path = root / split / f"shard-{s:04d}.parquet"
            _write_shard(path, split, lo, min(lo + SHARD, n), n_labels, rng)
    size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
    print(
        f"wrote {n_train:,} + {N_EVAL} clips, {n_labels} labels ({size / 1e9:.2f} GB) in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )


def child(root: Path, args: argparse.Namespace) -> None:
    """One width: run_multilabel; prints one JSON line."""
    from audiosetflow.learning.labelsets import MultilabelSettings
    from audiosetflow.learning.multilabel import MultilabelJob, MultilabelOutputs, run_multilabel
    from audiosetflow.learning.training import TrainSettings

    out = root / f"out-{args.child}"
    out.mkdir()
    names = ("m.pt", "m.json", "m.tsv", "s.tsv", "a.png", "h.png")
    job = MultilabelJob(
        labels=[{"mid": m, "name": m.rsplit("/", 1)[-1]} for m in _mids(args.labels)],
        train_features=sorted((root / "train").glob("*.parquet")),
        eval_features=sorted((root / "eval").glob("*.parquet")),
        params=_params(),
        outputs=MultilabelOutputs(*(str(out / n) for n in names)),
        clip_seconds=SECONDS,
    )
    settings = TrainSettings(
        epochs=args.epochs,
        min_epochs=args.epochs,
        patience=args.epochs,
        batch_size=args.batch_size,
        threads=args.threads,
        device=args.device,
    )
    ml = MultilabelSettings(min_positives=1, width=args.child, mixup=0.5)
    t0 = time.perf_counter()
    res = run_multilabel(job, settings, ml, threads=args.threads)
    print(
        json.dumps(
            {
                "width": args.child,
                "clips_per_s": res["train_clips_per_s"],
                "clips_per_cpu_s": res["train_clips_per_cpu_s"],
                "job_seconds": time.perf_counter() - t0,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "mAP": res["mAP"],
                "device": res["device"],
            }
        ),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000, help="training clips")
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--dir", default=None, help="where the temporary shards go")
    ap.add_argument("--tiny", action="store_true", help="CI size: just enough to run")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.root), args)
        return
    if args.tiny:
        global N_EVAL
        args.train, args.labels, args.widths, args.epochs, N_EVAL = 64, 3, [4], 1, 32
    root = Path(tempfile.mkdtemp(prefix="bench-multilabel-", dir=args.dir))
    try:
        write_data(root, args.train, args.labels)
        for w in args.widths:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", str(w), "--root",
                   str(root), "--train", str(args.train), "--labels", str(args.labels),
                   "--threads", str(args.threads), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--device", args.device]  # fmt: skip
            p = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            goal = "met" if r["clips_per_s"] >= 150 else "NOT met"
            print(
                f"width {w:>3}: training {r['clips_per_s']:6.0f} clips/s on {r['device']} with "
                f"{args.threads} threads (goal >= 150 on 2 CPU threads: {goal}), "
                f"{r['clips_per_cpu_s']:.0f} clips per CPU second; job "
                f"{r['job_seconds']:.0f} s, peak RSS {r['maxrss_kb'] / 1024:.0f} MiB, "
                f"test mAP {r['mAP']:.3f} after {args.epochs} epoch(s)",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
