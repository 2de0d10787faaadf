"""Command line: ``audiosetflow predict [--models DIR] FILE_OR_FOLDER...``, ``audiosetflow status``,
``audiosetflow failures``, ``audiosetflow info MODEL.pt`` and ``audiosetflow --version``.

``status`` and ``failures`` read the shard records (:mod:`audiosetflow.reporting.status`),
``info`` a checkpoint (:mod:`audiosetflow.modelinfo`); neither runs Snakemake.

Every checkpoint in the models folder is applied to every file. A file is decoded with the
same ffmpeg decoding and feature code as in training (its first ``clip_seconds``, zero-padded
when shorter). Output: a tab-separated table on stdout, one line per file and label.
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
    from .learning.training import load_checkpoint

    path = Path(models)
    files = [path] if path.is_file() else sorted(path.glob("*.pt")) if path.is_dir() else []
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


def _cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from .learning.training import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = str(resolve_device(args.device))
        checkpoints = load_models(args.models, device=device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from .progress import ProgressBar

    errors: list[str] = []
    files = list(_expand(args.files, errors))
    print("file\tlabel\tmid\tprobability\tpredicted", flush=True)
    bar = ProgressBar(len(files), PROG + " predict", unit="files")  # stderr on a terminal
    with bar:
        for f in files:  # one file at a time: results appear as they are computed
            r, e = predict_files([f], checkpoints, device=device)
            for row in r:
                bar.write(
                    f"{row['file']}\t{row['label']}\t{row['mid']}\t{row['probability']:.4f}\t"
                    f"{row['predicted']}",
                    file=sys.stdout,
                )
            for msg in e:
                bar.write(f"{PROG}: error: {msg}", file=sys.stderr)
            errors += e
            bar.update()
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
