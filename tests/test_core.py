"""The learning core: one trainer (seeded before the model is built), one checkpoint format
(checked before anything is allocated), one metrics module (undefined values are JSON null),
the threshold rule, provenance, and a package without import circles."""

from __future__ import annotations

import ast
import json
import math
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audiosetflow.errors import InputError
from audiosetflow.learning import metrics as mt
from audiosetflow.learning.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from audiosetflow.learning.labelsets import SpecAugmentSettings
from audiosetflow.learning.models import AudioCNN, DenseNet, MultiLabelCNN
from audiosetflow.learning.trainer import ArrayBatches, FitSettings, fit, fit_arrays

SRC = Path(__file__).resolve().parents[1] / "src" / "audiosetflow"


def _multilabel_data(n: int = 48, labels: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    Y = rng.random((n, labels)) < 0.4
    X = rng.normal(size=(n, 1, 16, 12)).astype(np.float32)
    for j in range(labels):
        X[Y[:, j], 0, 4 * j : 4 * j + 3] += 2.5
    return X, Y.astype(np.float32)


def _fit_multilabel(seed: int):
    X, Y = _multilabel_data()
    settings = FitSettings(
        epochs=3, patience=3, seed=seed, mixup=0.3, monitor="ap",
        specaugment=SpecAugmentSettings(1, 3, 1, 2),
    )  # fmt: skip
    return fit(
        lambda: MultiLabelCNN(3, 16, 1, width=4),
        ArrayBatches(X[:32], Y[:32], 8, seed),
        ArrayBatches(X[32:], Y[32:], 16),
        settings=settings,
    )


def test_a_fit_without_val_part_says_so_instead_of_logging_nan(caplog):
    X, Y = _multilabel_data()
    with caplog.at_level("INFO"):
        _, res = fit(
            lambda: MultiLabelCNN(3, 16, 1, width=4), ArrayBatches(X[:32], Y[:32], 8, 1), None,
            settings=FitSettings(epochs=2, patience=1, seed=1), name="dense",
        )  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if "dense epoch" in r.getMessage()]
    assert len(lines) == 2 and len(res.history) == 2, lines
    assert all("no val part (fixed epochs)" in ln and "nan" not in ln for ln in lines), lines


def test_two_fits_in_one_process_are_bit_identical_whatever_ran_before():
    """The trainer seeds before it builds the model: consuming the global RNG in between (as
    another model, a data loader or a library would) changes nothing."""
    m1, r1 = _fit_multilabel(seed=11)
    torch.rand(1000)
    np.random.random(1000)  # noqa: NPY002 - the legacy global state, on purpose
    m2, r2 = _fit_multilabel(seed=11)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    strip = [
        {k: v for k, v in h.items() if "seconds" not in k and "per_" not in k} for h in r1.history
    ]
    assert strip == [
        {k: v for k, v in h.items() if "seconds" not in k and "per_" not in k} for h in r2.history
    ]
    m3, _ = _fit_multilabel(seed=12)
    assert not torch.equal(m1.head[1].weight, m3.head[1].weight)


def test_one_trainer_for_binary_ensemble_and_multilabel_targets():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    model, res = fit_arrays(
        lambda: DenseNet(4, hidden=(8,), members=3).set_normalization(X.mean(0), X.std(0)),
        X[:48], y[:48], X[48:], y[48:],
        settings=FitSettings(epochs=30, patience=30, monitor="ap", learning_rate=1e-2),
        batch_size=8,
    )  # fmt: skip
    assert res.history[-1]["val_ap"] > 0.9 and not model.training
    assert {"train_loss", "val_loss", "val_ap", "val_auc", "clips_per_s", "best"} <= set(
        res.history[0]
    )
    with pytest.raises(ValueError, match="monitor"):
        FitSettings(monitor="accuracy")


# --- checkpoints -------------------------------------------------------------------------------


def _save(path: Path, model=None, **kw) -> Path:
    model = model or AudioCNN(16, 1, width=4)
    args = {
        "labels": [{"mid": "/m/04rlf", "name": "Music", "slug": "music"}],
        "thresholds": [0.4],
        "feature_params": {"n_mels": 16},
        "sample_rate": 16000,
        "clip_seconds": 10.0,
        "provenance": {"config_hash": "x" * 64},
    } | kw
    save_checkpoint(path, model=model, **args)
    return path


