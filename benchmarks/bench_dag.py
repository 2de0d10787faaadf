"""How long and how much memory `snakemake -n` takes to plan the workflow on large metadata,
and how long a job takes to read the stored plan back.

1. the real AudioSet balanced_train + eval metadata (42,531 YTIDs), labels Music and Speech,
   no caps (goal: <= 10 s, <= 300 MB);
2. a 2,041,789-row train CSV made from the real balanced rows (their segments and labels,
   repeated, with new YTIDs) plus the real eval CSV, the default config (`multilabel.labels:
   all`: every clip selected): the first `snakemake -n` (plans and stores the plan; goal
   <= 60 s, <= 1.5 GB), a second one (reads the stored plan; goal <= 10 s), and one after the
   train CSV was touched (same bytes, new modification time: hashed again, same plan);
3. what every later process (each cluster job) pays for the plan: a fresh Python reading the
   stored plan and one shard's rows (goal: well under a second).

Usage: python benchmarks/bench_dag.py [--metadata ../shared/audioset] [--rows 2041789]
       [--cprofile DIR] [--shard-size N] [--max-shards N] [--big-only] [--tiny]
Prints wall time, peak memory (VmHWM of the snakemake process) and the job count of each run;
with --cprofile, the functions the first and second big runs spend their time in.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
FULL_ROWS = 2_041_789

# Runs snakemake in this process and writes its peak RSS (VmHWM) at exit; optionally under
# cProfile.
CHILD = r"""
import atexit, sys
hwm_file, prof = sys.argv[1], sys.argv[2]
def _hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(hwm_file, "w").write(line.split()[1])
atexit.register(_hwm)
sys.argv = ["snakemake", *sys.argv[3:]]
from snakemake.cli import main
if prof:
    import cProfile
    p = cProfile.Profile()
    try:
        p.runcall(main)
    except SystemExit:
        pass
    finally:
        p.dump_stats(prof)
else:
    main()
"""


def dry_run(
    workdir: Path, cfg_text: str, *, profile: Path | None = None
) -> tuple[float, float, int]:
    """Run `snakemake -n` in a child process; return (seconds, peak MB, jobs)."""
    cfg = workdir / "bench.yaml"
    cfg.write_text(cfg_text)
    hwm = workdir / ".hwm"
    hwm.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-c", CHILD, str(hwm), str(profile or ""),
        "-n", "--quiet", "all", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(REPO / "config.yaml"), str(cfg),
        "--cores", "8",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, check=False)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    m = re.search(r"^total\s+(\d+)", proc.stdout + proc.stderr, re.M)
    jobs = int(m.group(1)) if m else -1
    peak = int(hwm.read_text()) / 1024 if hwm.exists() else float("nan")
    return secs, peak, jobs


def make_big_train(path: Path, rows: int, balanced: Path, seed: int = 0) -> None:
    """Write ``rows`` segments in the official format: the real balanced file's rows (segment
    and labels) repeated in order, each with a new random YTID (unique)."""
    body = [ln for ln in balanced.read_text().splitlines() if ln and not ln.startswith("#")]
    tails = [ln.split(",", 1)[1] for ln in body]
    rng = np.random.default_rng(seed)
    ids = np.unique(
        rng.integers(0, 64, size=(int(rows * 1.001) + 100, 11)).astype(np.uint8), axis=0
    )
    ids = ids[rng.permutation(len(ids))[:rows]]
    ytids = ALPHABET[ids].view(f"<U{11}").ravel()
    with path.open("w") as fh:
        fh.write("# Segments csv created by bench_dag.py from balanced_train_segments.csv\n")
        fh.write(
            f"# num_ytids={rows}, num_segs={rows}, num_unique_labels=527, num_positive_labels=0\n"
        )
        fh.write("# YTID, start_seconds, end_seconds, positive_labels\n")
        n = len(tails)
        fh.writelines(f"{y},{tails[i % n]}\n" for i, y in enumerate(ytids.tolist()))


PLAN_READ = r"""
import sys, time
t0 = time.perf_counter()
import yaml
from audiosetflow.config import validate
from audiosetflow.plan import metadata_paths, stored_plan
t1 = time.perf_counter()
cfg = yaml.safe_load(open(sys.argv[1]))
for extra in sys.argv[2:]:
    for k, v in yaml.safe_load(open(extra)).items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
