"""Per-label AP and mAP of the small CNN, CNN14 from scratch and CNN14 distilled from a
teacher, on the demo corpus and on real recordings, at natural prevalence.

Every model is the multi-label model of the workflow (:func:`run_multilabel`, streamed from
feature shards, balanced sampler, early stopping on the validation mAP) on the same clips;
the test part is the whole eval split (natural prevalence: every eval clip, each label's AP
over all of them). Models:

* ``small``: the small CNN (``model.arch: small``, width 16);
* ``cnn14``: CNN14 from a random start (``model.arch: cnn14``, ``--cnn14-width``);
* ``teacher``: a stronger model trained here: the small CNN at width 32 with twice the epochs
  (its logits on the train clips are written to a Parquet file, one column per MID);
* ``cnn14+kd``: the same CNN14 trained on the labels and the teacher's soft targets
  (``multilabel.teacher``, weight 0.5, temperature 2).

Corpora: the offline demo corpus (synthetic, :func:`audiosetflow.demo.corpus`) and the real
recordings of ``tests/realaudio.py`` (Debian packages, train and eval from different
packages; needs apt-get as root, built once and cached).

Usage: python benchmarks/bench_models.py [--corpus demo real] [--epochs N]
[--cnn14-width W] [--speed] [--tiny]. --speed: also time training steps of a 527-output
CNN14 at full width (64) and reduced widths on random inputs (``--corpus`` with no name: only
that). --tiny: the demo corpus at 2 clips per class, 1 epoch, widths 4
and 2, the small CNN as the teacher and no CNN14 from scratch (checks the path, not the
figures).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from audiosetflow.audio.features import FeatureParams  # noqa: E402
from audiosetflow.learning import multilabel as ML  # noqa: E402
from audiosetflow.learning.labelsets import (  # noqa: E402
    ModelSettings,
    MultilabelSettings,
    SpecAugmentSettings,
    TeacherSettings,
    label_counts,
)
from audiosetflow.learning.training import TrainSettings  # noqa: E402


def demo_corpus(root: Path, clips_per_class: int) -> tuple[dict[str, Path], int]:
    from demo_features import write_demo_features

    from audiosetflow import demo

    spec = demo.DemoSpec(clips_per_class=clips_per_class)
    return write_demo_features(root / "demo", spec), demo.MEDIA_SR


def real_corpus() -> tuple[dict[str, Path], int]:
    import realaudio

    c = realaudio.real_corpus()
    return c.features, realaudio.SAMPLE_RATE


def labels_of(features: dict[str, Path], min_pos: int) -> list[dict]:
    tab = ML.clip_table(features["train"])
    counts = label_counts(tab["labels"].tolist())
    names = {}
    try:
        from audiosetflow import demo

        names = {mid: name for mid, name, _ in demo.CLASSES.values()}
    except (ImportError, AttributeError):
        pass
    names.update({"/m/09x0r": "Speech", "/m/04rlf": "Music", "/m/0c1dj": "Sound effect"})
    return [{"mid": m, "name": names.get(m, m), "slug": f"l{i}"}
            for i, m in enumerate(counts.index) if counts[m] >= min_pos]  # fmt: skip


def teacher_file(model_path: Path, features: Path, out: Path) -> int:
    """The logits of a checkpoint on every train clip, as Parquet: ytid + one column per MID."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audiosetflow.learning.checkpoint import load_checkpoint
    from audiosetflow.learning.stream import FeatureStream, index_clips

    ck = load_checkpoint(model_path, kind="multilabel")
    ytids = ML.clip_table(features)["ytid"].tolist()
    idx = index_clips(features, ytids)
    ys, zs = [], []
    with torch.no_grad():
        for b in FeatureStream(idx, batch_size=32).batches():
            zs.append(ck.model(torch.from_numpy(b.x)).numpy())
            ys += [idx.ytids[int(i)] for i in b.index]
    Z = np.concatenate(zs)
    cols = {lab["mid"]: Z[:, j] for j, lab in enumerate(ck.labels)}
    pq.write_table(pa.table({"ytid": ys, **cols}), out)
    return len(ys)


def run(name: str, features: dict[str, Path], sr: int, labels: list[dict], out: Path,
        settings: TrainSettings, ml: MultilabelSettings) -> dict:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    o = ML.MultilabelOutputs(
        model=str(out / "multilabel.pt"), metrics=str(out / "multilabel.json"),
        table=str(out / "multilabel.tsv"), scores=str(out / "scores.tsv"),
        ap_plot=str(out / "ap.png"), history_plot=str(out / "history.png"),
    )  # fmt: skip
    job = ML.MultilabelJob(
        labels=labels, train_features=sorted(features["train"].glob("*.parquet")),
        eval_features=sorted(features["eval"].glob("*.parquet")),
        params=FeatureParams.from_config({}, sample_rate=sr), outputs=o, clip_seconds=10.0,
    )  # fmt: skip
    t0 = time.perf_counter()
    res = ML.run_multilabel(job, settings, ml, threads=settings.threads, buffer_size=64)
    res["wall_s"] = time.perf_counter() - t0
    res["name"] = name
    return res


