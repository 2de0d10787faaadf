"""Command line: ``audiosetflow predict [--models DIR] [--model FILE] FILE_OR_FOLDER...``,
``audiosetflow status``, ``audiosetflow failures``, ``audiosetflow info MODEL.pt`` and
``audiosetflow --version``.

``status`` and ``failures`` read the shard records (:mod:`audiosetflow.reporting.status`),
``info`` a checkpoint (:mod:`audiosetflow.modelinfo`); neither runs Snakemake.

When the models folder holds the multi-label model (``multilabel.pt``, or one named with
``--model``), ``predict`` uses it: the whole file is decoded as a stream and scored in sliding
windows of the training clips' length (``--hop`` seconds apart), a batch of windows at a time
(:mod:`audiosetflow.predicting`: memory does not grow with the file's length), the window
scores pooled per label (``--pool max|mean``), and the ``--top-k`` labels of each file are
printed with their probabilities (``--per-window``: each window's too, as they are scored,
before the file's), as TSV or JSON (``--format``).
Otherwise (or with ``--binary``) every per-label checkpoint of the folder is applied to every
file: a file is decoded with the same ffmpeg decoding and feature code as in training (its
first ``clip_seconds``, zero-padded when shorter), one TSV line per file and label.
A folder stands for every media file under it (:func:`media_files`: recursively, sorted,
hidden files and folders skipped, only :data:`MEDIA_EXTENSIONS`).
A path that does not exist, or a folder without media, is a usage error: one line each on
stderr, nothing predicted, exit status 2. A file that cannot be decoded gives one error line
on stderr naming it; the other files are still predicted and the exit status is 1.
Every text field printed (file names, labels, reasons) goes through
:func:`audiosetflow.textsafe.escape`: control characters, tabs and newlines are escaped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .textsafe import escape

__all__ = [
    "main",
    "build_parser",
    "predict_files",
    "predict_multilabel_file",
    "iter_multilabel_file",
    "find_multilabel",
    "load_models",
    "media_files",
    "MEDIA_EXTENSIONS",
    "package_version",
]

PROG = "audiosetflow"

#: Suffixes (lower case) of the files a folder given to ``predict`` contributes: the audio and
#: video formats ffmpeg decodes, by the extensions its demuxers declare (ffmpeg 5.1 and 9.0,
#: module formats through libopenmpt included), without image, subtitle and raw-video ones.
#: Other files of the folder (text, images, tables, checkpoints) are skipped; a file named
#: explicitly is always tried.
MEDIA_EXTENSIONS = frozenset(
    "." + ext
    for ext in (
        # audio
        "wav wave w64 rf64 bwf flac mp3 mp2 mpa m2a m4a m4b aac adts ogg oga opus spx wma "
        "aif aiff aifc caf au snd sf ircam ac3 eac3 ec3 ac4 dts dtshd thd mlp truehd amr awb "
        "ape mac wv mka weba mpga 3ga tta tak shn ofr ofs mpc mp+ ra ram rm voc vqf vql vqe "
        "gsm g722 722 g723_1 g728 g729 sbc msbc lc3 qoa rka osq laf iamf dfpwm aptx aptxhd "
        "adx adp ads ss2 ast bcstm bfstm brstm binka hca msf musx nsp svag vag xvag xmd wsd "
        "sln al ul nist sph pvf rso sds sdx oma omg aa3 aa aax dss c2 acm mca mtaf fsb genh "
        "rsd paf fap wa way dtk bonk wady xwma daud cdata apc apl "
        # module (tracker) formats, decoded through libopenmpt
        "mod s3m xm it mptm 669 amf ams dbm digi dmf dsm dtm far gdm ice imf j2b m15 mdl med "
        "mmcmp mms mo3 mt2 mtm nst okt plm psm pt36 ptm sfx sfx2 st26 stk stm stp ult "
        "umx wow xpk "
        # video
        "mp4 m4v mkv mk3d webm mov qt avi wmv asf flv f4v mpg mpeg m1v m2v vob ts mts m2ts "
        "3gp 3g2 ogv dv dif nut ism isma ismv xmv viv rmvb divx"
    ).split()
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
        description="Labels of each FILE (any media ffmpeg reads), or of every media file "
        "under a folder. With the multi-label model (multilabel.pt in --models, or --model) "
        "the whole file is scored, in windows of the training clips' length --hop seconds "
        "apart, decoded and scored as a stream (memory does not grow with the file's length); "
        "with --binary (or without that model) every per-label checkpoint in --models is "
        "applied to the file's first clip_seconds. Exit status: 0; 1 when a file could not "
        "be decoded (the others are still predicted); 2 on a usage error (a path that does "
        "not exist, a folder without media files, no model): then nothing is predicted. "
        "Control characters, tabs and newlines in the output are escaped (\\t, \\n, \\x1b).",
        epilog="Media suffixes a folder contributes: "
        + " ".join(sorted(MEDIA_EXTENSIONS))
        + ". A file named on the command line is tried whatever its suffix.",
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
    p = sub.add_parser(
        "clip",
        help="write a clip's FLAC to standard output (kept, or cut again from the mirror)",
        description="Write the FLAC of one workflow clip (results/audio/clips/{split}/{ytid}"
        ".flac) to standard output: the kept file, or, with audio.keep_clips: false, the same "
        "segment cut again from the mirror in place. The lhotse export's recordings of clips "
        "that were not kept run this command.",
    )
    p.add_argument("clip", metavar="CLIP.flac", help="the clip's path under results/audio/clips")
    p = sub.add_parser(
        "embed",
        help="write a CNN's clip embeddings of feature shards to Parquet",
        description="Score every clip with status ok of the feature shards through a CNN "
        "checkpoint (per-label or multi-label, small or CNN14) and write its clip embeddings "
        "(the layer before the output) to a Parquet file: ytid, split, labels, embedding (a "
        "fixed-size float32 list), a batch at a time. The baselines can train on them "
        "(audiosetflow.learning.embeddings.read_embeddings).",
    )
    p.add_argument("model", metavar="MODEL.pt", help="a CNN checkpoint")
    p.add_argument(
        "features",
        nargs="+",
        metavar="SHARDS",
        help="a folder of feature shards (results/features/train) or shard files",
    )
    p.add_argument("--out", required=True, metavar="FILE.parquet", help="the embeddings file")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="default: 32")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


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
            elif name.endswith(".source") and not p.with_suffix(".flac").exists():
                found.append(p.with_suffix(".flac"))  # a clip not kept: read from its mirror
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _binary_clip(path: str, *, sample_rate: int, clip_seconds: float) -> np.ndarray:
    """The first ``clip_seconds`` of a file, zero-padded: the first window of
    :func:`audiosetflow.predicting.iter_windows` with ffmpeg stopping after it."""
    from .predicting import iter_windows

    windows = iter_windows(
        path,
        window=clip_seconds,
        hop=clip_seconds,
        sample_rate=sample_rate,
        limit=clip_seconds,
    )
    for _, y in windows:
        return y
    raise AssertionError("iter_windows yields at least one window")  # pragma: no cover


def predict_files(
    files: Sequence[str], checkpoints: Sequence, *, device: str = "cpu"
) -> tuple[list[dict], list[str]]:
    """Probabilities of every checkpoint's label for every file (its first ``clip_seconds``).

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
    from .audio.inplace import clip_exists, clip_file

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
                if not clip_exists(f):
                    raise AudioError(f"{f}: no such file")
                with clip_file(f) as real:  # a clip not kept: cut again from its mirror
                    y = _binary_clip(
                        str(real), sample_rate=ck0.sample_rate, clip_seconds=ck0.clip_seconds
                    )
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
            errors.append(_file_error(f, exc))
            continue
        rows.extend(out)
    return rows, errors


