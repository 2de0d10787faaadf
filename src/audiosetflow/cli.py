"""Command line: ``audiosetflow predict [--models DIR] [--model FILE] FILE_OR_FOLDER...``,
``audiosetflow status``, ``audiosetflow failures``, ``audiosetflow info MODEL.pt`` and
``audiosetflow --version``.

``status`` and ``failures`` read the shard records (:mod:`audiosetflow.reporting.status`),
``info`` a checkpoint (:mod:`audiosetflow.modelinfo`); neither runs Snakemake.

When the models folder holds the multi-label model (``multilabel.pt``, or one named with
``--model``), ``predict`` uses it: the whole file is decoded and scored in sliding windows of
the training clips' length (``--hop`` seconds apart), the window scores pooled per label
(``--pool max|mean``), and the ``--top-k`` labels of each file are printed with their
probabilities (``--per-window``: each window's too), as TSV or JSON (``--format``).
Otherwise (or with ``--binary``) every per-label checkpoint of the folder is applied to every
file: a file is decoded with the same ffmpeg decoding and feature code as in training (its
first ``clip_seconds``, zero-padded when shorter), one TSV line per file and label.
A folder stands for every media file under it (:func:`media_files`: recursively, sorted,
hidden files and folders skipped, only :data:`MEDIA_EXTENSIONS`).
A file that cannot be decoded, and a folder without media, give one error line on stderr
naming them; the other files are still predicted and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "main",
    "build_parser",
    "predict_files",
    "predict_multilabel_file",
    "find_multilabel",
    "load_models",
    "media_files",
    "MEDIA_EXTENSIONS",
    "package_version",
]

PROG = "audiosetflow"

#: Suffixes (lower case) of the files a folder given to ``predict`` contributes: audio and video
#: containers ffmpeg reads. Other files of the folder (text, images, tables, checkpoints) are
#: skipped; a file named explicitly is always tried.
MEDIA_EXTENSIONS = frozenset(
    # audio
    ".wav .wave .flac .mp3 .mp2 .m4a .m4b .aac .ogg .oga .opus .spx .wma .aif .aiff .aifc "
    ".caf .au .snd .ac3 .eac3 .dts .amr .awb .ape .wv .mka .weba .mpga .3ga "
    # video
    ".mp4 .m4v .mkv .webm .mov .avi .wmv .asf .flv .f4v .mpg .mpeg .ts .mts .m2ts .3gp .3g2 "
    ".ogv .vob".split()
)
_EXAMPLES = ".wav, .flac, .mp3, .m4a, .ogg, .opus, .webm, .mp4, .mkv"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``audiosetflow status: error: ... (see --help)``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands)."""
    parser = _Parser(
        prog=PROG,
        description="AudioSet segment classifiers: predict labels of media files, see where a "
        "workflow run stands, describe a trained model.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "predict",
        help="probability of every trained label for media files",
        description="Apply every checkpoint in --models to each FILE (any media ffmpeg reads; "
        "its first clip_seconds are used), or to every media file under a folder.",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="audio or video files, or folders: every media file under a folder (recursively, "
        "sorted; hidden files and non-media extensions skipped)",
    )
    p.add_argument(
        "--models",
        default="results/models",
        help="folder of {label}.pt checkpoints, or one .pt file (default: %(default)s)",
    )
    p.add_argument(
        "--device", default="cpu", help="torch device: cpu, cuda or auto (default: %(default)s)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--model",
        default=None,
        metavar="FILE",
        help="the multi-label checkpoint (default: multilabel.pt in --models, when there)",
    )
    p.add_argument(
        "--binary",
        action="store_true",
        help="use the per-label checkpoints even when the multi-label model is there",
    )
    p.add_argument(
        "--top-k",
        type=_positive_int,
        default=5,
        help="multi-label: labels shown per file (or window), best first (default: %(default)s)",
    )
    p.add_argument(
        "--hop",
        type=_positive_float,
        default=5.0,
        help="multi-label: seconds between the starts of two windows (default: %(default)s)",
    )
    p.add_argument(
        "--pool",
        choices=("max", "mean"),
        default="max",
        help="multi-label: a file's score of a label from its windows' (default: %(default)s)",
    )
    p.add_argument(
        "--per-window",
        action="store_true",
        help="multi-label: also print the top labels of every window",
    )
    p.add_argument("--format", choices=("tsv", "json"), default="tsv", help="output (default: tsv)")
    _add_report_parsers(sub)
    return parser


