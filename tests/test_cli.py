"""`audiosetflow predict` (real ffmpeg decoding, real features, a small trained checkpoint; its
progress bar under a real pseudo-terminal) and `audiosetflow info`."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from synth_features import SR, synth_clip
from trainutil import fit_prebuilt as fit_torch
from ttyread import run_on_tty

import audiosetflow
from audiosetflow.audio.features import FeatureParams, compute
from audiosetflow.cli import main
from audiosetflow.learning.checkpoint import load_checkpoint, save_checkpoint
from audiosetflow.learning.inputs import channel_stats, stack_channels
from audiosetflow.learning.models import AudioCNN
from audiosetflow.progress import ProgressBar

CLIP = 2.0


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """Two checkpoints (tone-vs-noise CNN, saved as labels Music and Other)."""
    params = FeatureParams.from_config({}, sample_rate=SR)
    X, y = [], []
    for i in range(24):
        f = compute(synth_clip(i % 2 == 0, 1000 + i, seconds=CLIP), params=params)
        X.append(stack_channels(f["log_mel"], [f["zcr"]]))
        y.append(float(i % 2 == 0))
    X, y = np.stack(X), np.array(y, np.float32)
    m = AudioCNN(X.shape[2], X.shape[1], width=8)
    m.set_normalization(*channel_stats(X[:16]))
    fit_torch(
        m,
        X[:16],
        y[:16],
        X[16:],
        y[16:],
        epochs=6,
        patience=6,
        batch_size=8,
        learning_rate=3e-3,
        seed=0,
    )
    d = tmp_path_factory.mktemp("models")
    for slug, name, mid in (("music", "Music", "/m/04rlf"), ("other", "Other", "/m/xx")):
        save_checkpoint(
            d / f"{slug}.pt",
            model=m,
            labels=[{"slug": slug, "name": name, "mid": mid}],
            feature_params=asdict(params),
            sample_rate=SR,
            clip_seconds=CLIP,
            extra_channels=["zcr"],
            thresholds=[0.5],
        )
    return d


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    tone, noise = d / "tone.wav", d / "noise.flac"
    sf.write(tone, synth_clip(True, 77, seconds=1.5), SR)  # shorter than the clip: padded
    sf.write(noise, synth_clip(False, 78, seconds=3.0), 44100 // 2)
    bad = d / "notes.mp3"
    bad.write_text("this is not audio\n")
    return {"tone": tone, "noise": noise, "bad": bad}


def _table(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].split("\t") == ["file", "label", "mid", "probability", "predicted"]
    return [ln.split("\t") for ln in lines[1:]]


def test_predict_prints_one_line_per_file_and_label(models_dir, media, capsys):
    rc = main(["predict", "--models", str(models_dir), str(media["tone"]), str(media["noise"])])
    out = capsys.readouterr()
    assert rc == 0, out.err
    rows = _table(out.out)
    assert [(Path(r[0]).name, r[1]) for r in rows] == [
        ("tone.wav", "Music"),
        ("tone.wav", "Other"),
        ("noise.flac", "Music"),
        ("noise.flac", "Other"),
    ]
    p = {Path(r[0]).name: float(r[3]) for r in rows if r[1] == "Music"}
    assert all(0.0 <= v <= 1.0 for v in p.values())
    assert p["tone.wav"] > 0.5 > p["noise.flac"]
    assert rows[0][4] == "1" and rows[2][4] == "0"


def test_predict_decides_with_the_checkpoints_stored_threshold(models_dir, media, tmp_path, capsys):
    """The same network saved with a threshold just above and just below a file's probability:
    the yes/no follows the stored threshold."""
    ck = load_checkpoint(models_dir / "music.pt")
    assert main(["predict", "--models", str(models_dir / "music.pt"), str(media["tone"])]) == 0
    p = float(_table(capsys.readouterr().out)[0][3])
    for slug, thr, want in (("above", min(p + 0.01, 1.0), "0"), ("below", p - 0.01, "1")):
        path = tmp_path / f"{slug}.pt"
        save_checkpoint(
            path,
            model=ck.model,
            labels=[{"slug": slug, "name": slug, "mid": "/m/x"}],
            feature_params=ck.feature_params,
            sample_rate=ck.sample_rate,
            clip_seconds=ck.clip_seconds,
            extra_channels=ck.extra_channels,
            thresholds=[thr],
        )
        assert load_checkpoint(path).threshold == pytest.approx(thr)
        assert main(["predict", "--models", str(path), str(media["tone"])]) == 0
        row = _table(capsys.readouterr().out)[0]
        assert float(row[3]) == pytest.approx(p, abs=1e-4) and row[4] == want, (slug, thr)


def test_undecodable_file_gives_one_clear_error_and_others_still_predicted(
    models_dir, media, capsys
):
    rc = main(["predict", "--models", str(models_dir), str(media["bad"]), str(media["tone"])])
    out = capsys.readouterr()
    assert rc == 1
    err = [ln for ln in out.err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(media["bad"]) in err[0] and err[0].startswith("audiosetflow:")
    rows = _table(out.out)
    assert len(rows) == 2 and all(Path(r[0]).name == "tone.wav" for r in rows)


def test_missing_file_and_missing_models(tmp_path, models_dir, media, capsys):
    """A path that does not exist is a usage error (README: exit status 2): one line, no TSV
    header, nothing predicted, even next to a good file."""
    missing = tmp_path / "nope.wav"
    for args in ([str(missing)], [str(media["tone"]), str(missing)]):
        assert main(["predict", "--models", str(models_dir), *args]) == 2
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err.splitlines() == [f"audiosetflow: error: {missing}: no such file or folder"]
    assert main(["predict", "--models", str(tmp_path), str(tmp_path / "x.wav")]) == 2
    assert "no model checkpoints" in capsys.readouterr().err


def _tree(root: Path, media: dict[str, Path]) -> Path:
    """A folder of media mixed with what predict must skip (hidden, non-media, sidecars)."""
    (root / "a").mkdir(parents=True)
    shutil.copy(media["tone"], root / "a" / "tone.wav")
    shutil.copy(media["noise"], root / "b.flac")
    shutil.copy(media["tone"], root / "c.WAV")  # suffixes in any case
    shutil.copy(media["tone"], root / ".hidden.wav")
    (root / ".dl-x.123").mkdir()  # a hidden folder (the download stage's temporary ones)
    shutil.copy(media["noise"], root / ".dl-x.123" / "media.flac")
    for name in ("notes.txt", "labels.csv", "b.offset", "model.pt", "cover.jpg"):
        (root / name).write_text("not media\n")
    return root


def test_predict_folder_every_media_file_recursively_sorted(tmp_path, models_dir, media, capsys):
    root = _tree(tmp_path / "in", media)
    rc = main(["predict", "--models", str(models_dir), str(root)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert out.err == ""
    rows = _table(out.out)
    names = [Path(r[0]).relative_to(root).as_posix() for r in rows if r[1] == "Music"]
    assert names == ["a/tone.wav", "b.flac", "c.WAV"]
    assert [r[1] for r in rows] == ["Music", "Other"] * 3
    p = {Path(r[0]).name: float(r[3]) for r in rows if r[1] == "Music"}
    assert p["tone.wav"] > 0.5 > p["b.flac"]
    # the same numbers as when the files are named one by one
    rc = main(["predict", "--models", str(models_dir), *(str(root / n) for n in names)])
    assert rc == 0 and _table(capsys.readouterr().out) == rows


def test_predict_folder_with_undecodable_file_and_folders_mixed_with_files(
    tmp_path, models_dir, media, capsys
):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    shutil.copy(media["bad"], root / "sub" / "notes.mp3")  # a media suffix, not media
    shutil.copy(media["tone"], root / "sub" / "tone.wav")
    rc = main(["predict", "--models", str(models_dir), str(media["noise"]), str(root)])
    out = capsys.readouterr()
    assert rc == 1
    err = [ln for ln in out.err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("audiosetflow: error: ")
    assert str(root / "sub" / "notes.mp3") in err[0] and "cannot decode audio" in err[0]
    rows = _table(out.out)
    assert [Path(r[0]).name for r in rows] == ["noise.flac"] * 2 + ["tone.wav"] * 2


def test_predict_folder_without_media_is_one_error(tmp_path, models_dir, media, capsys):
    empty, other = tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    other.mkdir()
    (other / "readme.txt").write_text("no audio here\n")
    shutil.copy(media["tone"], other / ".hidden.wav")
    for folder in (empty, other):
        rc = main(["predict", "--models", str(models_dir), str(folder)])
        out = capsys.readouterr()
        assert rc == 2  # a usage error, as the README says
        err = [ln for ln in out.err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith(f"audiosetflow: error: {folder}: no media")
        assert out.out == ""  # not even the header
    # next to a good file: still a usage error, nothing predicted
    rc = main(["predict", "--models", str(models_dir), str(empty), str(media["tone"])])
    out = capsys.readouterr()
    assert rc == 2 and out.out == "" and len(out.err.strip().splitlines()) == 1


def test_predict_folder_takes_every_suffix_the_decoder_reads_by_name(
    tmp_path, models_dir, media, capsys
):
    """A folder contributes module formats (.it, .xm, ...) and other suffixes ffmpeg decodes
    when the file is named; --help lists the suffixes."""
    from audiosetflow.cli import MEDIA_EXTENSIONS, build_parser

    for ext in (".it", ".xm", ".s3m", ".mod", ".w64", ".tta", ".wv", ".mka", ".opus"):
        assert ext in MEDIA_EXTENSIONS, ext
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(media["tone"], root / "a.w64")  # a WAV under a suffix ffmpeg probes anyway
    (root / "song.it").write_bytes(b"IMPM" + bytes(200))  # an empty Impulse Tracker module
    (root / "notes.txt").write_text("skipped\n")
    rc = main(["predict", "--models", str(models_dir), str(root)])
    rows = _table(capsys.readouterr().out)
    named = main(
        ["predict", "--models", str(models_dir), *(str(root / n) for n in ("a.w64", "song.it"))]
    )
    # the .it file was taken from the folder and gives what it gives when named
    assert [Path(r[0]).name for r in rows] == ["a.w64"] * 2 + ["song.it"] * 2
    assert rc == named == 0 and _table(capsys.readouterr().out) == rows
    help_text = build_parser()._subparsers._group_actions[0].choices["predict"].format_help()
    assert ".it " in help_text and ".w64 " in help_text and ".txt" not in help_text


def test_console_script(models_dir, media):
    exe = shutil.which("audiosetflow", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("console script not installed (pip install -e .)")
    r = subprocess.run(
        [exe, "predict", "--models", str(models_dir / "music.pt"), str(media["noise"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert len(_table(r.stdout)) == 1


# --- info ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory) -> Path:
    """A checkpoint with the info run_train stores: the CNN's test metrics and test source."""
    params = FeatureParams.from_config({}, sample_rate=SR)
    test = {"roc_auc": 0.981, "average_precision": 0.975, "f1": 0.9, "accuracy": 0.9,
            "precision": 0.9, "recall": 0.9, "log_loss": float("nan"), "threshold": 0.4213,
            "n": 40, "n_pos": 20, "confusion": [[18, 2], [2, 18]]}  # fmt: skip
    path = tmp_path_factory.mktemp("trained") / "music.pt"
    save_checkpoint(
        path,
        model=AudioCNN(params.n_mels, 3, width=4),
        labels=[{"slug": "music", "name": "Music", "mid": "/m/04rlf"}],
        feature_params=asdict(params),
        sample_rate=SR,
        clip_seconds=CLIP,
        extra_channels=["zcr", "spectral_centroid"],
        thresholds=[0.4213],
        info={"test": test, "test_source": "eval"},
    )
    return path


