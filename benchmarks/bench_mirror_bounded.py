"""Peak memory of a download job whose tar source holds a huge member (issue "Safe to share,
safe on bad input": a 2-GiB member drove one job to 2.2 GB RSS and was taken as a 67,108-s
"cut copy" of a 10-s segment).

Builds a plain tar (sparse: the member's zeros take no disk) with ``--clips`` good 10-s FLAC
clips and one member of ``--gib`` GiB whose WAV header announces it all as 16-kHz 16-bit
samples, then runs the download stage (``download_shard`` over the tar source, no YouTube) in
a fresh process and prints that process's peak RSS, the wall time and what became of the huge
member. With ``--limit-mb`` the process's address space is limited to that many MiB (the
download rule declares ``mem_mb=1000``).

Usage::

    .venv/bin/python benchmarks/bench_mirror_bounded.py [--gib 2] [--clips 20] [--limit-mb 1000]
    .venv/bin/python benchmarks/bench_mirror_bounded.py --gib 0.01 --clips 2   # tiny, for CI
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import soundfile as sf

_JOB = textwrap.dedent(
    """
    import json, resource, sys
    if int(sys.argv[1]):
        limit = int(sys.argv[1]) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import pandas as pd
    from audiosetflow.acquisition.download import DownloadConfig, download_shard
    from audiosetflow.acquisition.sources import build_index, parse_sources
    from audiosetflow.shard import Layout, ShardTable
    tar, res = sys.argv[2], sys.argv[3]
    ytids = json.loads(sys.argv[4])
    sources = parse_sources([{"kind": "tar", "paths": [tar]}])
    build_index(sources, out=res + "/index.parquet")
    man = pd.DataFrame({"ytid": ytids, "split": "train", "shard": 0, "start": 0.0,
                        "end": 10.0, "labels": "/m/04rlf"})
    shard = Layout(res).shard("train", 0)
    t = download_shard(ShardTable.from_manifest(man), shard=shard,
                       cfg=DownloadConfig.from_config({}), sources=sources,
                       index=res + "/index.parquet")
    # VmHWM: this process's own peak (ru_maxrss would include the forking parent's RSS)
    status = open("/proc/self/status").read()
    peak = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")))
    peak /= 1024
    print(json.dumps({"peak_mb": peak,
                      "ok": int((t.df["download_status"] == "ok").sum()),
                      "huge": [t.df.at["hugeWAV0001", c]
                               for c in ("download_status", "download_reason")]}))
    """
)


def _wav_header(data_bytes: int, sr: int = 16_000) -> bytes:
    return (
        b"RIFF" + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
        + b"data" + struct.pack("<I", min(data_bytes, 0xFFFFFFFF))
    )  # fmt: skip


def _flac(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    sf.write(buf, 0.1 * rng.standard_normal(480_000), 48_000, format="FLAC", subtype="PCM_24")
    return buf.getvalue()


def build(tar: Path, *, gib: float, clips: int) -> list[str]:
    ytids = [f"good{k:07d}" for k in range(clips)]
    huge = int(gib * (1 << 30))
    members = [(f"audio/bal_train/{y}.flac", _flac(k), None) for k, y in enumerate(ytids)]
    members.append(("audio/bal_train/hugeWAV0001.flac", _wav_header(huge - 44), huge))
    with open(tar, "wb") as f:
        for name, head, size in members:
            size = len(head) if size is None else size
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, 1_600_000_000, 0o644
            f.write(info.tobuf(format=tarfile.GNU_FORMAT))
            start = f.tell()
            f.write(head)
            f.seek(start + size + (-size % 512))
        f.write(bytes(1024))
    return [*ytids, "hugeWAV0001"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0, help="size of the huge member (GiB)")
    ap.add_argument("--clips", type=int, default=20, help="good 10-s clips beside it")
    ap.add_argument("--limit-mb", type=int, default=1000, help="address-space limit (0: none)")
    ap.add_argument("--tiny", action="store_true", help="CI size: a 0.01-GiB member, 2 clips")
    args = ap.parse_args()
    if args.tiny:
        args.gib, args.clips = 0.01, 2
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "bal_train00.tar"
        ytids = build(tar, gib=args.gib, clips=args.clips)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _JOB, str(args.limit_mb), str(tar), tmp, json.dumps(ytids)],
            capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"the download job failed (exit {proc.returncode})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"tar: {args.clips} clips of 10 s + one {args.gib:g}-GiB member; address space "
          f"limit {args.limit_mb or 'none'} MiB")  # fmt: skip
    print(f"download job: peak RSS {res['peak_mb']:.0f} MB, wall {wall:.1f} s (process start "
          f"and imports included), {res['ok']} clips ok")  # fmt: skip
    print(f"huge member: {res['huge'][0]}: {res['huge'][1]}")


if __name__ == "__main__":
    main()