def _add_report_parsers(sub) -> None:
    from .shard import FAILED, STAGES

    results = {
        "default": "results",
        "metavar": "DIR",
        "help": "the workflow's results folder (default: %(default)s)",
    }
    p = sub.add_parser(
        "status",
        help="per split and stage: clips done, failed and left (from the shard records)",
        description="Per split and stage: clips that entered the stage, are done, failed (by "
        "class, with the reasons) and are left (pending), read from the shard records "
        "(results/shards/{split}/shard-N/table.tsv) without running Snakemake. A stage's "
        "'entered' are the clips the stage before finished.",
    )
    p.add_argument("--results", **results)
    p.add_argument(
        "--format",
        choices=("table", "tsv", "json"),
        default="table",
        help="table: aligned, for people (default); tsv, json: for scripts",
    )
    p = sub.add_parser(
        "failures",
        help="the failed YTIDs, one line each (tab-separated, for pipes)",
        description="The failed YTIDs from the shard records, one row each: ytid, split, "
        "shard, stage (the first that did not pass it), status, reason, attempts, runs.",
    )
    p.add_argument("--results", **results)
    p.add_argument(
        "--class", dest="klass", choices=[s.value for s in FAILED], help="only this class"
    )
    p.add_argument(
        "--reason", metavar="TEXT", help="only reasons containing TEXT (case-insensitive)"
    )
    p.add_argument("--stage", choices=STAGES, help="only failures at this stage")
    p.add_argument("--format", choices=("tsv", "json"), default="tsv", help="default: tsv")
    p = sub.add_parser(
        "info",
        help="what a trained checkpoint holds: label, threshold, features, data, metrics",
        description="Label, decision threshold, feature parameters, sample rate, clip length, "
        "extra channels, training data counts and test metrics stored in a checkpoint.",
    )
    p.add_argument("model", metavar="MODEL.pt", help="a checkpoint (results/models/{label}.pt)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="default: text")


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def _positive_float(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def package_version() -> str:
    """The installed package's version; ``audiosetflow.__version__`` when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("audiosetflow")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def load_models(models: str | Path, *, device: str = "cpu") -> list:
    """Load every checkpoint of a folder (sorted by name), or a single ``.pt`` file.

    Raises
    ------
    FileNotFoundError
        If there is no checkpoint.
    """
    from .learning.checkpoint import load_checkpoint
    from .learning.multilabel import MULTILABEL_FILE

    path = Path(models)
    files = [path] if path.is_file() else sorted(path.glob("*.pt")) if path.is_dir() else []
    files = [f for f in files if f.is_file() and (f == path or f.name != MULTILABEL_FILE)]
    if not files:
        raise FileNotFoundError(f"{models}: no model checkpoints (*.pt); train them first")
    return [load_checkpoint(f, device=device) for f in files]


def media_files(folder: str | Path) -> list[Path]:
    """The media files under ``folder``, recursively, sorted by their path within it.

    Hidden files and folders (names starting with ``.``, e.g. the download stage's temporary
    files) and files whose suffix is not in :data:`MEDIA_EXTENSIONS` are skipped; folder links
    are not followed.
    """
    root = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            p = Path(dirpath, name)
            if not name.startswith(".") and p.suffix.lower() in MEDIA_EXTENSIONS and p.is_file():
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _decode(path: str, *, sample_rate: int, clip_seconds: float) -> np.ndarray:
    from .audio.codec import load_clip

    return load_clip(path, sample_rate=sample_rate, clip_seconds=clip_seconds)


def predict_files(
    files: Sequence[str], checkpoints: Sequence, *, device: str = "cpu"
) -> tuple[list[dict], list[str]]:
    """Probabilities of every checkpoint's label for every file.

    Checkpoints sharing decoding and feature parameters share one decoding and feature
    computation per file.

    Returns
    -------
    rows : list of dict
        ``file, label, mid, probability, predicted`` (predicted: probability >= the
        checkpoint's threshold).
    errors : list of str
        One message per file that could not be decoded, naming the file.
    """
    from .audio.codec import AudioError
    from .audio.features import FeatureParams, compute

    groups: dict[str, list] = {}
    for ck in checkpoints:
        key = json.dumps([ck.feature_params, ck.sample_rate, ck.clip_seconds], sort_keys=True)
        groups.setdefault(key, []).append(ck)
    rows, errors = [], []
    for f in files:
        out = []
        try:
            for cks in groups.values():
                ck0 = cks[0]
                if not Path(f).is_file():
                    raise AudioError(f"{f}: no such file")
                y = _decode(f, sample_rate=ck0.sample_rate, clip_seconds=ck0.clip_seconds)
                feats = compute(y, params=FeatureParams(**ck0.feature_params))
                for ck in cks:
                    p = float(ck.predict(ck.input_from_features(feats)[None], device=device)[0])
                    out.append(
                        {
                            "file": f,
                            "label": ck.label.get("name", ""),
                            "mid": ck.label.get("mid", ""),
                            "probability": p,
                            "predicted": int(p >= ck.threshold),
                        }
                    )
        except (AudioError, OSError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(msg if f in msg else f"{f}: {msg}")
            continue
        rows.extend(out)
    return rows, errors


def find_multilabel(models: str | Path, model: str | None = None) -> Path | None:
    """The multi-label checkpoint ``predict`` uses: ``model`` when given, else
    ``multilabel.pt`` in the ``models`` folder (or ``models`` itself when it is one); None
    when there is none."""
    from .learning.multilabel import MULTILABEL_FILE, is_multilabel_checkpoint

    if model:
        return Path(model)
    path = Path(models)
    if path.is_file():
        return path if is_multilabel_checkpoint(path) else None
    cand = path / MULTILABEL_FILE
    return cand if cand.is_file() else None


def predict_multilabel_file(
    path: str,
    checkpoint,
    *,
    hop: float,
    pool: str = "max",
    top_k: int = 5,
    device: str = "cpu",
) -> dict:
    """Top labels of one media file from the multi-label model, pooled over its windows.

    Parameters
    ----------
    path : str
        A media file.
    checkpoint : MultilabelCheckpoint
        :func:`audiosetflow.learning.multilabel.load_multilabel`.
    hop : float
        Seconds between window starts (windows are ``checkpoint.clip_seconds`` long).
    pool : {"max", "mean"}
        The file's score of a label: the largest, or the mean, of its windows' scores.
    top_k : int
        Labels kept per file and per window, most probable first.
    device : str

    Returns
    -------
    dict
        ``file``, ``duration`` (s), ``n_windows``, ``labels`` (top ``top_k``: ``rank, label,
        mid, probability, threshold, predicted``) and ``windows`` (per window ``start, end,
        labels`` likewise).

    Raises
    ------
    audiosetflow.audio.codec.AudioError, OSError
        If the file cannot be decoded.
    """
    from .audio.codec import AudioError

    if not Path(path).is_file():
        raise AudioError(f"{path}: no such file")
    starts, scores, duration = checkpoint.predict_file(path, hop=hop, device=device)
    pooled = scores.max(axis=0) if pool == "max" else scores.mean(axis=0)

    def top(s: np.ndarray) -> list[dict]:
        order = np.argsort(-s, kind="stable")[:top_k]
        return [
            {
                "rank": r + 1,
                "label": checkpoint.labels[j]["name"],
                "mid": checkpoint.labels[j]["mid"],
                "probability": float(s[j]),
                "threshold": float(checkpoint.thresholds[j]),
                "predicted": int(s[j] >= checkpoint.thresholds[j]),
            }
            for r, j in enumerate(order)
        ]

    win = checkpoint.clip_seconds
    return {
        "file": path,
        "duration": round(float(duration), 3),
        "n_windows": len(starts),
        "labels": top(pooled),
        "windows": [
            {"start": float(s), "end": round(min(float(s) + win, duration), 3), "labels": top(sc)}
            for s, sc in zip(starts, scores, strict=True)
        ],
    }


_ML_COLUMNS = "file\twindow\tstart\tend\trank\tlabel\tmid\tprobability\tpredicted"


def _ml_rows(res: dict, *, per_window: bool) -> list[str]:
    f = res["file"]
    out = [
        f"{f}\tall\t0\t{res['duration']:g}\t{r['rank']}\t{r['label']}\t{r['mid']}\t"
        f"{r['probability']:.4f}\t{r['predicted']}"
        for r in res["labels"]
    ]
    if per_window:
        for i, w in enumerate(res["windows"]):
            out += [
                f"{f}\t{i}\t{w['start']:g}\t{w['end']:g}\t{r['rank']}\t{r['label']}\t"
                f"{r['mid']}\t{r['probability']:.4f}\t{r['predicted']}"
                for r in w["labels"]
            ]
    return out


def _cmd_predict_multilabel(args: argparse.Namespace, path: Path, device: str) -> int:
    from .audio.codec import AudioError
    from .learning.multilabel import load_multilabel
    from .progress import ProgressBar

    try:
        ck = load_multilabel(path, device=device)
    except (FileNotFoundError, ValueError) as exc:
        return _error(exc)
    errors: list[str] = []
    files = list(_expand(args.files, errors))
    results = []
    if args.format == "tsv":
        print(_ML_COLUMNS, flush=True)
    bar = ProgressBar(len(files), PROG + " predict", unit="files")
    with bar:
        for f in files:
            try:
                res = predict_multilabel_file(
                    f, ck, hop=args.hop, pool=args.pool, top_k=args.top_k, device=device
                )
            except (AudioError, OSError, ValueError) as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                msg = msg if f in msg else f"{f}: {msg}"
                bar.write(f"{PROG}: error: {msg}", file=sys.stderr)
                errors.append(msg)
                bar.update()
                continue
            if args.format == "tsv":
                for line in _ml_rows(res, per_window=args.per_window):
                    bar.write(line, file=sys.stdout)
            else:
                if not args.per_window:
                    res.pop("windows")
                results.append(res)
            bar.update()
    if args.format == "json":
        doc = {
            "model": str(path),
            "pool": args.pool,
            "hop": args.hop,
            "window": ck.clip_seconds,
            "files": results,
            "errors": errors,
        }
        print(json.dumps(doc, indent=1))
    return 1 if errors else 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from .learning.trainer import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    ml_path = None if args.binary else find_multilabel(args.models, args.model)
    if ml_path is not None:
        try:
            device = str(resolve_device(args.device))
        except RuntimeError as exc:
            return _error(exc)
        return _cmd_predict_multilabel(args, ml_path, device)
    try:
        device = str(resolve_device(args.device))
        checkpoints = load_models(args.models, device=device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from .progress import ProgressBar

    errors: list[str] = []
    files = list(_expand(args.files, errors))
    rows: list[dict] = []
    if args.format == "tsv":
        print("file\tlabel\tmid\tprobability\tpredicted", flush=True)
    bar = ProgressBar(len(files), PROG + " predict", unit="files")  # stderr on a terminal
    with bar:
        for f in files:  # one file at a time: results appear as they are computed
            r, e = predict_files([f], checkpoints, device=device)
            rows += r
            for row in r if args.format == "tsv" else []:
                bar.write(
                    f"{row['file']}\t{row['label']}\t{row['mid']}\t{row['probability']:.4f}\t"
                    f"{row['predicted']}",
                    file=sys.stdout,
                )
            for msg in e:
                bar.write(f"{PROG}: error: {msg}", file=sys.stderr)
            errors += e
            bar.update()
    if args.format == "json":
        print(json.dumps({"files": rows, "errors": errors}, indent=1))
    return 1 if errors else 0


def _expand(args: Sequence[str], errors: list[str]):
    """The files to predict, in order: a folder gives its :func:`media_files` (or an error
    line, appended to ``errors``, when it has none); anything else is taken as a file."""
    for arg in args:
        if not Path(arg).is_dir():
            yield arg
            continue
        files = media_files(arg)
        if not files:
            msg = f"{arg}: no media files in this folder (audio/video suffixes: {_EXAMPLES}, ...)"
            print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)
            errors.append(msg)
        yield from (str(p) for p in files)


def _error(msg: object) -> int:
    text = str(msg).strip().splitlines()
    print(f"{PROG}: error: {text[0] if text else type(msg).__name__}", file=sys.stderr)
    return 2


def _cmd_status(args: argparse.Namespace) -> int:
    from .reporting import status as st

    try:
        tables = st.read_records(args.results, progress=True)
    except ValueError as exc:
        return _error(exc)
    table = st.status(tables)
    if args.format == "tsv":
        sys.stdout.write(table.to_csv(sep="\t", index=False))
    elif args.format == "json":
        print(st.to_json(table))
    else:
        print(st.format_status(args.results, tables, table))
    return 0


def _cmd_failures(args: argparse.Namespace) -> int:
    from .reporting import status as st

    try:
        tables = st.read_records(args.results, progress=True)
    except ValueError as exc:
        return _error(exc)
    table = st.failures(tables, status=args.klass, reason=args.reason, stage=args.stage)
    if args.format == "json":
        print(st.to_json(table))
    else:
        sys.stdout.write(table.to_csv(sep="\t", index=False))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .modelinfo import checkpoint_info, format_info, info_json

    try:
        info = checkpoint_info(args.model)
    except ValueError as exc:
        return _error(exc)
    print(info_json(info) if args.format == "json" else format_info(info))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``audiosetflow`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    commands = {
        "predict": _cmd_predict,
        "status": _cmd_status,
        "failures": _cmd_failures,
        "info": _cmd_info,
    }
    if args.command in commands:
        return commands[args.command](args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