def _info_rows(text: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        key, _, value = line.partition("  ")
        rows[key.strip()] = value.strip()
    return rows


def test_info_shows_what_the_checkpoint_stores(trained_ckpt, capsys):
    assert main(["info", str(trained_ckpt)]) == 0
    rows = _info_rows(capsys.readouterr().out)
    assert rows["checkpoint"] == str(trained_ckpt)
    assert rows["label"] == "Music (slug music, mid /m/04rlf)"
    assert rows["threshold"].startswith("0.4213")
    assert rows["sample rate"] == f"{SR} Hz" and rows["clip length"] == f"{CLIP:g} s"
    assert rows["extra channels"] == "zcr, spectral_centroid"
    assert "n_mels=128" in rows["features"] and "hop_length=" in rows["features"]
    assert rows["model"].startswith("cnn, ") and "in_channels=3" in rows["model config"]
    assert rows["test data"] == "40 clips (20 positive); source: eval"
    # run_train does not store the train/val counts in the checkpoint: said, not guessed
    assert rows["train data"] == rows["val data"] == "not stored in the checkpoint"
    assert "ROC-AUC 0.981" in rows["test metrics"] and "log loss n/a" in rows["test metrics"]
    assert rows["confusion"].startswith("[[18, 2], [2, 18]]")

    assert main(["info", str(trained_ckpt), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)  # strict JSON: the NaN log loss is null
    assert info["label"] == {"slug": "music", "name": "Music", "mid": "/m/04rlf"}
    assert info["threshold"] == pytest.approx(0.4213) and info["sample_rate"] == SR
    assert info["feature_params"] == asdict(FeatureParams.from_config({}, sample_rate=SR))
    assert info["data"]["test"] == {"n": 40, "n_pos": 20} and info["data"]["train"] is None
    assert info["metrics"]["test"]["log_loss"] is None
    assert info["absent"] == ["data.train", "data.val"]


def test_info_of_a_checkpoint_without_info_says_what_is_absent(models_dir, capsys):
    assert main(["info", str(models_dir / "other.pt")]) == 0
    rows = _info_rows(capsys.readouterr().out)
    assert rows["label"] == "Other (slug other, mid /m/xx)"
    assert rows["test metrics"] == "not stored in the checkpoint"
    assert rows["test data"] == "not stored in the checkpoint; source not stored in the checkpoint"
    assert main(["info", str(models_dir / "other.pt"), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["metrics"]["test"] is None
    assert set(info["absent"]) == {"data.train", "data.val", "data.test", "data.test_source",
                                   "metrics.test"}  # fmt: skip


def test_info_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path, media, capsys):
    import torch

    other = tmp_path / "other.pt"
    torch.save({"weights": [1, 2, 3]}, other)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (media["bad"], other, empty, tmp_path / "missing.pt"):
        assert main(["info", str(path)]) == 2
        out = capsys.readouterr()
        err = [ln for ln in out.err.splitlines() if ln.strip()]
        assert out.out == "" and len(err) == 1, out.err
        assert err[0].startswith(f"audiosetflow: error: {path}: ")
    assert main(["info", str(other)]) == 2
    assert "not an audiosetflow checkpoint" in capsys.readouterr().err


# --- progress bar ----------------------------------------------------------------------------


def _predict_cmd(models_dir, files) -> list[str]:
    return [sys.executable, "-m", "audiosetflow", "predict", "--models", str(models_dir),
            *map(str, files)]  # fmt: skip


def _env() -> dict:
    src = str(Path(audiosetflow.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": src, "TERM": "xterm", "COLUMNS": "100"}


def _screen(text: str) -> list[str]:
    """The lines a terminal shows after ``text``: ``\\r`` returns to the line's start,
    ``ESC[K`` erases to its end, ``\\n`` starts a new line (a pty sends ``\\r\\n``)."""
    lines, line, col = [], [], 0
    i = 0
    while i < len(text):
        if text.startswith("\x1b[K", i):
            del line[col:]
            i += 3
            continue
        ch = text[i]
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line))
            line, col = [], 0
        else:
            line[col : col + 1] = [ch]
            col += 1
        i += 1
    if line:
        lines.append("".join(line))
    return [ln for ln in lines if ln.strip()]


def test_predict_shows_a_progress_bar_on_a_terminal_and_none_when_piped(models_dir, media):
    """stderr on a real pseudo-terminal: a bar; stderr through a pipe: only the error lines.
    stdout (a pipe both times) carries the same table, never a bar."""
    files = [media["tone"], media["bad"], media["noise"]]
    code, out, tty = run_on_tty(_predict_cmd(models_dir, files), env=_env(), timeout=120)
    assert code == 1
    text = tty.decode()
    assert "\r" in text and "audiosetflow predict 3/3 [" in text and "files/s" in text
    assert "audiosetflow predict 0/3 [" in text  # drawn before the first file
    # what the terminal shows at the end: the error line on a line of its own, the bar erased
    screen = _screen(text)
    assert len(screen) == 1 and screen[0].startswith("audiosetflow: error: ")
    assert str(media["bad"]) in screen[0]
    assert len(_table(out)) == 4 and "\r" not in out and "[#" not in out

    piped = subprocess.run(_predict_cmd(models_dir, files), capture_output=True, text=True,
                           env=_env(), check=False)  # fmt: skip
    assert piped.returncode == 1
    assert piped.stdout == out
    err = [ln for ln in piped.stderr.splitlines() if ln.strip()]
    assert (
        len(err) == 1 and err[0].startswith("audiosetflow: error:") and str(media["bad"]) in err[0]
    )
    assert "\r" not in piped.stderr and "\x1b" not in piped.stderr


def test_progress_bar_helper():
    buf = io.StringIO()
    with ProgressBar(5, "x", stream=buf) as bar:  # not a terminal: nothing drawn
        bar.update()
        bar.write("line", file=buf)
    assert buf.getvalue() == "line\n"
    forced = io.StringIO()
    with ProgressBar(4, "job", unit="files", stream=forced, enabled=True, min_interval=0) as bar:
        for _ in range(4):
            bar.update()
    assert "job 4/4 [" in forced.getvalue() and "100%" in forced.getvalue()
    assert forced.getvalue().endswith("\r\x1b[K")  # erased at the end
    one = io.StringIO()
    with ProgressBar(1, stream=one, enabled=True) as bar:  # one step: no bar
        bar.update()
    assert one.getvalue() == ""
    assert len(ProgressBar(10, "d").render(width=30)) <= 29


# --- the package alone ----------------------------------------------------------------------

# Top-level modules that only the extras bring (train, workflow, test).
EXTRAS_ONLY = ("snakemake", "yt_dlp", "librosa", "sklearn", "matplotlib", "pyarrow",
               "jsonschema", "threadpoolctl", "scipy", "duckdb")  # fmt: skip

BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
sys.meta_path.insert(0, _Block())
from audiosetflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_predict_info_status_need_only_the_base_dependencies(models_dir, media, tmp_path):
    """What `pip install audiosetflow` gives is enough for these commands: they run with every
    module of the extras unimportable."""
    import pandas as pd

    from audiosetflow.shard import Layout, ShardTable, Status

    layout = Layout(tmp_path / "results")
    t = ShardTable.from_manifest(pd.DataFrame(
        {"ytid": ["aaaaaaaaaaa", "bbbbbbbbbbb"], "split": "train", "shard": 0, "start": 0.0,
         "end": 10.0, "labels": "/m/04rlf"}))  # fmt: skip
    t.set("download", "aaaaaaaaaaa", Status.PERMANENT, "HTTP Error 404", attempts=1, runs=1)
    t.save(layout.shard("train", 0))
    code = BLOCK.format(blocked=EXTRAS_ONLY)
    env = {**os.environ, "PYTHONPATH": str(Path(audiosetflow.__file__).resolve().parents[1])}
    for args in (
        ["predict", "--models", str(models_dir), str(media["tone"])],
        ["info", str(models_dir / "music.pt")],
        ["status", "--results", str(layout.root)],
        ["failures", "--results", str(layout.root), "--format", "json"],
        ["--version"],
    ):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                           env=env, check=False)  # fmt: skip
        assert r.returncode == 0, (args, r.stderr[-2000:])
        assert r.stdout.strip(), args
    # the block works: a module of the extras is not importable that way
    r = subprocess.run([sys.executable, "-c", code.replace("from audiosetflow.cli import main",
                        "import snakemake")], capture_output=True, text=True, env=env)  # fmt: skip
    assert r.returncode != 0 and "blocked" in r.stderr


# --- output safe on bad input -----------------------------------------------------------------

NASTY = "Mu\tsic\n\x1b[2J\x07\u202e"  # tab, newline, clear screen, bell, right-to-left override
NASTY_SHOWN = "Mu\\tsic\\n\\x1b[2J\\x07\\u202e"


def _raw_control(text: str) -> list[str]:
    """The control characters of ``text`` other than the newlines between lines and the tabs
    between fields."""
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or c in "\x7f\u202e"]


def test_escape_helper():
    from audiosetflow.textsafe import escape

    assert escape("plain Café 音") == "plain Café 音"
    assert escape(NASTY) == NASTY_SHOWN
    assert escape("a\\b\r\x7f\x9b\u2028") == "a\\\\b\\r\\x7f\\x9b\\u2028"
    assert escape("\udcff.wav") == "\\xff.wav"  # a byte of a non-UTF-8 file name
    assert escape(3.5) == "3.5"


@pytest.fixture(scope="module")
def nasty(models_dir, media, tmp_path_factory) -> dict[str, Path]:
    """A checkpoint whose label and mid hold control characters; media files whose names do."""
    from audiosetflow.learning.models import MultiLabelCNN

    d = tmp_path_factory.mktemp("nasty")
    ck = load_checkpoint(models_dir / "music.pt")
    save_checkpoint(d / "nasty.pt", model=ck.model,
                    labels=[{"slug": "nasty", "name": NASTY, "mid": "/m/\r\x1b"}],
                    feature_params=ck.feature_params, sample_rate=ck.sample_rate,
                    clip_seconds=ck.clip_seconds, extra_channels=ck.extra_channels,
                    thresholds=[0.5])  # fmt: skip
    params = FeatureParams(**ck.feature_params)
    labels = [{"mid": "/m/\x1b1", "name": NASTY, "slug": "a"},
              {"mid": "/m/2", "name": "Plain", "slug": "b"}]  # fmt: skip
    save_checkpoint(d / "multilabel.pt", model=MultiLabelCNN(2, params.n_mels, width=4),
                    labels=labels, thresholds=[0.25, 0.75], feature_params=ck.feature_params,
                    sample_rate=ck.sample_rate, clip_seconds=ck.clip_seconds)  # fmt: skip
    good = d / "to\tne\n\x1b[31m.wav"
    shutil.copy(media["tone"], good)
    bad = d / "bad\x1b]0;title\x07\n.mp3"
    bad.write_text("not audio\n")
    return {"binary": d / "nasty.pt", "multilabel": d / "multilabel.pt", "good": good,
            "bad": bad}  # fmt: skip


def test_predict_tsv_and_errors_escape_control_characters(nasty, capsys):
    from audiosetflow.textsafe import escape

    good, bad = nasty["good"], nasty["bad"]
    rc = main(["predict", "--models", str(nasty["binary"]), str(good), str(bad)])
    out = capsys.readouterr()
    assert rc == 1
    assert not _raw_control(out.out) and not _raw_control(out.err)
    rows = _table(out.out)
    assert rows == [[escape(good), NASTY_SHOWN, "/m/\\r\\x1b", rows[0][3], rows[0][4]]]
    assert out.err.count("\n") == 1 and out.err.startswith(f"audiosetflow: error: {escape(bad)}: ")
    # multi-label: per-window rows too
    for extra in ([], ["--per-window"]):
        rc = main(["predict", "--model", str(nasty["multilabel"]), "--hop", "0.5", *extra,
                   str(good), str(bad)])  # fmt: skip
        out = capsys.readouterr()
        assert rc == 1 and not _raw_control(out.out) and not _raw_control(out.err)
        lines = out.out.splitlines()
        assert all(len(ln.split("\t")) == 9 for ln in lines)
        rows = [ln.split("\t") for ln in lines[1:]]
        assert {r[0] for r in rows} == {escape(good)}
        assert {r[5] for r in rows} == {NASTY_SHOWN, "Plain"}
        assert len(rows) == 2 * (1 + bool(extra))  # tone.wav: 1.5 s, one 2 s window
        assert out.err.count("\n") == 1 and escape(bad) in out.err
    # JSON escapes by itself, and stays one valid document
    rc = main(["predict", "--model", str(nasty["multilabel"]), "--format", "json",
               "--per-window", str(good), str(bad)])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["files"][0]["file"] == str(good)
    assert doc["files"][0]["labels"][0]["label"] in (NASTY, "Plain")
    assert len(doc["files"][0]["windows"]) == 1 and doc["files"][1]["file"] == str(bad)
    assert len(doc["errors"]) == 1 and str(bad) in doc["errors"][0]


def test_predict_missing_file_with_control_characters_is_one_line(tmp_path, models_dir, capsys):
    missing = tmp_path / "no\nsuch\x1b[2J"
    assert main(["predict", "--models", str(models_dir), str(missing)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and not _raw_control(out.err)
    assert "no\\nsuch\\x1b[2J: no such file or folder" in out.err


def test_info_escapes_and_shows_the_multilabel_thresholds(nasty, capsys):
    assert main(["info", str(nasty["binary"])]) == 0
    text = capsys.readouterr().out
    assert not _raw_control(text.replace("\t", "")) and "\t" not in text
    assert _info_rows(text)["label"] == f"{NASTY_SHOWN} (slug nasty, mid /m/\\r\\x1b)"
    assert main(["info", str(nasty["multilabel"])]) == 0
    text = capsys.readouterr().out
    assert not _raw_control(text) and "\t" not in text
    rows = _info_rows(text)
    assert (
        rows["thresholds"]
        == f"{NASTY_SHOWN} 0.2500, Plain 0.7500 (per label, chosen on validation)"
    )
    assert main(["info", str(nasty["multilabel"]), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [lab["threshold"] for lab in info["labels"]] == [0.25, 0.75]


def test_status_and_failures_escape_reasons(tmp_path, capsys):
    import pandas as pd

    from audiosetflow.shard import Layout, ShardTable, Status

    layout = Layout(tmp_path / "results")
    t = ShardTable.from_manifest(pd.DataFrame({"ytid": ["aaaaaaaaaaa", "bbbbbbbbbbb"],
                                               "split": "train", "shard": 0, "start": 0.0,
                                               "end": 10.0, "labels": "/m/x"}))  # fmt: skip
    t.set("download", "aaaaaaaaaaa", Status.PERMANENT, "bad\tthing\n\x1b[31mred", attempts=1)
    t.set("download", "bbbbbbbbbbb", Status.OK)
    t.save(layout.shard("train", 0))
    for args in (["status"], ["status", "--format", "tsv"], ["failures"]):
        assert main([*args, "--results", str(layout.root)]) == 0
        out = capsys.readouterr().out
        assert not _raw_control(out), args
        if "tsv" in args or "failures" in args:
            assert len({len(ln.split("\t")) for ln in out.splitlines()}) == 1, args
    assert "bad\\tthing\\n\\x1b[31mred" in out
    assert main(["failures", "--results", str(layout.root), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["reason"] == "bad\tthing\n\x1b[31mred"


def test_predict_help_says_what_each_mode_decodes_and_the_exit_statuses():
    from audiosetflow.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["predict"]
    text = " ".join(sub.format_help().split())
    assert "the whole file is scored" in text and "--binary" in text
    assert "first clip_seconds" in text.split("--binary", 1)[1]  # only in the binary mode
    assert "1 when a file could not be decoded" in text and "2 on a usage error" in text
