"""Peak memory of ``audiosetflow predict`` with the multi-label model, by the file's length.

Builds a multi-label checkpoint (the demo's shape: 22050 Hz, 10-s windows, 128 mel bands,
8 labels, CNN width 16; random weights, seeded: memory and speed do not depend on what the
network learnt) and one 10-minute piece of generated audio (pink noise plus a sine sweep,
mono 16-bit WAV at 22050 Hz, 26 MB). Longer files are ffmpeg concat lists
(``ffconcat version 1.0``) repeating that piece: ffmpeg reads them as one continuous file of
2 h or 24 h (3.8 GB of PCM) without writing it. Each length runs
``python -m audiosetflow predict --model CK FILE`` (default ``--hop 5``) in a fresh process
and prints its peak RSS (``ru_maxrss`` from ``os.wait4``: the largest of the process and its
ffmpeg child, i.e. the Python process), its wall time and the number of windows scored.

``--src DIR`` runs another checkout's code instead (checkpoint and predict), e.g. the
pre-streaming one (``git archive be90c1c src | tar -x -C /tmp/base``), which decoded the whole
file and kept every window's features: 488 MiB for 10 min, 993 MiB for 1 h on this machine.

Usage: python benchmarks/bench_predict.py [--lengths 600 7200 86400] [--hop 5] [--threads 2]
       [--src DIR]
       python benchmarks/bench_predict.py --tiny     (CI: 20 s and 90 s, a 2-label model)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _checkpoint(path: Path, *, sample_rate: int, seconds: float, labels: int, width: int) -> None:
    import torch

    from audiosetflow.audio.features import FeatureParams
    from audiosetflow.learning.checkpoint import save_checkpoint
    from audiosetflow.learning.models import MultiLabelCNN

    params = FeatureParams.from_config({}, sample_rate=sample_rate)
    torch.manual_seed(0)
    model = MultiLabelCNN(labels, params.n_mels, width=width)
    model.eval()
    save_checkpoint(
        path,
        model=model,
        labels=[{"mid": f"/m/b{j}", "name": f"label {j}", "slug": f"b{j}"} for j in range(labels)],
        thresholds=[0.5] * labels,
        feature_params=asdict(params),
        sample_rate=sample_rate,
        clip_seconds=seconds,
    )


def _piece(path: Path, *, seconds: float, sample_rate: int) -> None:
    from audiosetflow.tools import ffmpeg_exe

    graph = (
        f"anoisesrc=d={seconds}:c=pink:r={sample_rate}:a=0.05:seed=1[n];"
        f"aevalsrc='0.2*sin(2*PI*(200+20*mod(t,30))*t)':d={seconds}:s={sample_rate}[s];"
        "[n][s]amix=inputs=2:normalize=0"
    )
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-filter_complex", graph,
           "-ac", "1", "-c:a", "pcm_s16le", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True)


def _concat(path: Path, piece: Path, repeats: int) -> None:
    lines = ["ffconcat version 1.0"] + [f"file '{piece.name}'"] * repeats
    path.write_text("\n".join(lines) + "\n")


def _run(cmd: list[str], env: dict) -> tuple[int, float, float, str, str]:
    """Exit status, peak RSS (MiB), wall seconds, stdout, stderr of one child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, ru.ru_maxrss / 1024, wall, out.read().decode(),
                err.read().decode())  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=float, nargs="+", default=[600, 7200, 86400],
                    help="seconds of audio per run")  # fmt: skip
    ap.add_argument("--hop", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--piece", type=float, default=600.0, help="seconds of the generated piece")
    ap.add_argument("--tiny", action="store_true", help="CI size: 20 s and 90 s, small model")
    ap.add_argument("--dir", default=None, help="where the temporary files go")
    ap.add_argument("--src", default=SRC, help="the audiosetflow source run (another checkout's "
                    "src/ to compare; default: this one's)")  # fmt: skip
    args = ap.parse_args()
    sys.path.insert(0, args.src)  # the checkpoint is written by the code that reads it
    sr, window, labels, width = 22050, 10.0, 8, 16
    if args.tiny:
        args.lengths, args.piece, sr, window, labels, width = [20, 90], 10.0, 8000, 2.0, 2, 4
    tmp = Path(tempfile.mkdtemp(prefix="bench-predict-", dir=args.dir))
    try:
        ck = tmp / "multilabel.pt"
        _checkpoint(ck, sample_rate=sr, seconds=window, labels=labels, width=width)
        piece = tmp / "piece.wav"
        _piece(piece, seconds=args.piece, sample_rate=sr)
        path = os.pathsep.join([args.src, os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        print(f"model: {labels} labels, width {width}, {window:g}-s windows at {sr} Hz; "
              f"--hop {args.hop:g}, --threads {args.threads}; audio: a {args.piece:g}-s "
              f"generated WAV piece, repeated by an ffconcat list; load average "
              f"{os.getloadavg()[0]:.2f}; source {args.src}")  # fmt: skip
        print(f"{'audio':>10} {'windows':>8} {'peak RSS':>10} {'wall':>9}  (audio h:mm:ss)")
        for length in args.lengths:
            repeats = max(1, round(length / args.piece))
            media = tmp / f"audio-{length:g}s.ffconcat"
            _concat(media, piece, repeats)
            cmd = [sys.executable, "-m", "audiosetflow", "predict", "--model", str(ck),
                   "--models", str(tmp), "--hop", str(args.hop), "--threads",
                   str(args.threads), "--format", "json", str(media)]  # fmt: skip
            rc, rss, wall, out, err = _run(cmd, env)
            if rc != 0:
                print(f"predict failed (exit status {rc}): {err.strip()[-2000:]}")
                return 1
            res = json.loads(out)["files"][0]
            seconds, n_windows = res["duration"], res["n_windows"]
            total = int(repeats * args.piece)
            hms = f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"
            print(f"{hms:>10} {n_windows:>8,} {rss:6.0f} MiB {wall:8.1f}s")
            if abs(seconds - repeats * args.piece) > 1:
                print(f"decoded {seconds:g} s, expected {repeats * args.piece:g} s")
                return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