def _file_error(f: str, exc: BaseException) -> str:
    """``{f}: {reason}``: the file as it was given, and the first line of the exception's
    message after the file's name (which may itself hold a newline)."""
    text = str(exc)
    for name in (str(Path(f).absolute()), f):
        if text.startswith(name):
            text = text[len(name) :].lstrip(":").lstrip()
            break
    lines = text.strip().splitlines()
    return f"{f}: {lines[0] if lines else type(exc).__name__}"


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


def _top(checkpoint, s: np.ndarray, top_k: int) -> list[dict]:
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


def iter_multilabel_file(
    path: str,
    checkpoint,
    *,
    hop: float,
    pool: str = "max",
    top_k: int = 5,
    device: str = "cpu",
):
    """:func:`predict_multilabel_file` as a stream, in memory bounded by one batch of windows.

    Yields ``("window", {start, end, labels})`` per window, as its batch is scored, then
    ``("file", {file, duration, n_windows, labels})`` once the file is decoded to its end.

    Raises
    ------
    audiosetflow.audio.codec.AudioError, OSError
        If the file cannot be decoded (possibly after some windows were yielded).
    """
    from .audio.codec import AudioError
    from .audio.inplace import clip_exists, clip_file

    if not clip_exists(path):
        raise AudioError(f"{path}: no such file")
    with clip_file(path) as real:  # a workflow clip not kept: cut again from its mirror
        yield from _iter_multilabel(
            path, str(real), checkpoint, hop=hop, pool=pool, top_k=top_k, device=device
        )


