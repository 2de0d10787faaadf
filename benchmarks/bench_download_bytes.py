"""Bytes one 10-s AudioSet segment costs: section download (download_ranges) vs full download.

A 5-minute source at 128 kbit/s is served by the loopback fault server of the tests
(tests/faultserver.py), once as webm/Opus with its Cues up front (like YouTube's itag 251) and
once as a faststart m4a/AAC (its sample table, ~50 kB for 5 min, sits in front of the media).
The stage downloads ``[start - margin, end + margin]`` = 12 s; the full download is the
stage's own fallback path (the one used for sources that cannot be cut).

Bytes are counted on the server side: body bytes handed to the kernel, with a small send
buffer on each accepted socket. Two counts are printed:

* paced: the server sends at ~4 MB/s (32 Mbit/s) in 8 KiB chunks, like a real link, so a
  client that hangs up mid-body leaves only a chunk or two unread: these are the bytes the
  client needed (the headline figure);
* loopback: as fast as the socket takes them; a client that hangs up mid-body has already
  been pushed up to its receive buffer (~100 kB here) that it never reads: an upper bound.

The request made by yt-dlp's generic extractor (a GET of the media URL it abandons after the
headers) is included; on YouTube that request goes to the watch page, not to the media.

Run: .venv/bin/python benchmarks/bench_download_bytes.py
"""

from __future__ import annotations

import logging
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
START, END, MARGIN = 120.0, 130.0, 1.0
RATE = 4e6  # bytes/s of the paced runs


def measure(root: Path, ext: str, rate: float | None) -> dict:
    tag = f"{ext}-{'paced' if rate else 'loopback'}"
    with FaultServer(root / "media", rate=rate) as srv:
        cfg = dl.DownloadConfig.from_config(
            {"url_template": srv.url_template(ext), "margin": MARGIN, "socket_timeout": 10}
        )
        man = pd.DataFrame(
            {"ytid": ["ok_section"], "split": "train", "shard": 0, "start": START,
             "end": END, "labels": ""}
        )  # fmt: skip
        t0 = time.perf_counter()
        shard = Layout(root / tag / "sec").shard("train", 0)
        table = dl.download_shard(ShardTable.from_manifest(man), shard=shard, cfg=cfg)
        t_sec = time.perf_counter() - t0
        led = table.ledger()
        assert led["status"].tolist() == ["ok"], led.to_string()
        sec = [(r[1] or "GET", r[2]) for r in srv.log if r[0] == "ok_section"]
        sec_file = Path(table.df.loc["ok_section", "media"])
        if not sec_file.is_absolute():
            sec_file = shard.media_name("ok_section", sec_file.suffix.lstrip(".")).parent / sec_file

        full_shard = Layout(root / tag / "full").shard("train", 0)
        full = ytdlp.YtdlpFetcher(cfg, full_shard, logging.getLogger("bench"))
        full.sections = False  # the stage's fallback path: the whole file
        t0 = time.perf_counter()
        full.fetch("ok_full", START, END)
        t_full = time.perf_counter() - t0
        return {
            "sec_bytes": srv.bytes_sent["ok_section"],
            "sec_requests": sec,
            "full_bytes": srv.bytes_sent["ok_full"],
            "full_requests": srv.requests["ok_full"],
            "t_sec": t_sec,
            "t_full": t_full,
            "sec_file": sec_file.stat().st_size,
        }


def main() -> None:
    global SOURCE_SECONDS, START, END
    logging.basicConfig(level=logging.WARNING)
    if "--tiny" in sys.argv[1:]:  # CI size: a 40-s source
        SOURCE_SECONDS, START, END = 40.0, 20.0, 30.0
    print(
        f"source {SOURCE_SECONDS:.0f} s at 128 kbit/s; segment [{START:.0f}, {END:.0f}) s "
        f"+ {MARGIN:.0f} s margin each side = {END - START + 2 * MARGIN:.0f} s "
        f"(ideal ratio {SOURCE_SECONDS / (END - START + 2 * MARGIN):.0f}x)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for ext in ("webm", "m4a"):
            src = make_media(
                root / "media" / f"default.{ext}", SOURCE_SECONDS, kind="noise", bitrate="128k"
            )
            size = src.stat().st_size
            print(f"\n{ext}: {size:,} bytes")
            for rate in (RATE, None):
                m = measure(root, ext, rate)
                label = f"paced {rate / 1e6:.0f} MB/s" if rate else "loopback (upper bound)"
                reqs = ", ".join(f"{r}: {b:,}" for r, b in m["sec_requests"])
                print(f"  [{label}]")
                print(
                    f"    section: {m['sec_bytes']:>10,} bytes, {len(m['sec_requests'])} requests "
                    f"({reqs}); {m['t_sec']:.2f} s; file {m['sec_file']:,} bytes"
                )
                print(
                    f"    full:    {m['full_bytes']:>10,} bytes, {m['full_requests']} requests; "
                    f"{m['t_full']:.2f} s"
                )
                print(f"    ratio full/section: {m['full_bytes'] / max(m['sec_bytes'], 1):.1f}x")


if __name__ == "__main__":
    main()
