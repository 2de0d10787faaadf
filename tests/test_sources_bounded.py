"""Mirror reads on bad input: bounded memory, no special files, no link loops (issue "Safe to
share, safe on bad input").

Real files only: a tar with a 2-GiB (sparse) member whose WAV header claims 67,108 s, a member
of 2 GiB of zeros, a FIFO and a link to /dev/zero in a folder source, symbolic link loops. The
download runs in a subprocess under an address-space limit equal to the download rule's
declared ``mem_mb``, and its peak RSS is measured.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import soundfile as sf
from mirrors import flac_bytes, make_clips, signal

from audiosetflow.acquisition.sources import (
    CUT_TOLERANCE,
    MAX_WHOLE_SECONDS,
    ClipError,
    MirrorReader,
    build_index,
    check_audio,
    lookup,
    parse_sources,
)

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


def _declared_mem_mb() -> int:
    text = (ROOT / "workflow" / "rules" / "download.smk").read_text()
    rule = text[text.index("rule download:") :]
    return int(re.search(r"mem_mb=(?:node_mem\()?(\d+)", rule).group(1))


def _wav_header(data_bytes: int, *, sample_rate: int = 16_000) -> bytes:
    """A 16-bit mono WAV header that announces ``data_bytes`` of samples."""
    return (
        b"RIFF" + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


def _sparse_tar(path: Path, members: list[tuple[str, bytes, int]]) -> None:
    """A plain tar whose members are ``(name, head, size)``: ``head`` then zeros up to ``size``
    bytes, the zeros left as holes (the file takes little disk whatever ``size`` is)."""
    with open(path, "wb") as f:
        for name, head, size in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, 1_600_000_000, 0o644
            f.write(info.tobuf(format=tarfile.GNU_FORMAT))
            start = f.tell()
            f.write(head)
            f.seek(start + size + (-size % 512))
        f.write(bytes(1024))


def _sparse_file(path: Path, head: bytes, size: int) -> None:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def _setup(tmp_path: Path) -> tuple[list, Path, list[tuple[str, float, float]]]:
    good = make_clips(["-0RWZT-miFs", "--4gqARaEJE"])
    tar = tmp_path / "m" / "bal_train00.tar"
    tar.parent.mkdir(parents=True)
    huge = 2 * GIB
    data = flac_bytes(*good["-0RWZT-miFs"])
    _sparse_tar(tar, [
        ("audio/bal_train/-0RWZT-miFs.flac", data, len(data)),
        ("audio/bal_train/hugeWAV0001.flac", _wav_header(huge - 44), huge),
        ("audio/bal_train/zeros000001.flac", b"", huge),
    ])  # fmt: skip
    panns = tmp_path / "panns"
    panns.mkdir()
    buf = io.BytesIO()
    sf.write(buf, signal("hugeWAV0001"), 48_000, format="WAV", subtype="PCM_16")
    (panns / "YhugeWAV0001.wav").write_bytes(buf.getvalue())  # the next source's good copy
    buf = io.BytesIO()
    sf.write(buf, good["--4gqARaEJE"][0], 48_000, format="WAV", subtype="PCM_16")
    (panns / "Y--4gqARaEJE.wav").write_bytes(buf.getvalue())
    os.mkfifo(panns / "Yfifo0000001.wav")
    os.symlink("/dev/zero", panns / "Ydevzero0001.wav")
    (panns / "Yafolder0001.wav").mkdir()
    os.symlink("Yselfloop001.wav", panns / "Yselfloop001.wav")  # ELOOP
    os.symlink(panns / "absent.wav", panns / "Ydangling001.wav")
    whole = tmp_path / "videos"
    whole.mkdir()
    _sparse_file(whole / "toolong0001.wav", _wav_header(13 * 3600 * 32_000), 13 * 3600 * 32_000)
    sources = parse_sources([
        {"kind": "tar", "paths": [str(tar)]},
        {"kind": "folder", "path": str(panns), "pattern": "Y{ytid}.wav", "cut": True},
        {"kind": "folder", "path": str(whole), "pattern": "{ytid}.wav", "cut": False},
    ])  # fmt: skip
    ytids = ["-0RWZT-miFs", "--4gqARaEJE", "hugeWAV0001", "zeros000001", "fifo0000001",
             "devzero0001", "afolder0001", "toolong0001"]  # fmt: skip
    return sources, tar, [(y, 0.0, 10.0) for y in ytids]


def test_special_files_and_link_loops_are_skipped_at_index_time_one_line_each(tmp_path, caplog):
    sources, _, _ = _setup(tmp_path)
    deep = tmp_path / "deep"
    (deep / "clips").mkdir(parents=True)
    (deep / "clips" / "Ydeep0000001.wav").write_bytes(b"RIFF")
    os.symlink(".", deep / "clips" / "a")  # a -> .
    os.symlink("..", deep / "clips" / "up")  # back to the top folder
    sources += parse_sources(
        [{"kind": "folder", "path": str(deep), "pattern": "clips/Y{ytid}.wav"}]
    )
    with caplog.at_level(logging.WARNING):
        index = build_index(sources, out=tmp_path / "index.parquet")
    ytids = set(index["ytid"])
    # the index is complete: the loops and the dangling link stop nothing
    assert {"-0RWZT-miFs", "hugeWAV0001", "fifo0000001", "devzero0001", "deep0000001"} <= ytids
    assert not {"selfloop001", "dangling001"} & ytids
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert all("\n" not in w for w in warnings)
    assert any("Yselfloop001.wav: a symbolic link loop" in w for w in warnings), warnings
    assert any("Ydangling001.wav: a dangling link" in w for w in warnings), warnings
    assert any(w.startswith(f"{deep / 'clips' / 'a'}: a symbolic link loop") for w in warnings)
    assert any(w.startswith(f"{deep / 'clips' / 'up'}: a symbolic link loop") for w in warnings)


def test_reader_refuses_what_is_not_a_regular_file_without_hanging(tmp_path):
    sources, _, _ = _setup(tmp_path)
    build_index(sources, out=tmp_path / "index.parquet")
    got = lookup(tmp_path / "index.parquet", ["fifo0000001", "devzero0001", "afolder0001"])
    reader = MirrorReader()
    reasons = {}
    for y, (e,) in got.items():
        with pytest.raises(ClipError) as exc:
            reader.open(e)
        reasons[y] = str(exc.value)
    assert reasons["fifo0000001"].endswith("is a FIFO (named pipe), not a regular file")
    assert reasons["devzero0001"].endswith("is a character device, not a regular file")
    assert reasons["afolder0001"].endswith("is a folder, not a regular file")


def test_a_huge_member_is_judged_from_its_header_without_reading_it(tmp_path):
    sources, _, _ = _setup(tmp_path)
    build_index(sources, out=tmp_path / "index.parquet")
    (e, _) = lookup(tmp_path / "index.parquet", ["hugeWAV0001"])["hugeWAV0001"]
    clip = MirrorReader().open(e)
    assert clip.size == 2 * GIB and clip.data is None
    seconds = check_audio(clip, name="huge", max_seconds=10.0 + CUT_TOLERANCE)
    assert seconds == pytest.approx((2 * GIB - 44) / 32_000)  # 67,108 s, from the header


_JOB = textwrap.dedent(
    """
    import json, logging, resource, sys
    limit = int(sys.argv[1]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import pandas as pd
    from audiosetflow.acquisition.download import DownloadConfig, download_shard
    from audiosetflow.acquisition.sources import parse_sources
    from audiosetflow.shard import Layout, ShardTable
    sources = parse_sources(json.loads(sys.argv[2]))
    rows = json.loads(sys.argv[3])
    res = sys.argv[4]
    manifest = pd.DataFrame({"ytid": [r[0] for r in rows], "split": "train", "shard": 0,
                             "start": [r[1] for r in rows], "end": [r[2] for r in rows],
                             "labels": "/m/04rlf"})
    shard = Layout(res).shard("train", 0)
    logging.basicConfig(level=logging.INFO)
    t = download_shard(ShardTable.from_manifest(manifest), shard=shard,
                       cfg=DownloadConfig.from_config({}), sources=sources,
                       index=sys.argv[5], out=shard.table("download"))
    out = {y: [t.df.at[y, "download_status"], t.df.at[y, "download_reason"],
               t.df.at[y, "source"]] for y in t.ytids}
    # VmHWM: this process's own peak (ru_maxrss would include the forking parent's RSS)
    status = open("/proc/self/status").read()
    peak = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")))
    peak //= 1024
    print("RESULT " + json.dumps({"rows": out, "peak_mb": peak}))
    """
)


def test_download_under_the_rules_memory_limit_refuses_bad_copies_and_finishes(tmp_path):
    """2-GiB members, a FIFO, /dev/zero, a folder and a 13-h whole video: each is its clip's
    failure with one reason (the next source tried), the shard finishes with the good clips
    ok, and the job's peak RSS stays far below the rule's mem_mb (the address space is
    limited to it)."""
    sources, tar, rows = _setup(tmp_path)
    index = tmp_path / "index.parquet"
    build_index(sources, out=index)
    cfg = [
        {"kind": "tar", "paths": [str(tar)]},
        {"kind": "folder", "path": str(tmp_path / "panns"), "pattern": "Y{ytid}.wav", "cut": True},
        {"kind": "folder", "path": str(tmp_path / "videos"), "pattern": "{ytid}.wav",
         "cut": False},
    ]  # fmt: skip
    mem_mb = _declared_mem_mb()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", _JOB, str(mem_mb), json.dumps(cfg), json.dumps(rows),
         str(tmp_path / "results"), str(index)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    got = result["rows"]
    for y in ("-0RWZT-miFs", "--4gqARaEJE"):
        assert got[y][0] == "ok", got[y]
    status, reason, source = got["hugeWAV0001"]
    assert (status, source) == ("ok", f"folder:{tmp_path / 'panns'}")
    assert "too long: 67108.86 s or more for a cut copy of a 10.00 s segment" in reason
    bad = {y: got[y] for y in ("zeros000001", "fifo0000001", "devzero0001", "afolder0001",
                               "toolong0001")}  # fmt: skip
    for y, (status, reason, _) in bad.items():
        assert status == "permanent", (y, reason)
        assert reason.startswith("local copy unusable: ") and "\n" not in reason
    assert "not audio" in bad["zeros000001"][1]
    assert "is a FIFO (named pipe), not a regular file" in bad["fifo0000001"][1]
    assert "is a character device, not a regular file" in bad["devzero0001"][1]
    assert "is a folder, not a regular file" in bad["afolder0001"][1]
    assert f"a whole video lasts at most {MAX_WHOLE_SECONDS / 3600:.0f} h" in bad["toolong0001"][1]
    # the 2 GiB members were never read into memory (the old whole read peaked at 2.2 GB)
    assert result["peak_mb"] < min(400, mem_mb), result["peak_mb"]


def test_a_parquet_row_group_too_big_to_read_at_once_is_each_clips_reason(tmp_path, monkeypatch):
    """A download job reads a Parquet source one row group at a time: a row group with more
    audio than :data:`MAX_ROW_GROUP_BYTES` is refused (each of its clips says why) and the
    clips of the other row groups are taken."""
    from mirrors import make_parquet

    from audiosetflow.acquisition import sources as src

    clips = make_clips(["-0RWZT-miFs", "--4gqARaEJE", "_0-2Kaf9LtM"], seconds=2.0)
    pq_file = tmp_path / "part-0.parquet"
    make_parquet(pq_file, clips, {y: ["/m/04rlf"] for y in clips}, row_group_size=2)
    sources = parse_sources([{"kind": "parquet", "paths": [str(pq_file)]}])
    build_index(sources, out=tmp_path / "index.parquet")
    got = lookup(tmp_path / "index.parquet", list(clips))
    reader = MirrorReader()
    assert check_audio(reader.open(got["_0-2Kaf9LtM"][0]), name="x") == pytest.approx(2.0)
    # the first row group holds two clips of 2 s (24-bit FLAC, ~0.5 MB); the last one, one
    monkeypatch.setattr(src, "MAX_ROW_GROUP_BYTES", 400_000)
    reader = MirrorReader()
    with pytest.raises(ClipError) as exc:
        reader.open(got["-0RWZT-miFs"][0])
    assert str(exc.value).startswith(f"row group 0 of {pq_file} holds ")
    assert str(exc.value).endswith("rewrite the file with smaller row groups")
    assert check_audio(reader.open(got["_0-2Kaf9LtM"][0]), name="x") == pytest.approx(2.0)


def test_a_memory_error_is_the_machines_fault():
    from audiosetflow.errors import machine_error

    m = machine_error(MemoryError(), "tar:bal_train00.tar")
    assert m is not None and m.code == "ENOMEM"
    assert "a fault of the machine, not of the clip" in m.line("download")
