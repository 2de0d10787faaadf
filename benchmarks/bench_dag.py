"""How long and how much memory `snakemake -n` takes to plan the workflow on large metadata.

1. the real AudioSet balanced_train + eval metadata (42,531 YTIDs), labels Music and Speech,
   no caps (goal: <= 10 s, <= 300 MB);
2. a 2,000,000-row segment CSV in the unbalanced format, generated from the label sets of the
   real balanced file (goal: <= 60 s).

Usage: python benchmarks/bench_dag.py [--metadata ../shared/audioset] [--rows 2000000]
Prints wall time, peak memory (max RSS of the snakemake process) and the job count.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def dry_run(workdir: Path, metadata_dir: Path, train: str, evals: str) -> tuple[float, float, int]:
    """Run `snakemake -n` in a child process; return (seconds, peak MB, jobs)."""
    cfg = workdir / "bench.yaml"
    cfg.write_text(
        f"metadata:\n  dir: {metadata_dir}\n  train_segments: {train}\n"
        f"  eval_segments: '{evals}'\n  qa_counts: ''\n"
        "labels: [Music, Speech]\nselection:\n  max_positives: null\n"
    )
    cmd = [
        sys.executable, "-m", "snakemake", "-n", "--quiet", "all",
        "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(REPO / "config.yaml"), str(cfg), "--cores", "8",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, check=False)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    m = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    jobs = int(m.group(1)) if m else -1
    if peak <= before:
        print("warning: peak RSS of this child not separable from an earlier, larger one")
    return secs, peak / 1024, jobs


def make_unbalanced(path: Path, rows: int, balanced: Path, seed: int = 0) -> None:
    """Write `rows` segments in the official format, label sets drawn from the real file."""
    labels = []
    for line in balanced.read_text().splitlines():
        if not line.startswith("#"):
            labels.append(line.split(", ", 3)[3])
    rng = np.random.default_rng(seed)
    ids = rng.choice(ALPHABET, size=(rows, 11))
    ytids = ["".join(r) for r in ids]
    starts = rng.integers(0, 600, rows) * 10
    pick = rng.integers(0, len(labels), rows)
    with path.open("w") as fh:
        fh.write("# Segments csv created by bench_dag.py\n")
        fh.write(
            f"# num_ytids={rows}, num_segs={rows}, num_unique_labels=527, num_positive_labels=0\n"
        )
        fh.write("# YTID, start_seconds, end_seconds, positive_labels\n")
        seen = set()
        for y, s, k in zip(ytids, starts, pick, strict=True):
            if y in seen:
                continue
            seen.add(y)
            fh.write(f"{y}, {s:.3f}, {s + 10:.3f}, {labels[k]}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metadata", default=str(REPO.parent / "shared" / "audioset"))
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--tiny", action="store_true", help="CI size: just enough to run")
    args = ap.parse_args()
    if args.tiny:
        args.rows = 20_000
    meta = Path(args.metadata).resolve()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        w1 = tmp / "real"
        w1.mkdir()
        s, mb, jobs = dry_run(w1, meta, "balanced_train_segments.csv", "eval_segments.csv")
        print(
            f"real balanced+eval (42,531 YTIDs), Music+Speech, no caps: "
            f"snakemake -n {s:.1f} s, peak {mb:.0f} MB, {jobs} jobs  (goal <= 10 s, <= 300 MB)"
        )
        w2 = tmp / "big"
        w2.mkdir()
        for name in ("class_labels_indices.csv", "ontology.json"):
            os.symlink(meta / name, w2 / name)
        t0 = time.perf_counter()
        make_unbalanced(
            w2 / "unbalanced_train_segments.csv", args.rows, meta / "balanced_train_segments.csv"
        )
        print(f"(generated {args.rows:,} rows in {time.perf_counter() - t0:.0f} s)")
        s, mb, jobs = dry_run(w2, w2, "unbalanced_train_segments.csv", "")
        print(
            f"{args.rows:,}-row unbalanced format, Music+Speech, no caps: "
            f"snakemake -n {s:.1f} s, peak {mb:.0f} MB, {jobs} jobs  (goal <= 60 s)"
        )


if __name__ == "__main__":
    main()