validate(cfg)
t2 = time.perf_counter()
plan = stored_plan(cfg, metadata_paths(cfg), "results/plan")
t3 = time.perf_counter()
s = plan.splits[0]
rows = plan.shard_rows(s, plan.shards(s)[len(plan.shards(s)) // 2])
t4 = time.perf_counter()
print(f"{t1 - t0:.3f} {t3 - t2:.3f} {t4 - t3:.3f} {len(rows)}")
"""


def plan_read(workdir: Path) -> tuple[float, float, float, int]:
    """A fresh process reading the stored plan (as every cluster job does): seconds for the
    imports, the plan, one shard's rows; the shard's rows."""
    out = subprocess.run(
        [sys.executable, "-c", PLAN_READ, str(REPO / "config.yaml"), str(workdir / "bench.yaml")],
        capture_output=True, text=True, cwd=workdir, check=True,
    ).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1]), float(out[2]), int(out[3])


def top_functions(prof: Path, n: int = 12) -> str:
    """The functions a profile spent the most cumulative time in (package and Snakemake)."""
    st = pstats.Stats(str(prof))
    rows = []
    for (file, line, func), (_, _, _, ct, _) in st.stats.items():
        if "audiosetflow" in file or "snakemake" in file or "pandas" in file:
            rows.append((ct, f"{Path(file).parent.name}/{Path(file).name}:{line} {func}"))
    rows.sort(reverse=True)
    return "\n".join(f"    {ct:7.1f} s  {name}" for ct, name in rows[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metadata", default=str(REPO.parent / "shared" / "audioset"))
    ap.add_argument("--rows", type=int, default=FULL_ROWS)
    ap.add_argument("--cprofile", default="", help="folder for cProfile dumps of the big runs")
    ap.add_argument("--tiny", action="store_true", help="CI size: just enough to run")
    ap.add_argument("--shard-size", type=int, help="shard_size of the big runs (default: config's)")
    ap.add_argument("--max-shards", type=int, help="max_shards of the big runs, 0: no cap "
                    "(default: config's)")  # fmt: skip
    ap.add_argument("--big-only", action="store_true", help="skip the real-metadata runs")
    args = ap.parse_args()
    meta = Path(args.metadata).resolve()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    prof_dir = Path(args.cprofile).resolve() if args.cprofile else None
    if prof_dir:
        prof_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not (args.tiny or args.big_only):
            w1 = tmp / "real"
            w1.mkdir()
            cfg1 = (
                f"metadata:\n  dir: {meta}\n  train_segments: balanced_train_segments.csv\n"
                "  eval_segments: eval_segments.csv\n  qa_counts: ''\n"
                "labels: [Music, Speech]\nselection:\n  max_positives: null\n"
                "multilabel:\n  enabled: false\n"
            )
            s, mb, jobs = dry_run(w1, cfg1)
            s2, mb2, _ = dry_run(w1, cfg1)
            print(
                f"real balanced+eval (42,531 YTIDs), Music+Speech, no caps: snakemake -n "
                f"first {s:.1f} s, {mb:.0f} MB; again {s2:.1f} s, {mb2:.0f} MB; {jobs} jobs  "
                "(goal <= 10 s, <= 300 MB)"
            )
        rows = 5_000 if args.tiny else args.rows
        w2 = tmp / "big"
        w2.mkdir()
        for name in ("class_labels_indices.csv", "ontology.json", "eval_segments.csv"):
            os.symlink(meta / name, w2 / name)
        t0 = time.perf_counter()
        make_big_train(w2 / "big_train_segments.csv", rows, meta / "balanced_train_segments.csv")
        size = (w2 / "big_train_segments.csv").stat().st_size
        print(f"(generated {rows:,} train rows, {size / 1e6:.0f} MB, in "
              f"{time.perf_counter() - t0:.0f} s)")  # fmt: skip
        evals = "''" if args.tiny else "eval_segments.csv"
        cfg2 = (
            f"metadata:\n  dir: {w2}\n  train_segments: big_train_segments.csv\n"
            f"  eval_segments: {evals}\n  qa_counts: ''\n"
        )
        if args.shard_size:
            cfg2 += f"shard_size: {args.shard_size}\n"
        if args.max_shards is not None:
            cfg2 += f"max_shards: {args.max_shards or 'null'}\n"
        what = f"{rows:,}-row train" + ("" if args.tiny else " + real eval") + \
            ", default config (multilabel.labels: all)"  # fmt: skip
        if args.shard_size:
            what += f", shard_size {args.shard_size}"
        if args.max_shards is not None:
            what += f", max_shards {args.max_shards or 'null'}"
        runs = {}
        for name in ("first", "again", "touched"):
            if name == "touched":
                os.utime(w2 / "big_train_segments.csv")
            prof = prof_dir / f"dag_{name}.prof" if prof_dir and name != "touched" else None
            runs[name] = dry_run(w2, cfg2, profile=prof)
        (first, mb1, jobs), (again, mb2, _), (touched, mb3, _) = runs.values()
        print(
            f"{what}: snakemake -n first {first:.1f} s, {mb1:.0f} MB (goal <= 60 s, <= 1.5 GB); "
            f"again {again:.1f} s, {mb2:.0f} MB (goal <= 10 s); after touching the CSV "
            f"{touched:.1f} s, {mb3:.0f} MB; {jobs:,} jobs"
        )
        imports, read, shard, n = plan_read(w2)
        print(
            f"a job reading the stored plan: {read * 1000:.0f} ms, one shard's {n} rows "
            f"{shard * 1000:.0f} ms (imports before it {imports:.2f} s)"
        )
        heads = list((w2 / "results" / "plan").glob("plan-*.json"))
        arrow = [p.with_suffix(".arrow") for p in heads]
        print(
            "stored plan: "
            + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in heads + arrow)
            + f" ({json.loads(heads[0].read_text())['rows']:,} rows)"
        )
        if prof_dir:
            for name in ("first", "again"):
                print(f"where the {name} run's time goes (cumulative):")
                print(top_functions(prof_dir / f"dag_{name}.prof"))


if __name__ == "__main__":
    main()