def test_every_kind_round_trips_in_one_format_and_the_header_reads_without_weights(tmp_path):
    dense = DenseNet(5, hidden=(4,), members=2)
    multi = MultiLabelCNN(2, 16, 1, width=4)
    labels2 = [{"mid": "/m/a", "name": "A"}, {"mid": "/m/b", "name": "B"}]
    for kind, model, kw in (
        ("cnn", AudioCNN(16, 1, width=4), {}),
        ("dense", dense, {"summary_columns": ["a", "b", "c", "d", "e"]}),
        ("multilabel", multi, {"labels": labels2, "thresholds": [0.2, float("nan")]}),
    ):
        path = _save(tmp_path / f"{kind}.pt", model, **kw)
        raw = torch.load(path, weights_only=True)
        assert raw["format"] == CHECKPOINT_FORMAT and set(raw) == {"format", "header", "state_dict"}
        h = read_header(path)
        assert h["kind"] == kind and h["provenance"]["config_hash"] == "x" * 64
        ck = load_checkpoint(path)
        assert ck.kind == kind and [lab["mid"] for lab in ck.labels] == [
            lab["mid"] for lab in (kw.get("labels") or [{"mid": "/m/04rlf"}])
        ]
        for (k, a), b in zip(
            model.state_dict().items(), ck.model.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), k
    assert json.loads(torch.load(tmp_path / "multilabel.pt", weights_only=True)["header"])[
        "thresholds"
    ] == [0.2, None]
    assert math.isnan(load_checkpoint(tmp_path / "multilabel.pt").thresholds[1])
    with pytest.raises(CheckpointError, match="a cnn checkpoint, not a multilabel one"):
        load_checkpoint(tmp_path / "cnn.pt", kind="multilabel")


def _forged(path: Path, header: dict, state: dict | None = None) -> Path:
    torch.save(
        {"format": CHECKPOINT_FORMAT, "header": json.dumps(header), "state_dict": state or {}}, path
    )
    return path


def test_malformed_checkpoints_are_one_line_errors_before_any_allocation(tmp_path):
    good = _save(tmp_path / "good.pt")
    h = read_header(good)
    cases = {
        "truncated": (good.read_bytes()[:300], "torch cannot read it"),
        "text": (b"not a checkpoint\n", "torch cannot read it"),
        "empty": (b"", "torch cannot read it"),
    }
    for name, (data, msg) in cases.items():
        p = tmp_path / f"{name}.pt"
        p.write_bytes(data)
        with pytest.raises(CheckpointError, match=msg) as e:
            load_checkpoint(p)
        assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)
    # a tiny file naming 4 million outputs: refused from the header, nothing built
    cfg = {"n_labels": 4_000_000, "n_rows": 128, "in_channels": 1, "width": 16}
    p = _forged(tmp_path / "huge.pt", dict(h, kind="multilabel", model_config=cfg))
    assert p.stat().st_size < 4000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="n_labels is 4000000"):
        load_checkpoint(p)
    cfg["n_labels"] = 50_000  # within the limit, but not the number of labels listed
    with pytest.raises(CheckpointError, match="50000 outputs but 1 labels"):
        load_checkpoint(_forged(tmp_path / "huge.pt", dict(h, kind="multilabel", model_config=cfg)))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB
    # shapes that do not match the header's model
    state = {k: v for k, v in AudioCNN(16, 1, width=8).state_dict().items()}
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(_forged(tmp_path / "shape.pt", h, state))
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_checkpoint(_forged(tmp_path / "keys.pt", h, {"x": torch.zeros(1)}))
    for bad, msg in (
        ({"kind": "svm"}, "kind 'svm'"),
        ({"thresholds": []}, "one per label"),
        ({"sample_rate": -3}, "sample_rate"),
        ({"model_config": {"n_rows": 10**9, "in_channels": 1}}, "n_rows"),
    ):
        with pytest.raises(CheckpointError, match=msg):
            load_checkpoint(_forged(tmp_path / "bad.pt", h | bad))
    torch.save({"format_version": 1, "state_dict": {}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="older audiosetflow .* retrain"):
        load_checkpoint(tmp_path / "old.pt")
    assert issubclass(CheckpointError, InputError)


def test_info_on_a_forged_checkpoint_exits_2_with_one_line(tmp_path):
    p = _forged(tmp_path / "huge.pt", {"kind": "multilabel", "labels": "x" * 10})
    proc = subprocess.run(
        [sys.executable, "-m", "audiosetflow", "info", str(p)], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and "Traceback" not in proc.stderr
    assert "weights_only" not in proc.stderr


# --- metrics -----------------------------------------------------------------------------------


def test_undefined_metrics_are_nan_inside_and_null_in_json(tmp_path):
    m = mt.binary_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.9]), threshold=0.5)
    assert math.isnan(m["average_precision"]) and math.isnan(m["roc_auc"]) and math.isnan(m["f1"])
    mt.write_json(tmp_path / "m.json", {"m": m, "arr": np.array([1.0, np.nan]), "inf": np.inf})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back["m"]["average_precision"] is None and back["arr"] == [1.0, None]
    assert back["inf"] is None
    ml = mt.multilabel_metrics(
        np.array([[1, 0], [0, 0]]),
        np.array([[0.9, 0.1], [0.2, 0.3]]),
        labels=[{"mid": "a", "name": "A"}, {"mid": "b", "name": "B"}],
    )
    assert ml["n_labels_scored"] == 1 and ml["mAP"] == 1.0
    assert mt.mean_std([0.5, 0.7, None])["mean"] == pytest.approx(0.6)
    assert math.isnan(mt.mean_std([0.5])["std"])