def _iter_multilabel(path: str, media: str, checkpoint, *, hop, pool, top_k, device):
    """:func:`iter_multilabel_file` of the file ``path``, whose bytes are ``media``."""
    from .predicting import iter_windows, score_windows

    win = checkpoint.clip_seconds
    windows = iter_windows(media, window=win, hop=hop, sample_rate=checkpoint.sample_rate)
    pooled: np.ndarray | None = None
    n = 0
    batches = score_windows(
        windows,
        feature_params=checkpoint.feature_params,
        to_input=checkpoint.input_from_features,
        predict=lambda X: checkpoint.predict(X, device=device),
    )
    for starts, scores in batches:
        scores = scores.astype(np.float64)
        if pooled is None:
            pooled = np.zeros(scores.shape[1])
            if pool == "max":
                pooled[:] = -np.inf
        pooled = np.maximum(pooled, scores.max(axis=0)) if pool == "max" else pooled
        if pool == "mean":
            pooled += scores.sum(axis=0)
        n += len(starts)
        # a window yielded before the end of the file fits in it; after, the duration is known
        dur = windows.duration
        for s, sc in zip(starts, scores, strict=True):
            end = round(float(s) + win, 3) if dur is None else round(min(float(s) + win, dur), 3)
            yield "window", {"start": float(s), "end": end, "labels": (sc, top_k)}
    assert pooled is not None and windows.duration is not None  # at least one window
    duration = round(float(windows.duration), 3)
    if pool == "mean":
        pooled /= n
    yield "file", {"file": path, "duration": duration, "n_windows": n, "labels": (pooled, top_k)}


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
        labels`` likewise). ``audiosetflow predict`` uses :func:`iter_multilabel_file`, which
        does not keep the windows.

    Raises
    ------
    audiosetflow.audio.codec.AudioError, OSError
        If the file cannot be decoded.
    """
    windows = []
    for kind, item in iter_multilabel_file(
        path, checkpoint, hop=hop, pool=pool, top_k=top_k, device=device
    ):
        item = _resolved(item, checkpoint)
        if kind == "window":
            windows.append(item)
        else:
            res = item
    return {**res, "windows": windows}


def _resolved(item: dict, checkpoint) -> dict:
    """``labels`` (scores, top_k) as the top-k list."""
    scores, top_k = item["labels"]
    return {**item, "labels": _top(checkpoint, scores, top_k)}


_ML_COLUMNS = "file\twindow\tstart\tend\trank\tlabel\tmid\tprobability\tpredicted"


def _ml_lines(f: str, window: object, start: float, end: float, labels: list[dict]) -> list[str]:
    return [
        "\t".join(
            (
                escape(f),
                str(window),
                f"{start:g}",
                f"{end:g}",
                str(r["rank"]),
                escape(r["label"]),
                escape(r["mid"]),
                f"{r['probability']:.4f}",
                str(r["predicted"]),
            )
        )  # fmt: skip
        for r in labels
    ]


class _JsonStream:
    """``predict --format json``: one JSON document, written as the files are predicted."""

    def __init__(self, head: dict, out):
        self.out, self.first = out, True
        text = json.dumps(head, indent=1)
        out.write(text[:-2] + ',\n "files": [')

    def file_start(self, path: str) -> None:
        self.out.write(("\n  " if self.first else ",\n  ") + "{" + f'"file": {json.dumps(path)}')
        self.first, self.first_window = False, True

    def window(self, w: dict) -> None:
        if self.first_window:
            self.out.write(', "windows": [')
        self.out.write(("\n   " if self.first_window else ",\n   ") + json.dumps(w))
        self.first_window = False

    def file_end(self, res: dict, *, per_window: bool) -> None:
        if per_window:
            self.out.write("\n  ]" if not self.first_window else ', "windows": []')
        rest = {k: v for k, v in res.items() if k != "file"}
        self.out.write(", " + json.dumps(rest)[1:])
        self.out.flush()

    def close(self, errors: list[str]) -> None:
        end = "\n ]" if not self.first else "]"
        self.out.write(end + f',\n "errors": {json.dumps(errors)}\n}}\n')
        self.out.flush()


def _cmd_predict_multilabel(args: argparse.Namespace, path: Path, device: str) -> int:
    from .audio.codec import AudioError
    from .learning.multilabel import load_multilabel
    from .progress import ProgressBar

    try:
        ck = load_multilabel(path, device=device)
    except (FileNotFoundError, ValueError) as exc:
        return _error(f"{path}: {exc}" if str(path) not in str(exc) else exc)
    files, bad = _expand(args.files)
    if bad:
        return _usage_errors(bad)
    errors: list[str] = []
    js = None
    if args.format == "tsv":
        print(_ML_COLUMNS, flush=True)
    else:
        head = {"model": str(path), "pool": args.pool, "hop": args.hop, "window": ck.clip_seconds}
        js = _JsonStream(head, sys.stdout)
    bar = ProgressBar(len(files), PROG + " predict", unit="files")
    with bar:
        for f in files:
            i = 0
            if js is not None:
                js.file_start(f)
            try:
                for kind, item in iter_multilabel_file(
                    f, ck, hop=args.hop, pool=args.pool, top_k=args.top_k, device=device
                ):
                    item = _resolved(item, ck)
                    if kind == "window":
                        if args.per_window and js is not None:
                            js.window(item)
                        elif args.per_window:
                            lines = _ml_lines(f, i, item["start"], item["end"], item["labels"])
                            bar.write("\n".join(lines), file=sys.stdout)
                        i += 1
                    elif js is not None:
                        js.file_end(item, per_window=args.per_window)
                    else:
                        lines = _ml_lines(f, "all", 0, item["duration"], item["labels"])
                        bar.write("\n".join(lines), file=sys.stdout)
            except (AudioError, OSError, ValueError) as exc:
                msg = _file_error(f, exc)
                if i:
                    msg += f" (after {i} windows)"
                bar.write(f"{PROG}: error: {escape(msg)}", file=sys.stderr)
                errors.append(msg)
                if js is not None:
                    js.file_end({"error": msg}, per_window=args.per_window)
            bar.update()
    if js is not None:
        js.close(errors)
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
        return _error(exc)
    from .progress import ProgressBar

    files, bad = _expand(args.files)
    if bad:
        return _usage_errors(bad)
    errors: list[str] = []
    rows: list[dict] = []
    if args.format == "tsv":
        print("file\tlabel\tmid\tprobability\tpredicted", flush=True)
    bar = ProgressBar(len(files), PROG + " predict", unit="files")  # stderr on a terminal
    with bar:
        for f in files:  # one file at a time: results appear as they are computed
            r, e = predict_files([f], checkpoints, device=device)
            rows += r if args.format == "json" else []
            for row in r if args.format == "tsv" else []:
                bar.write(
                    f"{escape(row['file'])}\t{escape(row['label'])}\t{escape(row['mid'])}\t"
                    f"{row['probability']:.4f}\t{row['predicted']}",
                    file=sys.stdout,
                )
            for msg in e:
                bar.write(f"{PROG}: error: {escape(msg)}", file=sys.stderr)
            errors += e
            bar.update()
    if args.format == "json":
        print(json.dumps({"files": rows, "errors": errors}, indent=1))
    return 1 if errors else 0


def _expand(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """The files to predict, in order, and the arguments that name none.

    A folder gives its :func:`media_files`; a folder without any, and a path that does not
    exist, are an error each (``(files, errors)``: ``predict`` then predicts nothing and exits
    with status 2). Anything else is taken as a file (and may fail to decode: status 1).
    """
    files: list[str] = []
    errors: list[str] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = media_files(arg)
            if not found:
                errors.append(
                    f"{arg}: no media files in this folder (suffixes: {_EXAMPLES}, ...; "
                    "see --help; name a file to try any other)"
                )
            files += [str(f) for f in found]
        elif not os.path.exists(arg) and not _clip_not_kept(arg):
            errors.append(f"{arg}: no such file or folder")
        else:
            files.append(arg)
    return files, errors


def _clip_not_kept(path: str) -> bool:
    """Whether ``path`` names a workflow clip not kept (``audio.keep_clips: false``), which
    ``predict`` reads from its mirror (:mod:`audiosetflow.audio.inplace`)."""
    from .audio.inplace import source_record

    return Path(path).suffix == ".flac" and source_record(path).is_file()


def _usage_errors(messages: Sequence[str]) -> int:
    for msg in messages:
        print(f"{PROG}: error: {escape(msg)}", file=sys.stderr)
    return 2


def _error(msg: object) -> int:
    text = str(msg).strip().splitlines()
    print(f"{PROG}: error: {escape(text[0]) if text else type(msg).__name__}", file=sys.stderr)
    return 2


def _escape_frame(df):
    """``df`` with every string cell escaped (:func:`escape`), in place; returned."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    for col in df.columns:
        if is_object_dtype(df[col]) or is_string_dtype(df[col]):
            df[col] = df[col].map(lambda v: escape(v) if isinstance(v, str) else v)
    return df


