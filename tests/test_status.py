"""`audiosetflow status` / `failures` / `--version`: real shard records written with
ShardTable, the real console entry point (in process and as a subprocess)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
from ttyread import run_on_tty

import audiosetflow
from audiosetflow.cli import main
from audiosetflow.reporting.aggregate import availability
from audiosetflow.reporting.status import FAILURE_COLUMNS, STATUS_COLUMNS, failures, status
from audiosetflow.shard import STAGES, Layout, ShardTable, Status

SRC = str(Path(audiosetflow.__file__).resolve().parents[1])


def _table(split: str, shard: int, ytids: list[str]) -> ShardTable:
    return ShardTable.from_manifest(
        pd.DataFrame(
            {"ytid": ytids, "split": split, "shard": shard, "start": 30.0, "end": 40.0,
             "labels": "/m/04rlf"}
        )
    )  # fmt: skip


def _ok(t: ShardTable, ytid: str, upto: str = "features") -> None:
    for stage in STAGES[: STAGES.index(upto) + 1]:
        t.set(stage, ytid, Status.OK)


@pytest.fixture
def results(tmp_path) -> Path:
    """Three shard records: train/0000 with one failure of each class, train/0001 with a
    decode failure and YTIDs not yet transcoded or downloaded, eval/0000 all done."""
    layout = Layout(tmp_path / "results")
    t = _table("train", 0, [f"trainA{i:05d}" for i in range(6)])
    y = t.ytids
    for k in y[:3]:
        _ok(t, k)
    t.set("download", y[3], Status.PERMANENT, "HTTP Error 404: Not Found", attempts=1, runs=1)
    t.set("download", y[4], Status.AUTH, "Sign in to confirm you're not a bot", attempts=1,
          runs=2)  # fmt: skip
    t.set("download", y[5], Status.TRANSIENT, "HTTP Error 503: Service Unavailable",
          attempts=3, runs=1)  # fmt: skip
    t.save(layout.shard("train", 0))
    t = _table("train", 1, [f"-trainB{i:04d}" for i in range(4)])
    y = t.ytids
    _ok(t, y[0], "download")
    t.set("transcode", y[0], Status.PERMANENT, "cannot decode audio: Invalid data found")
    _ok(t, y[1], "download")  # transcode pending
    t.set("download", y[2], Status.PERMANENT, "Video unavailable. This video is private",
          attempts=1, runs=1)  # fmt: skip
    # y[3]: download pending
    t.save(layout.shard("train", 1))
    t = _table("eval", 0, [f"evalAA{i:05d}" for i in range(3)])
    for k in t.ytids:
        _ok(t, k)
    t.save(layout.shard("eval", 0))
    return layout.root


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_status_counts_done_failed_by_class_and_left(results):
    df = status(results)
    assert list(df.columns) == STATUS_COLUMNS
    got = df.set_index(["split", "stage"])
    assert got.loc[("train", "download")].to_dict() == {
        "entered": 10, "done": 5, "failed": 4, "permanent": 2, "auth": 1, "transient": 1,
        "left": 1,
        "reasons": "auth: Sign in to confirm you're not a bot x1; permanent: HTTP Error 404: "
        "Not Found x1; permanent: Video unavailable. This video is private x1; transient: "
        "HTTP Error 503: Service Unavailable x1",
    }  # fmt: skip
    assert got.loc[("train", "transcode"), ["entered", "done", "permanent", "left"]].tolist() == [
        5, 3, 1, 1
    ]  # fmt: skip
    assert got.loc[("train", "features"), ["entered", "done", "failed", "left"]].tolist() == [
        3, 3, 0, 0
    ]  # fmt: skip
    assert (got.loc["eval", "done"] == 3).all() and (got.loc["eval", "failed"] == 0).all()
    # every row adds up, and the counting is the one availability.tsv has
    assert (df["entered"] == df["done"] + df["failed"] + df["left"]).all()
    tables = [ShardTable.read(p) for p in sorted(results.glob("shards/*/*/table.tsv"))]
    av = availability(tables)
    av = av[av["stage"] != "selected"].reset_index(drop=True)
    assert av[["split", "stage", "entered", "done"]].equals(df[["split", "stage", "entered",
                                                               "done"]])  # fmt: skip


def test_status_command_table_tsv_and_json(results, capsys):
    assert main(["status", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert (
        lines[0] == f"{results}: 3 shard records (eval 1 shard, 3 clips; train 2 shards, 10 clips)"
    )
    header = lines[2].split()
    assert header == ["split", "stage", "entered", "done", "failed", "permanent", "auth",
                      "transient", "left"]  # fmt: skip
    row = next(ln for ln in lines if ln.startswith("train  download"))
    assert row.split() == ["train", "download", "10", "5", "4", "2", "1", "1", "1"]
    # aligned: every number ends under the end of its header
    assert row.index(" 10") + 3 == lines[2].index("entered") + len("entered")
    assert "failures by reason:" in out and "HTTP Error 404: Not Found" in out

    assert main(["status", "--results", str(results), "--format", "tsv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out), sep="\t", keep_default_na=False)
    assert list(df.columns) == STATUS_COLUMNS and len(df) == 2 * len(STAGES)

    assert main(["status", "--results", str(results), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[4] == {**rows[4], "split": "train", "stage": "download", "left": 1}


def test_failures_one_row_per_failed_ytid_with_filters(results, capsys):
    df = failures(results)
    assert list(df.columns) == FAILURE_COLUMNS
    assert df[["ytid", "stage", "status"]].values.tolist() == [
        ["trainA00003", "download", "permanent"],
        ["trainA00004", "download", "auth"],
        ["trainA00005", "download", "transient"],
        ["-trainB0000", "transcode", "permanent"],
        ["-trainB0002", "download", "permanent"],
    ]
    assert main(["failures", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    tsv = pd.read_csv(io.StringIO(out), sep="\t", dtype=str)
    assert list(tsv.columns) == FAILURE_COLUMNS and len(tsv) == 5
    auth = ["trainA00004", "train", "0", "download", "auth", "Sign in to confirm you're not a bot"]
    assert tsv.loc[1].tolist() == [*auth, "1", "2"]

    def ytids(*args):
        assert main(["failures", "--results", str(results), *args]) == 0
        text = capsys.readouterr().out
        return [ln.split("\t")[0] for ln in text.splitlines()[1:]]

    assert ytids("--class", "permanent") == ["trainA00003", "-trainB0000", "-trainB0002"]
    assert ytids("--reason", "PRIVATE") == ["-trainB0002"]  # case-insensitive substring
    assert ytids("--stage", "transcode") == ["-trainB0000"]
    assert ytids("--class", "auth", "--stage", "transcode") == []
    assert ytids("--reason", "http error") == ["trainA00003", "trainA00005"]
    assert main(["failures", "--results", str(results), "--class", "transient",
                 "--format", "json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out) == [
        {"ytid": "trainA00005", "split": "train", "shard": 0, "stage": "download",
         "status": "transient", "reason": "HTTP Error 503: Service Unavailable",
         "attempts": 3, "runs": 1}
    ]  # fmt: skip


@pytest.mark.parametrize("command", ["status", "failures"])
def test_no_shard_records_is_one_line_saying_run_snakemake(tmp_path, capsys, command):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        assert main([command, "--results", str(folder)]) == 2
        out = capsys.readouterr()
        err = _lines(out.err)
        assert len(err) == 1 and out.out == ""
        assert err[0].startswith(f"audiosetflow: error: {folder}:")
        assert "run snakemake first" in err[0]


def test_unreadable_record_is_one_line(results, capsys):
    rec = Layout(results).shard("train", 7).record
    rec.parent.mkdir(parents=True)
    rec.write_text("this\tis\nnot a shard table\n")
    assert main(["status", "--results", str(results)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and str(rec) in err[0] and "not a shard table" in err[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0
    assert capsys.readouterr().out.strip() == f"audiosetflow {version('audiosetflow')}"
    assert audiosetflow.__version__ == version("audiosetflow")


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "audiosetflow", *args], capture_output=True,
                          text=True, env=env, check=False, **kw)  # fmt: skip


def test_status_and_failures_as_a_command(results, tmp_path):
    """The real command line in its own process, output through a pipe."""
    r = _run("status", "--format", "tsv", cwd=results.parent)  # default: ./results
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(io.StringIO(r.stdout), sep="\t", keep_default_na=False)
    assert df.set_index(["split", "stage"]).loc[("train", "download"), "failed"] == 4
    r = _run("failures", "--results", str(results), "--class", "auth")
    assert r.returncode == 0 and r.stdout.splitlines()[1].startswith("trainA00004\ttrain\t0\t")
    r = _run("status", "--results", str(tmp_path / "nothing"))
    assert r.returncode == 2 and len(_lines(r.stderr)) == 1 and "snakemake" in r.stderr
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.split() == ["audiosetflow", version("audiosetflow")]


def test_import_of_the_command_line_does_not_import_snakemake():
    code = (
        "import sys, audiosetflow.cli, audiosetflow.reporting.status, audiosetflow.modelinfo\n"
        "heavy = sorted(m for m in ('snakemake', 'yt_dlp', 'torch', 'librosa', 'matplotlib')"
        " if m in sys.modules)\n"
        "print(heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=True)  # fmt: skip
    assert r.stdout.strip() == "[]"


def test_reading_many_records_shows_a_bar_on_a_terminal_only(results):
    env = {**os.environ, "PYTHONPATH": SRC, "TERM": "xterm"}
    cmd = [sys.executable, "-m", "audiosetflow", "status", "--results", str(results)]
    code, out, tty = run_on_tty(cmd, env=env, timeout=60)
    assert code == 0
    assert "reading shard records 3/3 [" in tty.decode()
    assert tty.endswith(b"\r\x1b[K")  # erased: the terminal shows nothing of it afterwards
    assert out == _run("status", "--results", str(results)).stdout
    assert _run("status", "--results", str(results)).stderr == ""  # piped: no bar


@pytest.mark.parametrize(
    "argv",
    [["failures", "--class", "bogus"], ["status", "--format", "xml"], ["info"], [], ["nope"]],
)
def test_usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and "error:" in err[0] and err[0].endswith("--help)")
