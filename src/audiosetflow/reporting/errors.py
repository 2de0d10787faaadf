"""A label's worst mistakes on its test set: the false positives with the highest scores and
the false negatives with the lowest, each with its YouTube segment and the trimmed clip as an
audio player, on one HTML page of the report."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..io import atomic_write_text, read_tsv
from ..learning.evaluation import MODEL_TITLES
from ..shard import Layout
from . import html as h

__all__ = [
    "youtube_url",
    "worst_errors",
    "clip_label_names",
    "PREVIEW_MIME",
    "preview_audio",
    "errors_page",
    "write_errors_page",
]

log = logging.getLogger("audiosetflow.errors")


def youtube_url(ytid: str, start: float) -> str:
    """The segment on YouTube: ``https://www.youtube.com/watch?v={ytid}&t={start}s``, the
    start in whole seconds (rounded down)."""
    return f"https://www.youtube.com/watch?v={ytid}&t={int(float(start))}s"


#: The embedded players' format: Ogg Opus, mono, 32 kbit/s (about 40 kB for a 10-s clip, a
#: tenth of the FLAC clip). The Snakemake report shows each page as one ``data:`` URI in a
#: frame, and Chromium leaves a frame blank whose URI is over about 2 MB: with ten 10-s FLAC
#: clips a page was 3.7 MB (a 4.9-MB URI), with ten previews it is 0.5 MB (a 0.67-MB URI;
#: benchmarks/bench_errors_page.py).
PREVIEW_MIME = "audio/ogg"
_PREVIEW_CODECS = (["-c:a", "libopus"], ["-c:a", "opus", "-strict", "experimental"])


def preview_audio(path: str | Path, *, bitrate: str = "32k", timeout: float = 120.0) -> bytes:
    """A small Ogg Opus copy of an audio file for an embedded player (mono, 48 kHz).

    Uses ffmpeg's libopus encoder, or its own Opus encoder where libopus is missing.

    Raises
    ------
    RuntimeError
        When ffmpeg cannot encode the file (with its last line of output).
    """
    from ..tools import ffmpeg_exe

    why = ""
    for codec in _PREVIEW_CODECS:
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
               "-vn", "-ac", "1", "-ar", "48000", *codec, "-b:a", bitrate,
               "-f", "ogg", "pipe:1"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if proc.returncode == 0 and proc.stdout:
            return proc.stdout
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else f"exit status {proc.returncode}"
    raise RuntimeError(f"{path}: ffmpeg could not encode an Opus preview: {why}")


def _player(clip: Path) -> str:
    from ..audio.codec import AudioError
    from ..audio.inplace import clip_exists, clip_file

    if not clip_exists(clip):
        return '<span class="note">clip not found</span>'
    try:  # a clip not kept (audio.keep_clips: false) is cut again from its mirror
        with clip_file(clip) as path:
            return h.audio(preview_audio(path), PREVIEW_MIME)
    except (RuntimeError, OSError, AudioError, subprocess.SubprocessError) as exc:
        log.warning("%s", exc)
        return '<span class="note">clip could not be encoded</span>'


def worst_errors(
    scores: pd.DataFrame, *, model: str, threshold: float, n: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` worst false positives and false negatives of one model.

    A clip is predicted positive when its score is at least ``threshold`` (as in
    :func:`audiosetflow.learning.evaluation.binary_metrics`).

    Parameters
    ----------
    scores : DataFrame
        The scores table of a label (``ytid, split, start, end, target`` and one column per
        model: :func:`audiosetflow.learning.training.scores_table`).
    model : str
        The column whose scores are judged.
    threshold : float
        The model's decision threshold.
    n : int
        At most this many of each.

    Returns
    -------
    false_positives : DataFrame
        Negatives scored at or above ``threshold``, highest score first.
    false_negatives : DataFrame
        Positives scored below ``threshold``, lowest score first.
        Both keep every column of ``scores``; ties are broken by YTID, so the choice is stable.

    Raises
    ------
    KeyError
        If ``scores`` has no column ``model``.
    """
    if model not in scores.columns:
        raise KeyError(f"the scores have no column {model!r} (columns: {list(scores.columns)})")
    s = scores[model].astype(float)
    target = scores["target"].astype(int)
    fp = scores[(target == 0) & (s >= threshold)]
    fn = scores[(target == 1) & (s < threshold)]
    fp = fp.assign(_s=-fp[model].astype(float)).sort_values(["_s", "ytid"], kind="stable")
    fn = fn.assign(_s=fn[model].astype(float)).sort_values(["_s", "ytid"], kind="stable")
    return (
        fp.drop(columns="_s").head(n).reset_index(drop=True),
        fn.drop(columns="_s").head(n).reset_index(drop=True),
    )