def _escaped_tables(tables: list) -> list:
    """Copies of shard records with every text (YTIDs, reasons) escaped for the terminal."""
    import copy

    out = []
    for t in tables:
        e = copy.copy(t)
        e.df = _escape_frame(t.df.copy())
        e.df.index = e.df["ytid"].to_numpy()
        out.append(e)
    return out


def _cmd_status(args: argparse.Namespace) -> int:
    from .reporting import status as st

    try:
        tables = st.read_records(args.results, progress=True)
    except ValueError as exc:
        return _error(exc)
    if args.format == "json":  # JSON escapes by itself
        print(st.to_json(st.status(tables)))
    elif args.format == "tsv":
        sys.stdout.write(_escape_frame(st.status(tables)).to_csv(sep="\t", index=False))
    else:
        safe = _escaped_tables(tables)
        print(st.format_status(escape(args.results), safe, st.status(safe)))
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
        sys.stdout.write(_escape_frame(table).to_csv(sep="\t", index=False))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .modelinfo import checkpoint_info, format_info, info_json

    try:
        info = checkpoint_info(args.model)
    except ValueError as exc:
        return _error(exc)
    print(info_json(info) if args.format == "json" else format_info(info))
    return 0


def _cmd_clip(args: argparse.Namespace) -> int:
    from .audio.codec import AudioError
    from .audio.inplace import clip_file

    try:
        with clip_file(args.clip) as path:
            data = path.read_bytes()
    except (FileNotFoundError, AudioError) as exc:
        return _error(exc)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .learning.embeddings import write_embeddings

    feats = args.features[0] if len(args.features) == 1 else list(args.features)
    try:
        res = write_embeddings(args.model, feats, args.out, batch_size=args.batch_size,
                               device=args.device)  # fmt: skip
    except (InputError, FileNotFoundError, ValueError) as exc:
        return _error(exc)
    print(f"{escape(res['out'])}: {res['clips']} clips, {res['dim']}-dim embeddings "
          f"({res['arch']})")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``audiosetflow`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    commands = {
        "predict": _cmd_predict,
        "status": _cmd_status,
        "failures": _cmd_failures,
        "info": _cmd_info,
        "clip": _cmd_clip,
        "embed": _cmd_embed,
    }
    if args.command in commands:
        return commands[args.command](args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
