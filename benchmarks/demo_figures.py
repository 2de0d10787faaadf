"""The README's demo figures, from a run's metrics files, with the run they come from.

    python benchmarks/demo_figures.py                  # figures of results/ (after ./run demo)
    python benchmarks/demo_figures.py --run            # run the demo first (as ./run demo)
    python benchmarks/demo_figures.py --tiny           # a tiny demo in a temporary folder
                                                       # (CI: the same run, tests/conftest.py)
    python benchmarks/demo_figures.py --real           # and the models on real recordings

Prints a Markdown table per binary model (test AP at the eval split's natural prevalence, the
AP of its 1:1 subset, ROC-AUC, F1 at the stored threshold, the best F1, the threshold, flagged
when it is near 0 or 1) and the multi-label model's mAP, mean ROC-AUC and d', then the run's
provenance: git commit, config hash, package versions, seeds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
#: A stored threshold outside [FLAG, 1 - FLAG] is flagged: the model barely separates the label.
FLAG = 0.05


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


#: The tiny demo's config overlay (``--tiny``; the tests' shared demo run, tests/conftest.py).
TINY: dict = {
    "demo": {"clips_per_class": 10}, "shard_size": 16,
    "training": {"epochs": 2, "patience": 2, "min_epochs": 1,
                 "dense": {"epochs": 5, "patience": 5, "min_epochs": 1}},
    "multilabel": {"min_positives": 5, "epochs": 2},
}  # fmt: skip


def run_demo(workdir: Path, overrides: dict | None = None) -> None:
    """The demo's Snakemake run (``./run demo`` without the report) in ``workdir``."""
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2",
        "--configfile", str(REPO / "config.yaml"), str(REPO / "config/demo.yaml"),
    ]  # fmt: skip
    if overrides:
        extra = workdir / "overrides.yaml"
        extra.write_text(yaml.safe_dump(overrides))
        cmd.append(str(extra))
    subprocess.run(cmd, check=True, cwd=workdir)


def figures(results: Path) -> str:
    """The Markdown figures of a results folder."""
    files = sorted(p for p in (results / "metrics").glob("*.json") if p.name != "multilabel.json")
    if not files:
        raise SystemExit(f"{results}/metrics: no metrics files; run the demo first (--run)")
    lines = [
        "| label | model | test clips (positive) | AP | AP 1:1 subset | ROC-AUC | F1 at threshold"
        " | best F1 | threshold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    prov = None
    for path in files:
        m = json.loads(path.read_text())
        prov = prov or m.get("provenance")
        for kind, res in m["models"].items():
            t, bal = res["test"], res.get("test_balanced") or {}
            thr = t["threshold"]
            flag = " (flagged: near 0 or 1)" if not FLAG <= thr <= 1 - FLAG else ""
            lines.append(
                f"| {m['name']} | {kind} | {t['n']} ({t['n_pos']}) | "
                f"{_f(t['average_precision'])} | {_f(bal.get('average_precision'))} | "
                f"{_f(t['roc_auc'])} | {_f(t['f1_at_threshold'])} | {_f(t['best_f1'])} | "
                f"{thr:.3f}{flag} |"
            )
    ml_path = results / "metrics/multilabel.json"
    if ml_path.exists():
        ml = json.loads(ml_path.read_text())
        lines += [
            "",
            f"Multi-label CNN ({ml['n_labels_scored']} labels, {ml['n_test']} test clips, "
            f"test: {ml['test_source']}): mAP {_f(ml['mAP'])}, mean ROC-AUC "
            f"{_f(ml['mean_auc'])}, d' {_f(ml['d_prime'])}, best epoch {ml['best_epoch']}.",
        ]
    if prov:
        git = prov.get("git") or {}
        pk = prov.get("packages") or {}
        commit = str(git.get("commit", "n/a"))[:12] + (
            " (local changes)" if git.get("dirty") else ""
        )
        lines += [
            "",
            f"Run: commit {commit}, config_hash {str(prov.get('config_hash'))[:12]}, "
            f"seeds {prov.get('seeds')}, device {prov.get('device')}, "
            f"torch {pk.get('torch')}, librosa {pk.get('librosa')}.",
        ]
    return "\n".join(lines)


def on_real(results: Path) -> str:
    """The run's models on real recordings (``tests/realaudio.py``: Debian packages of
    recorded speech, music and sound effects, every clip of both of its splits): each binary
    model's AP and F1 at its stored threshold for its label, and how often the multi-label
    model's top label is the clip's class."""
    sys.path.insert(0, str(REPO / "tests"))
    import numpy as np
    import realaudio

    from audiosetflow.audio.features import load_split
    from audiosetflow.learning.checkpoint import load_checkpoint
    from audiosetflow.learning.metrics import average_precision, f1_at

    corpus = realaudio.real_corpus()
    parts = [load_split(corpus.features[s]) for s in ("train", "eval")]
    lm = np.concatenate([p[0] for p in parts])
    ytids = [y for p in parts for y in p[1]["ytid"]]
    cls = corpus.clips.drop_duplicates("ytid").set_index("ytid").loc[ytids, "cls"].to_numpy()
    lines = [
        "",
        f"On {len(ytids)} real recorded clips (tests/realaudio.py: "
        + ", ".join(f"{c} {int((cls == c).sum())}" for c in sorted(set(cls)))
        + "), never seen in training:",
    ]
    for path in sorted((results / "models").glob("*.pt")):
        ck = load_checkpoint(path)
        if ck.extra_channels:
            continue  # the real corpus keeps log-mel only
        S = ck.predict(lm[:, None])
        if ck.kind == "multilabel":
            names = [lab["name"] for lab in ck.labels]
            top = np.asarray(names)[S.argmax(axis=1)]
            for c in ("Speech", "Music"):
                if c in names:
                    hit = top[cls == c] == c
                    lines.append(
                        f"- multi-label CNN: top label is {c} for {int(hit.sum())} of "
                        f"{len(hit)} {c} clips (others: "
                        + ", ".join(
                            f"{n} {k}"
                            for n, k in zip(*np.unique(top[cls == c], return_counts=True),
                                            strict=True)
                            if n != c
                        )
                        + ")"
                    )  # fmt: skip
            continue
        name = ck.label.get("name", "")
        if name not in set(cls):
            continue
        y = (cls == name).astype(int)
        lines.append(
            f"- {name} CNN: AP {average_precision(y, S):.3f} (chance {y.mean():.3f}), F1 at its "
            f"stored threshold {ck.threshold:.3f}: {f1_at(y, S, ck.threshold):.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--run", action="store_true", help="run the demo first (in --results/..)")
    ap.add_argument("--tiny", action="store_true", help="a tiny demo in a temporary folder")
    ap.add_argument(
        "--real", action="store_true",
        help="also score real recordings (tests/realaudio.py; installs Debian packages)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.tiny:
        with tempfile.TemporaryDirectory(prefix="demo-figures-") as d:
            run_demo(Path(d), TINY)
            print(figures(Path(d) / "results"))
        return
    if args.run:
        run_demo(args.results.resolve().parent)
    print(figures(args.results))
    if args.real:
        print(on_real(args.results))


if __name__ == "__main__":
    main()
