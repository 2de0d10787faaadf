"""Every script of benchmarks/ runs at its --tiny size and prints its figure, so that a
benchmark broken by a change of the code it measures fails the tests (bench_features.py had
crashed unnoticed since the shard record gained its ``reason`` column)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"

#: script -> (extra arguments, the figure its output must hold)
CASES = {
    "bench_baselines_real.py": ([], r"now: dense +\d\.\d{3} +\d\.\d{3}"),
    "bench_dag.py": (
        [],
        r"snakemake -n first [\d.]+ s, \d+ MB .*again [\d.]+ s, \d+ MB .*[\d,]+ jobs\n"
        r"a job reading the stored plan: \d+ ms",
    ),
    "bench_export.py": ([], r"webdataset +[\d.]+ kB +\d+ +[\d.]+ MB"),
    "bench_errors_page.py": ([], r"Opus previews: page [\d.]+ MB, report data: URI [\d.]+ MB"),
    "bench_ffmpeg_builds.py": ([], r"\(a\) same media, decoded by each build:"),
    "bench_mirror_bounded.py": ([], r"download job: peak RSS \d+ MB"),
    "demo_figures.py": ([], r"\| Music \| cnn \| \d+ \(\d+\) \|"),
    "bench_download_bytes.py": ([], r"ratio full/section: [\d.]+x"),
    "bench_download_cpu.py": ([], r"m4a sections: CPU [\d.]+ -> [\d.]+ s per YTID"),
    "bench_frontends.py": ([], r"kaldi_fbank +compute +[\d.]+ +[\d.]+"),
    "bench_features.py": ([], r"\(c3\) the workflow's .* stages: +[\d.]+ clips/s"),
    "bench_index.py": ([], r"lookup per job: parquet [\d.]+ ms -> sqlite [\d.]+ ms"),
    "bench_scale.py": ([], r"mirror to features: [\d.]+ s wall, 16 clips with features"),
    "bench_mirror.py": (["--sources", "--keep-clips", "false"], r"best: [\d.]+ clips/s"),
    "bench_models.py": ([], r"demo +mAP +\d+ +[\d.]+ +[\d.]+"),
    "bench_multilabel.py": ([], r"width +4: training +\d+ clips/s"),
    "bench_predict.py": ([], r"0:01:30 +\d+ +\d+ MiB"),
    "bench_train_memory.py": ([], r"peak RSS [\d,]+ / [\d,]+ clips: [\d.]+x"),
    "bench_training.py": ([], r"CNN training throughput: \d+ clips/s"),
}  # fmt: skip


def test_every_benchmark_has_a_case():
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted(CASES)


#: Benchmarks whose tiny size still runs the whole workflow (end-to-end: marked slow).
END_TO_END = {"demo_figures.py", "bench_scale.py"}


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=pytest.mark.slow) if s in END_TO_END else s for s in sorted(CASES)],
)
def test_benchmark_runs_at_its_tiny_size(script, request):
    args, figure = CASES[script]
    if script == "bench_baselines_real.py":
        import realaudio

        try:
            realaudio.real_corpus()  # built (or found) here; the script reads the cache
        except realaudio.RealAudioUnavailable as exc:
            pytest.skip(f"real recordings unavailable: {exc}")
    if script == "bench_ffmpeg_builds.py":
        from ffmpeg_builds import ffmpeg_builds

        missing = [f"{n}: {why}" for n, (exe, why) in ffmpeg_builds().items() if exe is None]
        if missing:
            pytest.skip("compares the two ffmpeg builds; " + "; ".join(missing))
    if script == "bench_dag.py":
        args = ["--metadata", str(request.getfixturevalue("real_metadata"))]
    tiny = ["--tiny"]
    if script == "demo_figures.py":  # the figures of the tests' tiny demo run (its TINY
        # overlay, made by its run_demo: what --tiny runs), not a second run of it
        tiny, args = [], ["--results", str(request.getfixturevalue("tiny_demo") / "results")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    if script == "bench_scale.py":  # real YTIDs and labels
        env["AUDIOSETFLOW_REAL_METADATA"] = str(request.getfixturevalue("real_metadata"))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(BENCH / script), *tiny, *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1200, check=False)  # fmt: skip
    took = time.perf_counter() - t0
    assert r.returncode == 0, f"{script} failed after {took:.0f} s:\n{r.stdout}\n{r.stderr}"
    assert re.search(figure, r.stdout), f"{script} printed no figure:\n{r.stdout}\n{r.stderr}"
    print(f"{script} --tiny: {took:.1f} s")
