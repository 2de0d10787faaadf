"""CNN14 in PANNs' layout, fine-tuning from a PANNs checkpoint, distillation from stored
teacher predictions, and clip embeddings as features."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_multilabel import LABELS, MUSIC, SPEECH, VEHICLE, write_multilabel_split

from audiosetflow.errors import InputError
from audiosetflow.learning import multilabel as ML
from audiosetflow.learning.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from audiosetflow.learning.labelsets import ModelSettings, MultilabelSettings, TeacherSettings
from audiosetflow.learning.models import Cnn14, build_model, make_cnn
from audiosetflow.learning.pretrained import freeze_trunk, init_from_panns
from audiosetflow.learning.teacher import distill_loss, read_teacher
from audiosetflow.learning.trainer import FitSettings, fit_arrays

# AudioSet class indices (class_labels_indices.csv) of the three labels
INDEX = {MUSIC: 137, SPEECH: 0, VEHICLE: 300}


def panns_state(width: int = 64, n_mels: int = 64, classes: int = 527, seed: int = 0) -> dict:
    """A random state_dict with the names and shapes of PANNs' ``Cnn14`` (written from PANNs'
    definition, not from audiosetflow's model): front-end buffers included."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    def bn(prefix: str, n: int, st: dict) -> None:
        st[f"{prefix}.weight"], st[f"{prefix}.bias"] = 1 + r(n), r(n)
        st[f"{prefix}.running_mean"], st[f"{prefix}.running_var"] = r(n), 1 + r(n).abs()
        st[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    st = {
        "spectrogram_extractor.stft.conv_real.weight": r(513, 1, 1024),
        "spectrogram_extractor.stft.conv_imag.weight": r(513, 1, 1024),
        "logmel_extractor.melW": r(513, n_mels),
    }
    bn("bn0", n_mels, st)
    chans = [1] + [width * 2**i for i in range(6)]
    for i in range(1, 7):
        st[f"conv_block{i}.conv1.weight"] = r(chans[i], chans[i - 1], 3, 3)
        st[f"conv_block{i}.conv2.weight"] = r(chans[i], chans[i], 3, 3)
        bn(f"conv_block{i}.bn1", chans[i], st)
        bn(f"conv_block{i}.bn2", chans[i], st)
    st["fc1.weight"], st["fc1.bias"] = r(chans[-1], chans[-1]), r(chans[-1])
    st["fc_audioset.weight"], st["fc_audioset.bias"] = r(classes, chans[-1]), r(classes)
    return st


def write_panns(path: Path, state: dict) -> Path:
    torch.save({"model": state}, path)  # the layout of Cnn14_mAP=0.431.pth
    return path


@pytest.fixture(scope="session")
def panns_full(tmp_path_factory) -> Path:
    """A full-size CNN14 checkpoint in PANNs' layout (random weights, about 330 MB)."""
    return write_panns(tmp_path_factory.mktemp("panns") / "Cnn14_random.pth", panns_state())


def test_full_size_cnn14_loads_a_panns_checkpoint(panns_full):
    state = torch.load(panns_full, weights_only=True, mmap=True)["model"]
    model = Cnn14(3, 64, width=64)
    # PANNs' parameter count: every tensor but the front-end buffers and the running stats
    n_panns = sum(v.numel() for k, v in state.items()
                  if not k.startswith(("spectrogram_", "logmel_")) and "running" not in k
                  and "num_batches" not in k and not k.startswith("fc_audioset"))  # fmt: skip
    n_own = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc_audioset"))
    assert n_own == n_panns and n_panns > 79_000_000
    assert sum(p.numel() for p in Cnn14(527, 64).parameters()) == n_panns + 527 * 2049
    info = init_from_panns(model, panns_full, label_indices=[0, 137, None], head="map")
    assert info["mapped"] == 2 and info["fresh"] == 1 and info["n_outputs"] == 527
    assert info["ignored"] == [
        "logmel_extractor.melW",
        "spectrogram_extractor.stft.conv_imag.weight",
        "spectrogram_extractor.stft.conv_real.weight",
    ]
    sd = model.state_dict()
    for k in ("bn0.running_var", "conv_block6.conv2.weight", "conv_block3.bn1.weight", "fc1.bias"):
        assert torch.equal(sd[k], state[k]), k
    assert torch.equal(sd["fc_audioset.weight"][0], state["fc_audioset.weight"][0])
    assert torch.equal(sd["fc_audioset.weight"][1], state["fc_audioset.weight"][137])
    assert not torch.equal(sd["fc_audioset.weight"][2], state["fc_audioset.weight"][2])
    assert float(sd["mean"].abs().max()) == 0 and float((sd["std"] - 1).abs().max()) == 0
    with torch.no_grad():
        z = model.eval()(torch.randn(2, 1, 64, 101))
    assert z.shape == (2, 3) and torch.isfinite(z).all()


def test_panns_checkpoint_errors_are_one_line(tmp_path):
    good = write_panns(tmp_path / "w4.pth", panns_state(width=4))
    model = Cnn14(3, 64, width=4)
    init_from_panns(model, good, label_indices=[0, 1, 2], head="replace")
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    st = panns_state(width=4)
    del st["conv_block3.bn1.running_var"]
    cases = {
        trunc: "truncated",
        write_panns(tmp_path / "w8.pth", panns_state(width=8)): "conv_block1.conv1.weight",
        write_panns(tmp_path / "m128.pth", panns_state(width=4, n_mels=128)): "128 mel bands",
        write_panns(tmp_path / "missing.pth", st): "no tensor conv_block3.bn1.running_var",
        tmp_path / "nope.pth": "no such file",
    }
    torch.save({"state_dict": panns_state(width=4)}, tmp_path / "other.pth")
    cases[tmp_path / "other.pth"] = "no 'model' state_dict"
    for path, what in cases.items():
        with pytest.raises(CheckpointError) as e:
            init_from_panns(Cnn14(3, 64, width=4), path, label_indices=[0, 1, 2])
        msg = str(e.value)
        assert msg.startswith(str(path)) and what in msg and "\n" not in msg, msg


def test_cnn14_any_input_and_checkpoint_arch(tmp_path):
    torch.manual_seed(0)
    for shape in [(2, 1, 128, 431), (2, 1, 16, 7), (1, 2, 1, 1)]:
        m = Cnn14(4, shape[2], shape[1], width=2).eval()
        with torch.no_grad():
            assert m(torch.randn(*shape)).shape == (shape[0], 4)
            assert m.embed(torch.randn(*shape)).shape == (shape[0], 64)
    for n_labels, kind in ((3, "multilabel"), (None, "cnn")):
        model = make_cnn("cnn14", n_labels=n_labels, n_rows=128, cnn14_width=2).eval()
        labels = LABELS if n_labels else LABELS[:1]
        path = tmp_path / f"{kind}.pt"
        save_checkpoint(path, model=model, labels=labels, thresholds=[0.5] * len(labels),
                        feature_params={}, sample_rate=22050, clip_seconds=2.0)  # fmt: skip
        ck = load_checkpoint(path, kind=kind)
        assert ck.header["arch"] == "cnn14" and ck.model.config["width"] == 2
        x = np.random.default_rng(0).standard_normal((3, 1, 128, 50)).astype(np.float32)
        assert np.allclose(
            ck.predict(x), torch.sigmoid(model(torch.from_numpy(x))).detach().numpy(), atol=1e-6
        )
    raw = torch.load(tmp_path / "multilabel.pt", weights_only=True)
    for arch in ("cnn15", "small"):
        h = json.loads(raw["header"])
        h["arch"] = arch
        torch.save({**raw, "header": json.dumps(h)}, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match="arch"):
            load_checkpoint(tmp_path / "bad.pt")
    assert isinstance(build_model("multilabel", {"n_labels": 2, "n_rows": 8, "in_channels": 1}),
                      torch.nn.Module)  # a checkpoint without arch: the small CNN  # fmt: skip
    with pytest.raises(ValueError, match="model.init"):
        ModelSettings(arch="small", init="x.pth")


def test_freeze_trunk_trains_only_the_output_layer(tmp_path):
    path = write_panns(tmp_path / "w2.pth", panns_state(width=2, n_mels=16))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 1, 16, 40)).astype(np.float32)
    Y = (rng.random((12, 2)) < 0.5).astype(np.float32)
    before = {}

    def build():
        m = Cnn14(2, 16, width=2)
        init_from_panns(m, path, label_indices=[5, 7])
        assert freeze_trunk(m) > 0
        before.update({k: v.clone() for k, v in m.state_dict().items()})
        return m

    model, _ = fit_arrays(build, X, Y, None, None, batch_size=4,
                          settings=FitSettings(epochs=1, seed=0, learning_rate=1e-2))  # fmt: skip
    after = model.state_dict()
    assert torch.equal(after["conv_block2.conv1.weight"], before["conv_block2.conv1.weight"])
    assert torch.equal(after["fc1.weight"], before["fc1.weight"])
    assert not torch.equal(after["fc_audioset.weight"], before["fc_audioset.weight"])


