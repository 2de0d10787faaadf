"""CPU time of the download stage per YTID: re-encoded sections vs stream-copied ones.

A 5-minute source at 128 kbit/s is served by the loopback fault server of the tests
(tests/faultserver.py) as faststart M4A/AAC and as WebM/Opus with its Cues up front (like
YouTube's itags 140 and 251). Each mode downloads the same YTIDs through
:func:`audiosetflow.acquisition.download.download_shard` (yt-dlp, ffmpeg cut, decode check):

* ``m4a re-encode``: sections re-encoded (``force_keyframes_at_cuts``; the stage before
  stream copy: ``ytdlp.COPY_EXACT`` emptied);
* ``m4a copy``: sections stream-copied (today's stage: ``COPY_EXACT`` holds m4a/mp4);
* ``webm re-encode``: WebM sections, re-encoded as before (a copy would not be exact);
* ``m4a never``: ``download.sections: never``, the whole file (no cut at all).

CPU is user + system time of this process and its children (ffmpeg) together; the loopback
server runs in this process, so its share is in the figures too (the same for every mode).

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_download_cpu.py [N]
"""

from __future__ import annotations

import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faultserver import FaultServer, make_media  # noqa: E402

from audiosetflow.acquisition import download as dl  # noqa: E402
from audiosetflow.acquisition import ytdlp  # noqa: E402
from audiosetflow.shard import Layout, ShardTable  # noqa: E402

SOURCE_SECONDS = 300.0
START, END = 120.0, 130.0


def cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def measure(root: Path, srv: FaultServer, *, ext: str, mode: str, n: int) -> tuple[float, float]:
    """CPU and wall seconds per YTID of one mode."""
    copy_exact = ytdlp.COPY_EXACT
    if mode == "re-encode":
        ytdlp.COPY_EXACT = frozenset()
    try:
        cfg = dl.DownloadConfig.from_config(
            {"url_template": srv.url_template(ext), "socket_timeout": 10,
             "sections": "never" if mode == "never" else "auto"}
        )  # fmt: skip
        ytids = [f"ok_{mode}_{ext}_{k}" for k in range(n)]
        man = pd.DataFrame(
            {"ytid": ytids, "split": "train", "shard": 0, "start": START, "end": END,
             "labels": ""}
        )  # fmt: skip
        shard = Layout(root / f"{ext}-{mode}").shard("train", 0)
        c0, t0 = cpu(), time.perf_counter()
        table = dl.download_shard(ShardTable.from_manifest(man), shard=shard, cfg=cfg)
        c1, t1 = cpu(), time.perf_counter()
        assert table.ledger()["status"].tolist() == ["ok"] * n
        return (c1 - c0) / n, (t1 - t0) / n
    finally:
        ytdlp.COPY_EXACT = copy_exact


def main() -> None:
    global SOURCE_SECONDS, START, END
    logging.basicConfig(level=logging.WARNING)
    argv = sys.argv[1:]
    if "--tiny" in argv:  # CI size: a 30-s source, one YTID per mode
        argv.remove("--tiny")
        SOURCE_SECONDS, START, END = 30.0, 12.0, 22.0
        argv = argv or ["1"]
    n = int(argv[0]) if argv else 6
    print(f"source {SOURCE_SECONDS:.0f} s at 128 kbit/s; segment [{START:.0f}, {END:.0f}) s "
          f"+ 1 s margin; {n} YTIDs per mode")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for ext in ("m4a", "webm"):
            make_media(root / "media" / f"default.{ext}", SOURCE_SECONDS, kind="noise",
                       bitrate="128k")  # fmt: skip
        with FaultServer(root / "media") as srv:
            measure(root / "warm", srv, ext="m4a", mode="copy", n=1)  # imports, caches
            rows = []
            for ext, mode in (("m4a", "re-encode"), ("m4a", "copy"), ("webm", "re-encode"),
                              ("m4a", "never")):  # fmt: skip
                c, w = measure(root, srv, ext=ext, mode=mode, n=n)
                rows.append((f"{ext} {mode}", c, w))
    print(f"{'mode':<16} {'CPU s/YTID':>11} {'wall s/YTID':>12}")
    for name, c, w in rows:
        print(f"{name:<16} {c:>11.3f} {w:>12.3f}")
    before, after = rows[0][1], rows[1][1]
    print(f"m4a sections: CPU {before:.3f} -> {after:.3f} s per YTID "
          f"({100 * (1 - after / before):.0f} % less)")  # fmt: skip


if __name__ == "__main__":
    main()