def bench(corpus: str, features, sr, args, root: Path) -> list[dict]:
    labels = labels_of(features, args.min_positives)
    base = TrainSettings(epochs=args.epochs, patience=3, min_epochs=min(3, args.epochs),
                         batch_size=16, threads=2, device="cpu", seed=11)  # fmt: skip
    ml = MultilabelSettings(min_positives=args.min_positives, width=args.width,
                            specaugment=SpecAugmentSettings(2, 40, 2, 16))  # fmt: skip
    c14 = ModelSettings(arch="cnn14", cnn14_width=args.cnn14_width)
    out = [run("small", features, sr, labels, root / corpus / "small", base, ml)]
    tdir = root / corpus / "small"  # --tiny: the path only; the small CNN is the teacher
    if not args.tiny:
        out.append(run("cnn14", features, sr, labels, root / corpus / "cnn14",
                       replace(base, model=c14), ml))  # fmt: skip
        tdir = root / corpus / "teacher"
        stronger = replace(base, epochs=2 * args.epochs), replace(ml, width=2 * args.width)
        out.append(run("teacher", features, sr, labels, tdir, *stronger))
    tfile = root / corpus / "teacher_logits.parquet"
    teacher_file(tdir / "multilabel.pt", features["train"], tfile)
    kd = replace(ml, teacher=TeacherSettings(path=str(tfile), weight=0.5, temperature=2.0))
    out.append(run("cnn14+kd", features, sr, labels, root / corpus / "cnn14_kd",
                   replace(base, model=c14), kd))  # fmt: skip
    return out


def step_speed(width: int, n_mels: int, frames: int, *, batch: int = 4, steps: int = 2) -> dict:
    """Training steps (forward, backward, Adam) of a 527-output CNN14 on random inputs:
    clips/s (after one warm-up step) and the parameter count."""
    from audiosetflow.learning.models import Cnn14

    torch.manual_seed(0)
    m = Cnn14(527, n_mels, width=width).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 1, n_mels, frames), (torch.rand(batch, 527) < 0.01).float()

    def step():
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(m(x), y).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    secs = time.perf_counter() - t0
    return {"width": width, "input": f"{n_mels}x{frames}", "batch": batch,
            "params": sum(p.numel() for p in m.parameters()),
            "train_clips_per_s": round(batch * steps / secs, 2)}  # fmt: skip


def table(corpus: str, results: list[dict]) -> pd.DataFrame:
    rows = {}
    for r in results:
        for p in r["per_label"]:
            rows.setdefault(p["name"], {"label": p["name"], "n_pos_eval": p["n_pos"]})
            rows[p["name"]][r["name"]] = p["ap"]
    df = pd.DataFrame(list(rows.values()))
    m = {"label": "mAP", "n_pos_eval": int(results[0]["n_test"])}
    m.update({r["name"]: r["mAP"] for r in results})
    df = pd.concat([df, pd.DataFrame([m])], ignore_index=True)
    df.insert(0, "corpus", corpus)
    return df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", nargs="*", default=["demo", "real"], choices=["demo", "real"])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width", type=int, default=16, help="the small CNN's width")
    ap.add_argument("--cnn14-width", type=int, default=16,
                    help="CNN14's first-block channels (64: PANNs' CNN14)")  # fmt: skip
    ap.add_argument("--clips-per-class", type=int, default=60, help="demo corpus size")
    ap.add_argument("--min-positives", type=int, default=10)
    ap.add_argument("--speed", action="store_true",
                    help="also time CNN14 training steps at full and reduced width")  # fmt: skip
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args(argv)
    if args.tiny:
        args.corpus, args.epochs, args.width, args.cnn14_width = ["demo"], 1, 4, 2
        args.clips_per_class, args.min_positives = 2, 1
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    if args.speed:  # the full CNN14 on this CPU: how slow, per training step
        sizes = [(64, 64, 1001), (64, 128, 431), (16, 128, 431), (8, 128, 431)]
        print("CNN14 training steps on the CPU (2 threads), random inputs, 527 outputs")
        print(pd.DataFrame([step_speed(w, f, t) for w, f, t in sizes]).to_string(index=False))
        if not args.corpus:
            return 0
    tables, speed = [], []
    with tempfile.TemporaryDirectory(prefix="bench_models.") as tmp:
        root = Path(tmp)
        for corpus in args.corpus:
            if corpus == "demo":
                features, sr = demo_corpus(root, args.clips_per_class)
            else:
                try:
                    features, sr = real_corpus()
                except Exception as exc:  # noqa: BLE001 - no apt here: say so, go on
                    print(f"real corpus unavailable: {exc}")
                    continue
            results = bench(corpus, features, sr, args, root)
            tables.append(table(corpus, results))
            for r in results:
                speed.append(
                    {
                        "corpus": corpus,
                        "model": r["name"],
                        "arch": r["arch"],
                        "width": r["width"],
                        "params": r["n_parameters"],
                        "train_clips_per_s": round(r["train_clips_per_s"], 1),
                        "epochs": len(r["history"]),
                        "wall_s": round(r["wall_s"], 1),
                        "teacher_rows": (r["teacher"] or {}).get("n_train_with_teacher"),
                    }
                )
    pd.set_option("display.width", 200)
    print("Per-label AP and mAP on the eval split (natural prevalence: every eval clip)")
    for t in tables:
        print(t.round(3).to_string(index=False))
    print()
    print(pd.DataFrame(speed).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