# --- teacher predictions ---------------------------------------------------------------------


def _teacher_logits(ytids, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, (len(ytids), 527)).astype(np.float32)


def test_teacher_files_in_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = [{"mid": m, "index": INDEX[m]} for m in (MUSIC, SPEECH, VEHICLE)]
    cols = [INDEX[m] for m in (MUSIC, SPEECH, VEHICLE)]
    file_ytids = [f"y{i:010d}" for i in range(10)]
    Z = _teacher_logits(file_ytids)
    want = ["y0000000003", "nothere0000", "y0000000009"]
    expect = Z[[3, 9]][:, cols]
    pq.write_table(pa.table({"ytid": file_ytids, "logits": list(Z)}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"ytid": file_ytids, **{m: Z[:, INDEX[m]] for m in INDEX}}),
                   tmp_path / "bymid.parquet")  # fmt: skip
    np.save(tmp_path / "t.npy", Z)
    (tmp_path / "t.ytids.txt").write_text("\n".join(file_ytids) + "\n")
    probs = 1 / (1 + np.exp(-Z.astype(np.float64)))
    np.save(tmp_path / "p.npy", probs)
    files = {"t.parquet": "logits", "bymid.parquet": "logits", "t.npy": "logits"}
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["audio_name"] = np.array([f"Y{y}.wav".encode() for y in file_ytids])
        f["logits"] = Z
    files["t.h5"] = "logits"
    for name, outputs in files.items():
        t = read_teacher(tmp_path / name, ytids=want, labels=labels, outputs=outputs,
                         folder=tmp_path)  # fmt: skip
        assert t.has.tolist() == [True, False, True] and t.n_rows == 10 and t.n_with == 2
        got = np.asarray(t.logits)[[0, 2]].astype(np.float32)
        assert np.allclose(got, expect, atol=0.02), name  # float16 storage
        assert not np.asarray(t.logits)[1].any()
    t = read_teacher(tmp_path / "p.npy", ytids=want, labels=labels, outputs="probabilities",
                     index=tmp_path / "t.ytids.txt", folder=tmp_path)  # fmt: skip
    assert np.allclose(np.asarray(t.logits)[[0, 2]].astype(np.float32), expect, atol=0.02)
    pq.write_table(
        pa.table({"ytid": file_ytids[:2] * 2, "logits": list(Z[:4])}), tmp_path / "d.parquet"
    )
    (tmp_path / "x.csv").write_text("ytid\n")
    np.save(tmp_path / "p2.npy", probs * 2)
    for name, what in (("d.parquet", "listed twice"), ("x.csv", "unknown format"),
                       ("p2.npy", "outside")):  # fmt: skip
        with pytest.raises(InputError, match=what) as e:
            read_teacher(tmp_path / name, ytids=want, labels=labels, outputs="probabilities",
                         index=tmp_path / "t.ytids.txt", folder=tmp_path)  # fmt: skip
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)
    # the loss: labels alone without a teacher row, the soft term with weight w
    z = torch.randn(4, 3)
    y = (torch.rand(4, 3) < 0.5).float()
    s = torch.rand(4, 3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    none = torch.cat([y, s * 0, torch.zeros(4, 1)], dim=1)
    assert distill_loss(3, weight=0.7, temperature=2.0)(z, none) == pytest.approx(bce(z, y).item())
    full = torch.cat([y, s, torch.ones(4, 1)], dim=1)
    want_loss = 0.3 * bce(z, y) + 0.7 * bce(z / 2.0, s)
    assert distill_loss(3, weight=0.7, temperature=2.0)(z, full).item() == pytest.approx(
        want_loss.item()
    )


# --- the multi-label model: CNN14 from a checkpoint, distilled; embeddings -------------------


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cnn14shards")
    write_multilabel_split(root / "train", "train", 42, seed=1)
    write_multilabel_split(root / "eval", "eval", 14, seed=2)
    return root


def _run(shards: Path, out: Path, *, teacher: Path, init: Path) -> dict:
    from audiosetflow.audio.features import FeatureParams
    from audiosetflow.learning.training import TrainSettings

    o = ML.MultilabelOutputs(
        model=str(out / "multilabel.pt"), metrics=str(out / "multilabel.json"),
        table=str(out / "multilabel.tsv"), scores=str(out / "multilabel_scores.tsv"),
        ap_plot=str(out / "ap.png"), history_plot=str(out / "history.png"),
    )  # fmt: skip
    job = ML.MultilabelJob(
        labels=[{**lab, "index": INDEX[lab["mid"]]} for lab in LABELS],
        train_features=sorted((shards / "train").glob("*.parquet")),
        eval_features=sorted((shards / "eval").glob("*.parquet")),
        params=FeatureParams.from_config({}, sample_rate=22050), outputs=o, clip_seconds=2.0,
    )  # fmt: skip
    c14 = ModelSettings(arch="cnn14", cnn14_width=2, init=str(init))
    settings = TrainSettings(epochs=1, batch_size=8, threads=2, device="cpu", seed=3, model=c14)
    ml = MultilabelSettings(
        min_positives=2, teacher=TeacherSettings(path=str(teacher), weight=0.5, temperature=2.0)
    )
    return ML.run_multilabel(job, settings, ml, threads=2, buffer_size=16)


@pytest.fixture(scope="module")
def distilled(small_shards, tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("distil")
    init = write_panns(tmp / "w2.pth", panns_state(width=2, n_mels=128))
    train = ML.clip_table(small_shards / "train")
    have = train["ytid"].tolist()[::2]  # a teacher row for every other train clip
    Z = _teacher_logits(have)
    pq.write_table(pa.table({"ytid": have + ["unknown0000"], "logits": list(Z) + [Z[0]]}),
                   tmp / "teacher.parquet")  # fmt: skip
    runs = []
    for k in (1, 2):
        (tmp / f"out{k}").mkdir()
        runs.append(_run(small_shards, tmp / f"out{k}", teacher=tmp / "teacher.parquet", init=init))
    return tmp, runs, len(have)


def test_multilabel_cnn14_from_a_checkpoint_with_a_teacher(distilled):
    tmp, (a, b), n_have = distilled
    assert a["arch"] == "cnn14" and a["width"] == 2
    assert a["init"]["mapped"] == 3 and a["init"]["head"] == "map"
    t = a["teacher"]
    assert t["rows_in_file"] == n_have + 1 and t["n_train"] == a["n_train"]
    # the val clips are held out of train: only the train clips among the teacher's count
    assert 0 < t["n_train_with_teacher"] <= n_have and t["n_train_with_teacher"] < a["n_train"]
    saved = json.loads((tmp / "out1" / "multilabel.json").read_text())
    assert saved["teacher"]["n_train_with_teacher"] == t["n_train_with_teacher"]
    ck = ML.load_multilabel(tmp / "out1" / "multilabel.pt")
    assert ck.header["arch"] == "cnn14" and isinstance(ck.model, Cnn14)
    # deterministic: the same inputs and seed give the same weights and metrics
    ck2 = ML.load_multilabel(tmp / "out2" / "multilabel.pt")
    for k, v in ck.model.state_dict().items():
        assert torch.equal(v, ck2.model.state_dict()[k]), k
    assert a["mAP"] == b["mAP"] and [h["train_loss"] for h in a["history"]] == [
        h["train_loss"] for h in b["history"]]  # fmt: skip


def test_embed_cli_writes_embeddings_the_baselines_train_on(
    distilled, small_shards, tmp_path, capsys
):
    from audiosetflow.learning.embeddings import read_embeddings
    from audiosetflow.learning.training import fit_logreg

    tmp, _, _ = distilled
    out = tmp_path / "emb.parquet"
    cli = [sys.executable, "-m", "audiosetflow.cli", "embed"]
    r = subprocess.run([*cli, str(tmp / "out1" / "multilabel.pt"),
                        str(small_shards / "train"), "--out", str(out), "--batch-size", "5"],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "42 clips, 64-dim embeddings (cnn14)" in r.stdout
    df = pd.read_parquet(out)
    assert len(df) == 42 and df["ytid"].is_unique and set(df["split"]) == {"train"}
    ytids = sorted(df["ytid"])
    E = read_embeddings(out, ytids)
    assert E.shape == (42, 64) and np.isfinite(E).all()
    # the same as the model's own embedding of a clip read from the shard
    from audiosetflow.learning.stream import FeatureStream, index_clips

    ck = load_checkpoint(tmp / "out1" / "multilabel.pt")
    b = next(FeatureStream(index_clips(small_shards / "train", ytids[:3]), batch_size=3).batches())
    with torch.no_grad():
        direct = ck.model.embed(torch.from_numpy(b.x)).numpy()
    assert np.allclose(direct, E[b.index], atol=1e-5)
    y = np.array([MUSIC in lab for lab in df.set_index("ytid").loc[ytids, "labels"]])
    clf = fit_logreg(E, y, seed=0)
    assert clf.predict_proba(E).shape == (42, 2)
    from audiosetflow.cli import main

    rc = main(["embed", str(tmp / "nothere.pt"), str(small_shards / "train"),
               "--out", str(tmp_path / "x.parquet")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "nothere.pt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(InputError, match="no embedding for YTID"):
        read_embeddings(out, ["zzzzzzzzzzz"])
    # shards of other feature parameters than the model's: one line naming both
    from audiosetflow.audio.features import shard_files
    from audiosetflow.learning.embeddings import check_shard_params

    files = shard_files(small_shards / "train")
    check_shard_params(files, ck.feature_params, model="m.pt")  # the model's own: fine
    other = {**ck.feature_params, "hop_length": ck.feature_params["hop_length"] * 2}
    with pytest.raises(InputError) as info:
        check_shard_params(files, other, model="m.pt")
    msg = str(info.value)
    assert "\n" not in msg and str(files[0]) in msg and "hop_length" in msg and "m.pt" in msg


def test_landing_page_says_how_many_clips_had_a_teacher(distilled):
    from audiosetflow.reporting.overview import _multilabel_html

    tmp, (a, _), _ = distilled
    ml = json.loads((tmp / "out1" / "multilabel.json").read_text())
    ml["teacher"]["file"] = "<b>t</b>.parquet"
    html = "".join(_multilabel_html(ml, None, None))
    t = ml["teacher"]
    assert f"{t['n_train_with_teacher']} of {t['n_train']} train clips had a teacher row" in html
    assert "&lt;b&gt;t&lt;/b&gt;.parquet" in html and "<b>t</b>" not in html
    assert "architecture cnn14, width 2" in html and "3 outputs mapped by MID" in html
