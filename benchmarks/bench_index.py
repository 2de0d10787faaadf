"""A download job's mirror lookup at AudioSet size (issue 21): the Parquet index vs the keyed
SQLite table beside it.

Builds an index of ``--rows`` YTIDs (default 2,041,789, the unbalanced train CSV's size) spread
over tar files of 2,500 members as the public mirror has them (``unbal_train000.tar``, ...),
writes it as :func:`audiosetflow.acquisition.sources.build_index` does (Parquet, then the
SQLite table from :func:`~audiosetflow.acquisition.sources.write_lookup`), and times
:func:`~audiosetflow.acquisition.sources.lookup` of one shard's YTIDs (``--shard-size``, 250 by
default, drawn at random as jump hashing draws them), each in a fresh process as a job pays it
(Python start excluded: the import of the module and the lookup). Also prints the index's
sizes and the SQLite table's build time.

Usage::

    .venv/bin/python benchmarks/bench_index.py [--rows 2041789] [--shard-size 250] [--tiny]
"""

from __future__ import annotations

import argparse
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from audiosetflow.acquisition.sources import INDEX_COLUMNS, _typed, lookup_path, write_lookup

_JOB = """
import sys, time
t0 = time.perf_counter()
from audiosetflow.acquisition.sources import lookup
t1 = time.perf_counter()
got = lookup(sys.argv[1], sys.argv[2].split(","))
t2 = time.perf_counter()
assert len(got) == len(sys.argv[2].split(",")), len(got)
print(f"{t1 - t0:.4f} {t2 - t1:.4f}")
"""


def make_index(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` distinct 11-character YTIDs in tars of 2,500 members, sorted as the index is."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer((string.ascii_letters + string.digits + "-_").encode(), np.uint8)
    codes = rng.integers(0, len(alphabet), size=(int(n * 1.01) + 10, 11))
    raw = np.ascontiguousarray(alphabet[codes]).view("S11").ravel()
    ytids = pd.unique(raw.astype(str))[:n]
    tar = np.arange(n) // 2500
    df = pd.DataFrame({
        "ytid": ytids, "source": 0, "origin": [f"tar:unbal_train{t:03d}.tar" for t in tar],
        "kind": "tar", "path": [f"/data/audioset/unbal_train{t:03d}.tar" for t in tar],
        "offset": (np.arange(n) % 2500) * 300_000 + 1536, "size": 299_000, "row_group": -1,
        "row": -1, "start_ms": -1, "end_ms": -1, "cut": 1, "ext": "flac",
    })  # fmt: skip
    return _typed(df[list(INDEX_COLUMNS)]).sort_values(["ytid", "source"]).reset_index(drop=True)


def time_job(index: Path, ytids: list[str]) -> tuple[float, float]:
    """(import s, lookup s) of one fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _JOB, str(index), ",".join(ytids)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    a, b = out.stdout.split()
    return float(a), float(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_041_789)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--jobs", type=int, default=5, help="fresh processes timed per form")
    ap.add_argument("--tiny", action="store_true", help="CI size: just enough to run")
    args = ap.parse_args()
    if args.tiny:
        args.rows, args.jobs = 20_000, 2
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        index = make_index(args.rows)
        print(f"index of {len(index):,} rows made in {time.perf_counter() - t:.1f} s")
        pq = Path(tmp) / "index.parquet"
        t = time.perf_counter()
        index.to_parquet(pq, index=False)
        t_pq = time.perf_counter() - t
        t = time.perf_counter()
        write_lookup(index, lookup_path(pq))
        t_sql = time.perf_counter() - t
        mib_pq, mib_sql = pq.stat().st_size / 2**20, lookup_path(pq).stat().st_size / 2**20
        print(
            f"write: parquet {t_pq:.1f} s, {mib_pq:.0f} MiB; "
            f"sqlite {t_sql:.1f} s, {mib_sql:.0f} MiB"
        )
        ids = index["ytid"].to_numpy()
        res = {}
        for form, path in (("parquet", pq), ("sqlite", lookup_path(pq))):
            if form == "parquet":  # the Parquet path is used only without a newer table
                path = Path(tmp) / "alone.parquet"
                path.hardlink_to(pq)
            times = []
            for _ in range(args.jobs):
                shard = list(rng.choice(ids, size=args.shard_size, replace=False))
                times.append(time_job(path, shard))
            imp = np.median([a for a, _ in times])
            look = np.median([b for _, b in times])
            res[form] = look
            print(f"{form:8s} lookup of {args.shard_size} YTIDs in {len(index):,}: "
                  f"median {look * 1000:.1f} ms (max {max(b for _, b in times) * 1000:.1f} ms), "
                  f"import {imp * 1000:.0f} ms")  # fmt: skip
        print(
            f"lookup per job: parquet {res['parquet'] * 1000:.1f} ms -> sqlite "
            f"{res['sqlite'] * 1000:.1f} ms ({res['parquet'] / res['sqlite']:.0f}x)"
        )


if __name__ == "__main__":
    main()