def _rows_html(
    rows: pd.DataFrame,
    *,
    model: str,
    models: Sequence[str],
    layout: Layout,
    names: Mapping[str, str],
) -> str:
    out = []
    for i, r in enumerate(rows.itertuples(index=False), 1):
        rec = r._asdict()
        clip = layout.clip(str(rec["split"]), str(rec["ytid"]))
        player = _player(clip)
        url = youtube_url(rec["ytid"], rec["start"])
        out.append(
            {
                "#": i,
                "YTID": f"<code>{h.esc(rec['ytid'])}</code>",
                "split": rec["split"],
                "segment": f"{float(rec['start']):g}–{float(rec['end']):g} s",
                **{MODEL_TITLES.get(m, m): float(rec[m]) for m in models},
                "labels": names.get(str(rec["ytid"]), ""),
                "YouTube": h.link(url, "open at segment"),
                "trimmed clip": player,
            }
        )
    df = pd.DataFrame(out)
    return h.table(
        df,
        raw=["YTID", "YouTube", "trimmed clip"],
        nowrap=["segment", "YouTube", "trimmed clip"],
        numeric=["#", *[MODEL_TITLES.get(m, m) for m in models]],
        formats={MODEL_TITLES.get(m, m): (lambda v: f"{v:.3f}") for m in models},
    )


def errors_page(
    scores: pd.DataFrame,
    *,
    label: str,
    model: str,
    threshold: float,
    layout: Layout,
    names: Mapping[str, str] | None = None,
    test_source: str = "",
    n: int = 5,
) -> str:
    """The HTML page of a label's worst false positives and false negatives (one model).

    Parameters
    ----------
    scores : DataFrame
        The label's test scores (:func:`worst_errors`).
    label : str
        The label's display name.
    model : str
        The model judged (a score column, e.g. ``cnn``); the other models' scores are shown
        beside it.
    threshold : float
        That model's decision threshold (max F1 on validation).
    layout : Layout
        Where the trimmed clips are (:meth:`Layout.clip`); each is embedded as a small Ogg
        Opus ``data:`` URI (:func:`preview_audio`) in an ``<audio controls>`` player.
    names : mapping, optional
        YTID to the clip's AudioSet label names (a column of the tables).
    test_source : str
        Where the test set comes from (``eval`` or ``train holdout``).
    n : int
        At most this many of each kind.

    Returns
    -------
    str
        A complete HTML document.
    """
    names = dict(names or {})
    meta = {"ytid", "split", "start", "end", "target"}
    models = [model, *[c for c in scores.columns if c not in meta and c != model]]
    fp, fn = worst_errors(scores, model=model, threshold=threshold, n=n)
    target = scores["target"].astype(int)
    pred = scores[model].astype(float) >= threshold
    n_fp, n_fn = int(((target == 0) & pred).sum()), int(((target == 1) & ~pred).sum())
    title = MODEL_TITLES.get(model, model)
    src = f" ({h.esc(test_source)})" if test_source else ""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{h.esc(label)}: worst mistakes</title>",
        f"<style>{h.STYLE}</style></head><body>",
        '<div class="asf">',
        f"<h1>{h.esc(label)}: the worst mistakes of the {h.esc(title)}</h1>",
        f"<p>Test set{src}: {len(scores)} clips, {int(target.sum())} with the label. "
        f"A clip counts as {h.esc(label)} when the {h.esc(title)} scores it at least "
        f"<b>{threshold:.3f}</b> (the threshold of maximum F1 on the validation set). At that "
        f"threshold it makes {n_fp} false positive(s) and {n_fn} false negative(s). The other "
        "models' scores of the same clips are shown beside it; <i>labels</i> are the clip's "
        "AudioSet labels. The player plays the trimmed clip the models heard; the link opens "
        "the segment on YouTube.</p>",
    ]
    for kind, rows, total, what in (
        ("False positives", fp, n_fp, f"clips without {label}, highest score first"),
        ("False negatives", fn, n_fn, f"clips with {label}, lowest score first"),
    ):
        shown = f"the {len(rows)} worst of {total}" if total > len(rows) else f"all {total}"
        parts.append(f"<h2>{kind}: {h.esc(shown)} ({h.esc(what)})</h2>")
        if rows.empty:
            parts.append(f"<p>None at threshold {threshold:.3f}.</p>")
        else:
            parts.append(_rows_html(rows, model=model, models=models, layout=layout, names=names))
    parts.append("</div></body></html>")
    return "\n".join(parts) + "\n"


