"""The whole workflow from a tar mirror at a given size (issue 21): mirror to report.

Builds, in a temporary folder (``--dir`` to keep it):

* metadata of ``--clips`` real AudioSet segments: 80 % taken from the balanced train CSV and
  20 % from the eval CSV of ``$AUDIOSETFLOW_REAL_METADATA`` (default ``/work/shared/audioset``),
  with their real YTIDs, segments and labels (a fixed seed; the class list and ontology as
  they are; no quality file);
* a tar mirror in the public layout (``bal_train00.tar``, ``bal_train01.tar``, ...,
  ``eval00.tar``, members ``audio/{split}/{YTID}.flac`` of 24-bit 48-kHz FLAC, 2,500 a tar):
  every clip a stretch as long as its segment (at most 10 s) of one of a few generated 60-s
  recordings (tones, chords and noise bursts), at a whole-second offset drawn from its YTID;

then runs Snakemake on it with ``sources: [{kind: tar}]`` (no YouTube), labels Music and
Speech, every listed segment selected (``negatives_per_positive`` high), the default
``shard_size`` (250) unless ``--shard-size``, ``audio.keep_clips`` as ``--keep-clips`` says,
and short training (a few epochs: this measures the workflow, not the models). Two runs:
mirror to features (target ``results/reports/availability.tsv``), then the rest up to the
HTML report (the default target). It prints

* wall time of each run, clips/s of the first (mirror to features), and the CPU seconds of
  the Snakemake process itself (its scheduling and bookkeeping; ``--scheduler`` picks
  Snakemake's scheduler, ``greedy`` as the profiles set or ``ilp``, Snakemake's default);
* per rule, from Snakemake's benchmark files: jobs, job-seconds, clips per job-second (shard
  rules), and the largest and median peak RSS of a job (``max_rss``);
* disk per clip: ``results/audio`` and all of ``results/`` divided by the clips with
  features, and the mirror's own bytes per clip.

Peak RSS of a shard job must not grow with ``--clips`` (compare ``--clips 200`` with 2000).

Usage::

    .venv/bin/python benchmarks/bench_scale.py --clips 2000 [--cores 2] [--keep-clips false]
        [--shard-size 250] [--scheduler greedy|ilp] [--features-only] [--dir DIR]
    .venv/bin/python benchmarks/bench_scale.py --tiny
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parent.parent
META = Path(os.environ.get("AUDIOSETFLOW_REAL_METADATA", "/work/shared/audioset"))
MIRROR_SR = 48_000
PER_TAR = 2_500
#: Shard rules: their job-seconds per clip are comparable across sizes.
SHARD_RULES = ("download", "transcode", "trim", "features")


def read_csv(path: Path) -> tuple[list[str], pd.DataFrame]:
    """The comment header lines and the rows of an AudioSet segments CSV."""
    head, rows = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                head.append(line)
            else:
                ytid, start, end, labels = line.rstrip("\n").split(", ", 3)
                rows.append((ytid, float(start), float(end), labels))
    return head, pd.DataFrame(rows, columns=["ytid", "start", "end", "labels"])


def write_metadata(dst: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` real segments (80 % train, 20 % eval) as an AudioSet metadata folder."""
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_eval = max(1, n // 5)
    picked = []
    for name, k, split in (("balanced_train_segments.csv", n - n_eval, "train"),
                           ("eval_segments.csv", n_eval, "eval")):  # fmt: skip
        head, df = read_csv(META / name)
        df = df.iloc[np.sort(rng.choice(len(df), size=k, replace=False))]
        with open(dst / name, "w", encoding="utf-8") as f:
            f.writelines(head)
            for r in df.itertuples(index=False):
                f.write(f"{r.ytid}, {r.start:.3f}, {r.end:.3f}, {r.labels}\n")
        picked.append(df.assign(split=split))
    for name in ("class_labels_indices.csv", "ontology.json"):
        shutil.copy(META / name, dst / name)
    return pd.concat(picked, ignore_index=True)


def recordings(k: int = 6, seconds: float = 60.0, seed: int = 3) -> list[np.ndarray]:
    """``k`` generated recordings at 48 kHz: chords, tone sweeps and noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * MIRROR_SR)) / MIRROR_SR
    out = []
    for i in range(k):
        y = np.zeros_like(t)
        for _ in range(3 + i % 3):
            f0 = rng.uniform(80, 2000)
            y += rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f0 * t * (1 + 0.01 * np.sin(t)))
        bursts = (np.sin(2 * np.pi * rng.uniform(0.2, 2) * t) > 0.6).astype(float)
        y += bursts * rng.normal(0, rng.uniform(0.02, 0.1), t.size)
        out.append((0.8 * y / np.max(np.abs(y))).astype(np.float32))
    return out


def write_mirror(dst: Path, segments: pd.DataFrame) -> int:
    """The tar mirror of ``segments``; returns its bytes. Each distinct (recording, offset)
    stretch is encoded once and reused (a few hundred distinct clips)."""
    recs = recordings()
    cache: dict[tuple[int, int], bytes] = {}
    total = 0
    dst.mkdir(parents=True, exist_ok=True)
    for split, prefix, folder in (("train", "bal_train", "bal_train"), ("eval", "eval", "eval")):
        part = segments[segments["split"] == split].reset_index(drop=True)
        for t0 in range(0, len(part), PER_TAR):
            path = dst / f"{prefix}{t0 // PER_TAR:02d}.tar"
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
                for r in part.iloc[t0 : t0 + PER_TAR].itertuples(index=False):
                    h = int.from_bytes(hashlib.sha1(r.ytid.encode()).digest()[:4], "little")
                    n = int(round(min(r.end - r.start, 10.0) * MIRROR_SR))  # the segment's
                    key = (h % len(recs), (h >> 8) % 50, n)
                    if key not in cache:
                        y = recs[key[0]][key[1] * MIRROR_SR : key[1] * MIRROR_SR + n]
                        buf = io.BytesIO()
                        sf.write(buf, y, MIRROR_SR, subtype="PCM_24", format="FLAC")
                        cache[key] = buf.getvalue()
                    data = cache[key]
                    info = tarfile.TarInfo(f"audio/{folder}/{r.ytid}.flac")
                    info.size, info.mtime, info.mode = len(data), 1_600_000_000, 0o644
                    tar.addfile(info, io.BytesIO(data))
            total += path.stat().st_size
    return total


def config(root: Path, *, shard_size: int, keep_clips: bool, tiny: bool) -> Path:
    """The run's config overlay."""
    cfg = {
        "metadata": {"dir": str(root / "metadata"), "qa_counts": ""},
        "labels": ["Music", "Speech"],
        "label_quality": {"min_ratio": 0.0},
        "selection": {"negatives_per_positive": 1000.0, "seed": 1},
        "shard_size": shard_size,
        "sources": [{"kind": "tar", "paths": [str(root / "mirror" / "*.tar")]}],
        "audio": {"keep_clips": keep_clips},
        "training": {"epochs": 2, "min_epochs": 1, "patience": 1,
                     "dense": {"epochs": 3, "min_epochs": 1, "members": 1}},
        "multilabel": {"epochs": 2, "min_positives": 5 if tiny else 20},
    }  # fmt: skip
    path = root / "scale.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# Runs Snakemake in this process and writes, at exit, the CPU seconds (user + system) of the
# Snakemake process itself, without its jobs: what scheduling and bookkeeping take from the
# cores the jobs run on.
_CHILD = r"""
import atexit, resource, sys
out = sys.argv[1]
def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    open(out, "w").write(f"{r.ru_utime + r.ru_stime:.3f}")
atexit.register(_cpu)
sys.argv = ["snakemake", *sys.argv[2:]]
from snakemake.cli import main
main()
"""


def snakemake(
    root: Path, cfg: Path, cores: int, *targets: str, scheduler: str | None = None
) -> tuple[float, float]:
    """Run Snakemake in ``root``: its wall seconds and the CPU seconds of the Snakemake process
    itself (the log goes to ``root/snakemake-*.log``)."""
    n = len(list(root.glob("snakemake-*.log")))
    cpu_file = root / f"snakemake-{n}.cpu"
    cmd = [sys.executable, "-c", _CHILD, str(cpu_file), "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(root), "--configfile", str(REPO / "config.yaml"), str(cfg),
           "--cores", str(cores), *targets]  # fmt: skip
    if scheduler:
        cmd += ["--scheduler", scheduler]
    log = root / f"snakemake-{n}.log"
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=root, stdout=f, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"snakemake failed (exit {proc.returncode}); see {log}:\n"
                 + log.read_text()[-3000:])  # fmt: skip
    try:
        cpu = float(cpu_file.read_text())
    except (OSError, ValueError):
        cpu = float("nan")
    return wall, cpu


