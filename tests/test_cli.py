"""`audiosetflow predict`: real ffmpeg decoding, real features, a small trained checkpoint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from synth_features import SR, synth_clip

from audiosetflow.audio.features import FeatureParams, compute
from audiosetflow.cli import main
from audiosetflow.learning.models import AudioCNN
from audiosetflow.learning.training import (
    channel_stats,
    fit_torch,
    save_checkpoint,
    stack_channels,
)

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
            label={"slug": slug, "name": name, "mid": mid},
            feature_params=asdict(params),
            sample_rate=SR,
            clip_seconds=CLIP,
            extra_channels=["zcr"],
            threshold=0.5,
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


def test_missing_file_and_missing_models(tmp_path, models_dir, capsys):
    assert main(["predict", "--models", str(models_dir), str(tmp_path / "nope.wav")]) == 1
    assert "nope.wav" in capsys.readouterr().err
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
        assert rc == 1
        err = [ln for ln in out.err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith(f"audiosetflow: error: {folder}: no media")
        assert _table(out.out) == []
    # next to a good file: that file is still predicted
    rc = main(["predict", "--models", str(models_dir), str(empty), str(media["tone"])])
    out = capsys.readouterr()
    assert rc == 1 and len(_table(out.out)) == 2 and len(out.err.strip().splitlines()) == 1


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