def clip_label_names(features: Sequence[str | Path], ytids: Sequence[str]) -> dict[str, str]:
    """YTID to its AudioSet label names (``"Music, Speech"``), read from the feature shards
    for the given YTIDs only."""
    import pyarrow.dataset as pds

    if not ytids:
        return {}
    dset = pds.dataset([str(f) for f in features], format="parquet")
    t = dset.to_table(
        columns=["ytid", "label_names"], filter=pds.field("ytid").isin(list(map(str, ytids)))
    )
    return {
        str(y): ", ".join(map(str, v or []))
        for y, v in zip(
            t.column("ytid").to_pylist(), t.column("label_names").to_pylist(), strict=True
        )
    }


def write_errors_page(
    *,
    scores: str | Path,
    metrics: str | Path,
    layout: Layout,
    out: str | Path,
    features: Sequence[str | Path] = (),
    model: str = "cnn",
    n: int = 5,
    logger: logging.Logger | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write a label's worst-mistakes page (:func:`errors_page`) from the train rule's outputs.

    Parameters
    ----------
    scores : path
        ``results/metrics/{label}_scores.tsv``.
    metrics : path
        ``results/metrics/{label}.json``: the label's name, the test set's source and the
        model's threshold (``models.{model}.val.threshold``).
    layout : Layout
        Where the trimmed clips are.
    out : path
        The HTML page, written atomically.
    features : sequence of path
        Feature shards, for the clips' AudioSet label names (optional).
    model : str
        The model judged.
    n : int
        At most this many false positives and false negatives.
    logger : logging.Logger, optional

    Returns
    -------
    (false_positives, false_negatives)
        :func:`worst_errors`.
    """
    logger = logger or log
    table = read_tsv(scores)
    m = json.loads(Path(metrics).read_text(encoding="utf-8"))
    threshold = float(m["models"][model]["val"]["threshold"])
    fp, fn = worst_errors(table, model=model, threshold=threshold, n=n)
    names = clip_label_names(features, [*fp["ytid"], *fn["ytid"]]) if features else {}
    label = m.get("name") or m.get("label") or "label"
    page = errors_page(
        table,
        label=label,
        model=model,
        threshold=threshold,
        layout=layout,
        names=names,
        test_source=m.get("dataset", {}).get("test_source", ""),
        n=n,
    )
    atomic_write_text(out, page)
    logger.info(
        "%s: %d false positive(s), %d false negative(s) shown (%s, threshold %.3f)",
        label,
        len(fp),
        len(fn),
        model,
        threshold,
    )
    return fp, fn