def rule_table(res: Path, clips: int) -> pd.DataFrame:
    """Per rule: jobs, job-seconds, clips per job-second, max and median peak RSS (MB)."""
    rows = []
    for f in (res / "benchmarks").rglob("*.tsv"):
        rule = f.relative_to(res / "benchmarks").parts[0].removesuffix(".tsv")
        try:
            b = pd.read_csv(f, sep="\t")
        except (pd.errors.EmptyDataError, OSError):
            continue
        if {"s", "max_rss"} <= set(b.columns) and len(b):
            rss = pd.to_numeric(b["max_rss"], errors="coerce")
            rows.append({"rule": rule, "s": float(b["s"].iloc[-1]), "rss": float(rss.iloc[-1])})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    out = df.groupby("rule").agg(jobs=("s", "size"), job_s=("s", "sum"),
                                 rss_max=("rss", "max"), rss_median=("rss", "median"))  # fmt: skip
    out["clips_per_job_s"] = [clips / out.at[r, "job_s"] if r in SHARD_RULES else float("nan")
                              for r in out.index]  # fmt: skip
    return out.sort_values("job_s", ascending=False)


def du(path: Path) -> int:
    """Bytes of the files under ``path`` (blocks allocated)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--keep-clips", choices=["true", "false"], default="false")
    ap.add_argument("--dir", type=Path, help="work here and keep it (default: a temp folder)")
    ap.add_argument("--features-only", action="store_true", help="stop at the features")
    ap.add_argument("--tiny", action="store_true", help="CI size: 16 clips, to the features")
    ap.add_argument("--scheduler", choices=["greedy", "ilp"],
                    help="Snakemake's --scheduler (default: Snakemake's own, ilp)")  # fmt: skip
    args = ap.parse_args()
    if args.tiny:
        args.clips, args.shard_size, args.features_only = 16, 16, True
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_scale."))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        segs = write_metadata(root / "metadata", args.clips)
        mirror_bytes = write_mirror(root / "mirror", segs)
        print(f"{args.clips} clips ({(segs['split'] == 'train').sum()} train, "
              f"{(segs['split'] == 'eval').sum()} eval), mirror {mirror_bytes / 2**20:.0f} MiB "
              f"({mirror_bytes / args.clips / 1e3:.0f} KB/clip), made in "
              f"{time.perf_counter() - t:.0f} s")  # fmt: skip
        cfg = config(root, shard_size=args.shard_size, keep_clips=args.keep_clips == "true",
                     tiny=args.tiny)  # fmt: skip
        w1, c1 = snakemake(root, cfg, args.cores, "results/reports/availability.tsv",
                           scheduler=args.scheduler)  # fmt: skip
        res = root / "results"
        meta = pd.read_parquet(res / "features", columns=["ytid", "status"])
        ok = int((meta["status"] == "ok").sum())
        print(f"mirror to features: {w1:.1f} s wall, {ok} clips with features of "
              f"{len(meta)} selected, {ok / w1:.1f} clips/s on {args.cores} cores "
              f"(keep_clips {args.keep_clips}, shard_size {args.shard_size}); the Snakemake "
              f"process itself used {c1:.1f} s of CPU (scheduler "
              f"{args.scheduler or 'ilp'})")  # fmt: skip
        w2 = 0.0
        if not args.features_only:
            w2, c2 = snakemake(root, cfg, args.cores, scheduler=args.scheduler)
            print(f"features to report: {w2:.1f} s wall (Snakemake itself {c2:.1f} s of CPU); "
                  f"whole run {w1 + w2:.1f} s")  # fmt: skip
        table = rule_table(res, len(meta))
        with pd.option_context("display.width", 120, "display.float_format", "{:.1f}".format):
            print("per rule (job_s: seconds summed over jobs; rss in MB, per job):")
            print(table.to_string())
        shard_rss = table.loc[table.index.isin(SHARD_RULES), "rss_max"]
        print(f"peak RSS of a shard job: {shard_rss.max():.0f} MB; of any job: "
              f"{table['rss_max'].max():.0f} MB ({table['rss_max'].idxmax()})")  # fmt: skip
        audio, total = du(res / "audio"), du(res)
        print(f"disk per clip: results/audio {audio / max(ok, 1) / 1e3:.1f} KB, results/ "
              f"{total / max(ok, 1) / 1e3:.1f} KB (keep_clips {args.keep_clips}); "
              f"mirror {mirror_bytes / args.clips / 1e3:.0f} KB")  # fmt: skip
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