def test_best_f1_agrees_with_a_brute_force_search():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        s = np.round(rng.random(30), 1)  # ties
        if y.sum() == 0:
            continue
        f1, thr = mt.best_f1(y, s)
        brute = max(mt.f1_at(y, s, t) for t in np.unique(s))
        assert f1 == pytest.approx(brute) and mt.f1_at(y, s, thr) == pytest.approx(brute)


def test_prevalence_threshold_holds_f1_where_the_balanced_one_collapses():
    """Scores of a decent model; validation is 1:1, use is at 3 % prevalence: the threshold of
    the balanced part lets through far too many negatives, the re-weighted one does not."""
    rng = np.random.default_rng(1)

    def scores(n_pos, n_neg):
        y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
        return y, np.r_[rng.normal(2.0, 1, n_pos), rng.normal(0, 1, n_neg)]

    yv, sv = scores(100, 100)
    yt, st = scores(300, 9700)
    t_bal = mt.decision_threshold(yv, sv, rule="balanced")
    t_prev = mt.decision_threshold(yv, sv, rule="prevalence", prevalence=0.03)
    assert t_prev > t_bal
    f_bal, f_prev, best = mt.f1_at(yt, st, t_bal), mt.f1_at(yt, st, t_prev), mt.best_f1(yt, st)[0]
    assert f_prev > f_bal + 0.1 and f_prev > 0.8 * best


# --- the package -------------------------------------------------------------------------------


