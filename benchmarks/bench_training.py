"""CNN training throughput on CPU: clips per second for 10-s clips (128 x 431 log-mel).

Runs the project's own training loop (:func:`audiosetflow.learning.trainer.fit`) on random
inputs of the real size; the first epoch is a warm-up, the others are timed.
Goal: >= 30 clips/s with 2 threads.

Usage: python benchmarks/bench_training.py [--threads 2] [--clips 256] [--epochs 3]
       [--batch-size 32] [--extra-channels 0]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

from audiosetflow.learning.inputs import channel_stats
from audiosetflow.learning.models import AudioCNN
from audiosetflow.learning.trainer import FitSettings, fit_arrays

N_MELS, FRAMES = 128, 431  # 10 s at 22050 Hz, hop 512


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (plus one warm-up)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--extra-channels", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="CI size: just enough to run")
    args = ap.parse_args()
    if args.tiny:
        args.clips, args.epochs, args.batch_size = 16, 1, 8

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    channels = 1 + args.extra_channels
    X = rng.normal(size=(args.clips, channels, N_MELS, FRAMES)).astype(np.float32)
    y = (np.arange(args.clips) % 2).astype(np.float32)
    stats = channel_stats(X[:64])
    model, res = fit_arrays(
        lambda: AudioCNN(N_MELS, channels).set_normalization(*stats),
        X,
        y,
        None,
        None,
        settings=FitSettings(epochs=args.epochs + 1, patience=args.epochs + 1, seed=0),
        batch_size=args.batch_size,
        logger=logging.getLogger("bench"),
    )
    n_params = sum(p.numel() for p in model.parameters())
    secs = [h["seconds"] for h in res.history[1:]]
    rate = args.clips * len(secs) / sum(secs)
    print(
        f"CNN training throughput: {rate:.0f} clips/s "
        f"({args.threads} threads, {channels} x {N_MELS} x {FRAMES} inputs, batch "
        f"{args.batch_size}, {n_params:,} parameters, {len(secs)} timed epochs of "
        f"{args.clips} clips; goal >= 30)"
    )


if __name__ == "__main__":
    main()