def _imports(path: Path, package: str) -> set[str]:
    """Modules of the package a module imports at its top level (not inside functions or
    TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text())
    mod = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    base = mod.rsplit(".", 1)[0] if path.name != "__init__.py" else mod
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                root = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{root}.{node.module}" if node.module else root
                names = [name] + [f"{name}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            out |= {n for n in names if n.startswith(package)}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(package)}
    return out


def test_no_import_circles_and_reading_shards_needs_no_torch():
    mods = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = p
    graph = {
        m: {i for i in _imports(p, "audiosetflow") if i in mods and i != m} for m, p in mods.items()
    }
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(m) :] + [m]))
        if m in seen:
            return
        stack.append(m)
        for n in graph[m]:
            visit(n)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)
    code = (
        "import sys, audiosetflow.learning.stream, audiosetflow.learning.inputs; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_provenance_records_version_commit_hashes_and_packages():
    from audiosetflow.provenance import config_hash, provenance

    p = provenance(config={"a": 1}, seeds=[3], device="cpu", data="d" * 64)
    assert p["version"] and p["seeds"] == [3] and p["device"] == "cpu"
    assert p["packages"]["torch"].startswith("2.13") and p["packages"]["numpy"]
    if (SRC.parents[1] / ".git").exists():
        assert len(p["git"]["commit"]) == 40
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_packed_parts_train_identically_whatever_the_shard_layout(tmp_path):
    """The same clips written in shards of 5 and of 16 (other row groups, other file order)
    give the same packed batches, statistics, weights and scores, to the bit."""
    from synth_features import write_split

    from audiosetflow.learning.pack import pack
    from audiosetflow.learning.stream import FeatureStream, index_clips

    runs = []
    for shard_size in (5, 16):
        meta = write_split(tmp_path / f"s{shard_size}", "train", n_pos=14, n_neg=14, seconds=0.5,
                           shard_size=shard_size, seed=3)  # fmt: skip
        order = np.random.default_rng(shard_size).permutation(len(meta))  # another part order
        part = meta.iloc[order].reset_index(drop=True)
        y = np.array([labels == ["/m/04rlf"] for labels in part["labels"]], dtype=np.float32)
        stream = FeatureStream(index_clips(tmp_path / f"s{shard_size}", part["ytid"]), targets=y)
        packed = pack(stream, tmp_path, name=f"p{shard_size}")
        src = packed.source(batch_size=6, shuffle=True, seed=4, buffer_size=8)
        batches = [
            (x.tobytes(), yb.tobytes(), [packed.ytids[i] for i in p])
            for epoch in (0, 1) for x, yb, p in src.batches(epoch)
        ]  # fmt: skip
        stats = packed.channel_stats()
        model, _ = fit(
            lambda stats=stats: AudioCNN(stats[0].shape[1], 1, width=4).set_normalization(*stats),
            src, packed.source(batch_size=5), settings=FitSettings(epochs=2, patience=2, seed=9),
        )  # fmt: skip
        from audiosetflow.learning.trainer import score

        S, _ = score(model, packed.source(batch_size=7).batches(), n=len(packed))
        by_ytid = dict(zip(packed.ytids, S[:, 0].tolist(), strict=True))
        runs.append((batches, [s.tobytes() for s in stats], model.state_dict(), by_ytid))
    (b1, s1, w1, p1), (b2, s2, w2, p2) = runs
    assert b1 == b2 and s1 == s2 and p1 == p2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert len({tuple(y) for _, _, y in b1[:3]}) == 3  # batches differ from one another


def test_packed_source_batches_are_the_records_of_their_positions(tmp_path):
    """Over a part of several blocks, with positions repeated and out of order: in order,
    the batches are the entries sorted by record, cut in batch_size; shuffled, each epoch
    holds every entry once, each row the record of its position with its target."""
    from audiosetflow.learning.pack import BLOCK, PackedPart

    n, shape = 3 * BLOCK + 5, (1, 2, 3)
    records = np.arange(n * 6, dtype=np.float32).reshape(n, *shape)
    (tmp_path / "p.f32").write_bytes(records.tobytes())
    slot = np.random.default_rng(1).permutation(n)  # position -> record
    part = PackedPart(tmp_path / "p.f32", [f"y{i}" for i in range(n)], slot, shape,
                      np.arange(n, dtype=np.float32))  # fmt: skip
    positions = np.concatenate([np.arange(0, n, 2), [3, 3, n - 1]])
    targets = -np.arange(len(positions), dtype=np.float32)
    src = part.source(batch_size=7, positions=positions, targets=targets)
    got = list(src.batches())
    assert [len(x) for x, _, _ in got] == [7] * (len(positions) // 7) + [len(positions) % 7]
    x, y, p = (np.concatenate(v) for v in zip(*got, strict=True))
    order = np.argsort(slot[positions], kind="stable")
    assert np.array_equal(p, positions[order]) and np.array_equal(y, targets[order])
    assert np.array_equal(x, records[slot[p]])
    assert np.array_equal(part.read(5, 9), records[5:9])
    shuffled = part.source(batch_size=7, positions=positions, targets=targets, shuffle=True,
                           seed=2, buffer_size=9)  # fmt: skip
    epochs = []
    for epoch in (0, 1):
        x, y, p = (np.concatenate(v) for v in zip(*shuffled.batches(epoch), strict=True))
        assert sorted(p.tolist()) == sorted(positions.tolist())
        assert np.array_equal(x, records[slot[p]]) and np.array_equal(part.read(0, n), records)
        pairs = sorted(zip(positions.tolist(), targets.tolist(), strict=True))
        assert sorted(zip(p.tolist(), y.tolist(), strict=True)) == pairs
        epochs.append(p.tolist())
    assert epochs[0] != epochs[1] and epochs[0] != sorted(epochs[0])


def test_pack_parts_in_a_child_writes_what_packing_here_writes(tmp_path, monkeypatch):
    """The child process (the training jobs' default) gives the same records and metadata;
    what it raises is raised here as the same exception; a child that dies says so."""
    from synth_features import write_split

    from audiosetflow.learning.pack import pack_parts
    from audiosetflow.learning.stream import FeatureStream, index_clips

    meta = write_split(tmp_path / "f", "train", n_pos=9, n_neg=9, seconds=0.5, shard_size=5, seed=2)
    y = np.arange(len(meta), dtype=np.float32)
    parts = {
        "a": FeatureStream(index_clips(tmp_path / "f", meta["ytid"][::-1]), targets=y[::-1]),
        "b": FeatureStream(index_clips(tmp_path / "f", meta["ytid"][:7]), targets=y[:7]),
    }
    for st in parts.values():  # open files are not pickled
        st._file(0)
    got = {}
    for isolate in (True, False):
        (tmp_path / str(isolate)).mkdir()
        got[isolate] = pack_parts(parts, tmp_path / str(isolate), isolate=isolate)
    assert list(got[True]) == ["a", "b"]
    for k in parts:
        a, b = got[True][k], got[False][k]
        assert a.ytids == b.ytids and a.clip_shape == b.clip_shape
        assert np.array_equal(a.slot, b.slot) and np.array_equal(a.targets, b.targets)
        assert a.path.read_bytes() == b.path.read_bytes() and a.path.parent.name == "True"

    gone = sorted((tmp_path / "f").rglob("*.parquet"))[-1]
    gone.unlink()
    with pytest.raises(FileNotFoundError) as err:
        pack_parts(parts, tmp_path / "True")
    assert gone.name in str(err.value)

    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    with pytest.raises(RuntimeError, match=r"child process ended with status 1 and no result"):
        pack_parts(parts, tmp_path / "True")


def test_score_matrix_holds_every_clip_label_and_model(tmp_path):
    import pandas as pd

    from audiosetflow.learning.evaluation import score_matrix

    seg = {"split": "eval", "start": 0.0, "end": 10.0}
    pd.DataFrame(
        [{"ytid": y, **seg, "target": t, "cnn": s, "dense": 0.5, "logreg": 0.2}
         for y, t, s in (("b", 1, 0.9), ("a", 0, 0.1), ("c", 0, 0.3))]
    ).to_csv(tmp_path / "music.tsv", sep="\t", index=False)  # fmt: skip
    pd.DataFrame(
        [{"ytid": y, **seg, "/m/mu": s, "target:/m/mu": t, "/m/sp": 0.4, "target:/m/sp": 1}
         for y, t, s in (("a", 0, 0.2), ("b", 1, 0.8), ("c", 1, 0.7), ("d", 0, 0.6))]
    ).to_csv(tmp_path / "ml.tsv", sep="\t", index=False)  # fmt: skip
    m = score_matrix([("/m/mu", tmp_path / "music.tsv")], tmp_path / "ml.tsv")
    assert m["ytid"].tolist() == ["a", "b", "c", "d"]
    assert m["score:cnn:/m/mu"].tolist()[:3] == [0.1, 0.9, 0.3] and np.isnan(
        m["score:cnn:/m/mu"][3]
    )
    assert m["score:multilabel:/m/sp"].tolist() == [0.4] * 4
    assert m["target:/m/sp"].tolist() == [1, 1, 1, 1]
    # "c" is Music for the multi-label model (ontology expansion) but not for the binary one
    assert m["target:multilabel:/m/mu"].tolist() == [0, 1, 1, 0]
    # every figure can be recomputed from it: AP of the binary CNN on its clips
    sub = m.dropna(subset=["score:cnn:/m/mu"])
    assert mt.average_precision(sub["target:/m/mu"], sub["score:cnn:/m/mu"]) == 1.0


def test_info_shows_the_provenance_read_from_the_header(tmp_path):
    from audiosetflow.provenance import provenance

    prov = provenance(config={"a": 1}, seeds=[7], device="cpu", data="e" * 64)
    p = _save(tmp_path / "m.pt", provenance=prov, info={"dataset": {"n_test": 9, "n_test_pos": 2}})
    out = subprocess.run(
        [sys.executable, "-m", "audiosetflow", "info", str(p)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("provenance"))
    assert prov["config_hash"][:12] in line and "eeeeeeeeeeee" in line and "seeds [7]" in line
    assert "9 clips (2 positive)" in out.stdout
