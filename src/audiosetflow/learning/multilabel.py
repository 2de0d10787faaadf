"""One CNN for many labels: a sigmoid output per label, trained by streaming from the shards.

The multi-label model is what the field compares AudioSet models by: one network scores every
label of a clip, and it is evaluated by the mean over labels of the average precision (mAP),
the mean ROC-AUC and d' on the eval split.

Data
    :func:`clip_table` reads only the ``ytid``, ``split``, ``labels`` and ``status`` columns of
    the shards (no frame-level array); :func:`label_matrix` gives the (clips x labels) targets,
    the clips' labels expanded by the ontology when asked. Validation is a seeded random
    ``val_fraction`` of the train split's clips with status ok; the test part is the eval split
    (or, without one, a seeded ``test_fraction`` of train held out first).
Streaming
    The log-mel of the clips is never loaded whole: :func:`~.stream.index_parts` records which
    rows of which row groups hold each clip (a few integers a clip), and each epoch a
    :class:`~.stream.FeatureStream` reads the row groups in a shuffled order through a shuffle
    buffer. The balanced sampler (:func:`balanced_positions`, after PANNs' balanced sampler)
    draws the epoch's clip list from the small in-memory label matrix, so that every label is
    drawn about equally often; :func:`resample_index` turns that list (clips repeated where a
    rare label is drawn many times) into an index of row groups, which the stream reads like
    any other.
Training
    BCE loss on every label, Adam, SpecAugment masks (:func:`spec_augment`) and mixup
    (:func:`mixup`) on training batches only, early stopping on the validation mAP (the best
    epoch's weights kept), every draw seeded. On CUDA the forward pass runs under
    ``torch.autocast`` (bfloat16, no loss scaling needed).
Outputs
    ``results/models/multilabel.pt`` (:func:`save_multilabel`): weights, labels (MID, name),
    feature parameters, input normalisation and the per-label thresholds of maximum F1 on
    validation; :func:`load_multilabel` and :meth:`MultilabelCheckpoint.predict_file` need
    nothing else. ``results/metrics/multilabel.json`` (``mAP``, ``mean_auc``, ``d_prime``,
    ``per_label``, ``history``) and the same per label as a TSV; plots of the per-label AP and
    of mAP per epoch.

See Also
--------
audiosetflow.learning.labelsets : the ``multilabel:`` settings and the label set.
audiosetflow.learning.training : the per-label binary models.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import InputError
from ..io import atomic_path, atomic_write_text, read_tsv, write_tsv
from ..ontology import Ontology, expand_labels, ontology_gain
from . import evaluation
from .evaluation import _plt, _save
from .labelsets import MultilabelSettings, SpecAugmentSettings
from .models import AudioCNN
from .stream import DEFAULT_BUFFER, ClipIndex, FeatureStream, RowGroupRef, index_parts
from .training import TrainSettings, resolve_device, seed_everything

if TYPE_CHECKING:
    from ..audio.features import FeatureParams

__all__ = [
    "MULTILABEL_FORMAT",
    "MULTILABEL_FILE",
    "MultiLabelCNN",
    "MultilabelCheckpoint",
    "MultilabelOutputs",
    "MultilabelJob",
    "average_precision",
    "roc_auc",
    "d_prime",
    "best_f1",
    "f1_at",
    "multilabel_metrics",
    "clip_table",
    "label_matrix",
    "split_parts",
    "balanced_positions",
    "resample_index",
    "spec_augment",
    "mixup",
    "fit_multilabel",
    "predict_multilabel",
    "save_multilabel",
    "load_multilabel",
    "is_multilabel_checkpoint",
    "window_starts",
    "run_multilabel",
    "compare_table",
    "plot_label_ap",
    "plot_map_history",
]

log = logging.getLogger("audiosetflow.multilabel")

#: ``format`` of a multi-label checkpoint (a binary one has ``format_version`` only).
MULTILABEL_FORMAT = "audiosetflow-multilabel-1"
#: The checkpoint's file name in the models folder (``predict`` looks for it).
MULTILABEL_FILE = "multilabel.pt"

_CLIP_COLUMNS = ["ytid", "split", "start", "end", "labels", "status"]


# --- the model -------------------------------------------------------------------------------


class MultiLabelCNN(AudioCNN):
    """:class:`~.models.AudioCNN`'s trunk with one logit per label.

    Parameters
    ----------
    n_labels : int
        Outputs, >= 1.
    n_rows : int
        Mel bands of the input.
    in_channels : int
        Input channels (1: log-mel).
    width : int
        Channels of the first block (then 2x, 4x, 4x): 16 for CPU training, 64 for a GPU.
    dropout : float
        Dropout before the output layer.

    See Also
    --------
    audiosetflow.learning.models.AudioCNN : the binary model with the same trunk.
    """

    def __init__(
        self,
        n_labels: int,
        n_rows: int = 128,
        in_channels: int = 1,
        *,
        width: int = 16,
        dropout: float = 0.3,
    ):
        super().__init__(n_rows, in_channels, width=width, dropout=dropout)
        if n_labels < 1:
            raise ValueError("n_labels must be >= 1")
        self.config = {"n_labels": int(n_labels), **self.config}
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * width, int(n_labels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, n_rows, frames) -> logits (batch, n_labels)."""
        h = self.features(self.normalize(x))
        h = h.mean(dim=2)
        h = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return self.head(h)


# --- metrics ---------------------------------------------------------------------------------


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (sklearn's step-wise area under the PR curve); NaN without a
    positive."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y).astype(int)
    if len(y) == 0 or y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, np.asarray(s, dtype=np.float64)))


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC; NaN when ``y`` has one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(s, dtype=np.float64)))


def d_prime(auc: float) -> float:
    """Sensitivity index ``d' = sqrt(2) * Phi^-1(AUC)`` (AudioSet papers' d-prime).

    The AUC is clipped to ``[1e-6, 1 - 1e-6]`` so that a perfect ranking gives a large finite
    value (6.7) rather than infinity; NaN stays NaN.
    """
    from scipy.stats import norm

    if auc is None or not np.isfinite(auc):
        return float("nan")
    return float(math.sqrt(2.0) * norm.ppf(min(max(float(auc), 1e-6), 1 - 1e-6)))


def best_f1(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """The largest F1 over thresholds, and a threshold giving it (predicted: ``s >= t``): the
    binary models' rule (:func:`audiosetflow.learning.evaluation.best_f1`, the midpoint of the
    gap below the best cut), so every model's thresholds are chosen alike.

    Returns
    -------
    f1, threshold : float
        NaN, 0.5 without a positive (the label is left out of the means).
    """
    y = np.asarray(y).astype(int)
    if len(y) == 0 or y.sum() == 0:
        return float("nan"), 0.5
    return evaluation.best_f1(y, np.asarray(s, dtype=np.float64))


def f1_at(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    """F1 of ``s >= threshold``; NaN without a positive."""
    y = np.asarray(y).astype(bool)
    if y.sum() == 0:
        return float("nan")
    pred = np.asarray(s) >= threshold
    tp = float((pred & y).sum())
    denom = float(pred.sum() + y.sum())
    return 2 * tp / denom if denom else 0.0


def multilabel_metrics(
    Y: np.ndarray,
    S: np.ndarray,
    *,
    labels: Sequence[Mapping[str, str]],
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The field's metrics of a multi-label model on one set of clips.

    Parameters
    ----------
    Y : ndarray of bool or int, shape (n_clips, n_labels)
        Targets.
    S : ndarray of float, shape (n_clips, n_labels)
        Scores (probabilities).
    labels : sequence of mapping
        ``mid`` and ``name`` of each label, in column order.
    thresholds : sequence of float, optional
        Per label, the decision threshold stored with the model (chosen on validation);
        ``f1_at_threshold`` is computed at it.

    Returns
    -------
    dict
        ``mAP`` (mean over labels with a positive of their AP), ``mean_auc`` (mean over labels
        with both classes of the ROC-AUC), ``d_prime`` (:func:`d_prime` of ``mean_auc``),
        ``n_clips``, ``n_labels``, ``n_labels_scored`` (labels with a positive) and
        ``per_label``: one dict per label with ``mid, name, ap, auc, d_prime, n_pos,
        threshold, f1_at_threshold, best_f1, best_threshold``. NaN where undefined.

    See Also
    --------
    average_precision, roc_auc, d_prime, best_f1
    """
    Y = np.asarray(Y).astype(bool)
    S = np.asarray(S, dtype=np.float64)
    if Y.shape != S.shape or Y.ndim != 2 or Y.shape[1] != len(labels):
        raise ValueError(f"targets {Y.shape}, scores {S.shape} and {len(labels)} labels disagree")
    per = []
    for j, lab in enumerate(labels):
        y, s = Y[:, j], S[:, j]
        t = float(thresholds[j]) if thresholds is not None else float("nan")
        bf, bt = best_f1(y, s)
        auc = roc_auc(y, s)
        per.append(
            {
                "mid": lab["mid"],
                "name": lab["name"],
                "ap": average_precision(y, s),
                "auc": auc,
                "d_prime": d_prime(auc),
                "n_pos": int(y.sum()),
                "threshold": t,
                "f1_at_threshold": f1_at(y, s, t) if np.isfinite(t) else float("nan"),
                "best_f1": bf,
                "best_threshold": bt,
            }
        )
    aps = [p["ap"] for p in per if np.isfinite(p["ap"])]
    aucs = [p["auc"] for p in per if np.isfinite(p["auc"])]
    mean_auc = float(np.mean(aucs)) if aucs else float("nan")
    return {
        "mAP": float(np.mean(aps)) if aps else float("nan"),
        "mean_auc": mean_auc,
        "d_prime": d_prime(mean_auc),
        "n_clips": int(len(Y)),
        "n_labels": len(labels),
        "n_labels_scored": len(aps),
        "per_label": per,
    }


# --- data ------------------------------------------------------------------------------------


def clip_table(features: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """The clips with status ok of a split's shards: ``ytid, split, start, end, labels``.

    Only those columns are read (no frame-level array); a YTID is kept once (its first row
    with status ok, as the stream's index takes it), sorted by YTID so that the seeded parts
    do not depend on the order the files are read in. ``labels`` is a list of MIDs per clip.
    """
    import pyarrow.dataset as ds

    from ..audio.features import shard_files

    files = shard_files(features)
    table = ds.dataset([str(f) for f in files], format="parquet").to_table(
        columns=_CLIP_COLUMNS, filter=ds.field("status") == "ok"
    )
    df = pd.DataFrame({c: table.column(c).to_pylist() for c in _CLIP_COLUMNS[:-1]})
    df["labels"] = [list(v or []) for v in df["labels"]]
    df = df.drop_duplicates("ytid").sort_values("ytid", kind="stable")
    return df.reset_index(drop=True).astype({"ytid": str, "split": str})


def label_matrix(
    labels: Sequence[Sequence[str] | str | None],
    mids: Sequence[str],
    *,
    ontology: Ontology | None = None,
    sparse: bool = False,
):
    """Targets: whether each clip has each label (after expanding its labels by the ontology).

    Parameters
    ----------
    labels : sequence
        Each clip's MIDs (a list, or a comma-separated string).
    mids : sequence of str
        The labels, in column order.
    ontology : Ontology, optional
        Expand each clip's MIDs by their ancestors first.
    sparse : bool
        Return a ``scipy.sparse.csr_matrix`` (a few bytes per positive): 2 million clips x
        527 labels would take 1 GB dense.

    Returns
    -------
    ndarray of bool or scipy.sparse.csr_matrix, shape (n_clips, len(mids))
    """
    from scipy.sparse import csr_matrix

    col = {m: j for j, m in enumerate(mids)}
    rows: list[int] = []
    cols: list[int] = []
    for i, lab in enumerate(labels):
        for m in expand_labels(lab, ontology):
            j = col.get(m)
            if j is not None:
                rows.append(i)
                cols.append(j)
    Y = csr_matrix(
        (np.ones(len(rows), dtype=bool), (rows, cols)), shape=(len(labels), len(mids)), dtype=bool
    )
    Y.sum_duplicates()
    return Y if sparse else Y.toarray()


def _dense_rows(Y, rows: np.ndarray) -> np.ndarray:
    """Rows of a dense or CSR label matrix as a dense bool array."""
    sub = Y[rows]
    return sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)


def _column_counts(Y) -> np.ndarray:
    return np.asarray(Y.sum(axis=0)).ravel().astype(np.int64)


def split_parts(
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Seeded random train / val / test parts of clip tables (:func:`clip_table`).

    ``test`` None or empty: ``test_fraction`` of the train clips are held out as the test
    part first. Val is ``val_fraction`` of the rest. Each part keeps the train table's order.

    Returns
    -------
    dict of str to DataFrame
        ``train``, ``val``, ``test``; ``attrs["test_source"]`` is ``"eval"`` or
        ``"train holdout"``.

    Raises
    ------
    audiosetflow.errors.InputError
        If a part would be empty.
    """
    rng = np.random.default_rng([int(seed), 0x6D6C])  # "ml"
    n = len(train)
    order = rng.permutation(n)
    source = "eval"
    if test is None or test.empty:
        k = max(1, int(round(test_fraction * n))) if n > 2 else 0
        test = train.iloc[np.sort(order[:k])]
        order = order[k:]
        source = "train holdout"
    k = max(1, int(round(val_fraction * len(order)))) if len(order) > 1 else 0
    val_idx, tr_idx = np.sort(order[:k]), np.sort(order[k:])
    parts = {
        "train": train.iloc[tr_idx].reset_index(drop=True),
        "val": train.iloc[val_idx].reset_index(drop=True),
        "test": test.reset_index(drop=True),
    }
    for name, df in parts.items():
        if df.empty:
            raise InputError(
                f"multilabel: the {name} part has no clip ({n} clips with status ok in train): "
                "add clips, or raise training.val_fraction / training.test_fraction"
            )
        df.attrs["test_source"] = source
    return parts


# --- the balanced sampler --------------------------------------------------------------------


def balanced_positions(Y: np.ndarray, *, n: int, rng: np.random.Generator) -> np.ndarray:
    """An epoch's clip list in which every label is drawn about equally often.

    After PANNs' balanced sampler: the labels (plus one class of the clips with no label,
    when there are such clips) are visited in a new random order each round; each visit takes
    the next clip of that label's queue, a random permutation of its positives drawn anew
    whenever it runs out. A label with few positives therefore repeats them; a frequent one
    has only part of its clips in an epoch.

    Parameters
    ----------
    Y : ndarray of bool or scipy.sparse matrix, shape (n_clips, n_labels)
        Targets of the training clips.
    n : int
        Clips to draw (the epoch's length).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int64, shape (n,)
        Positions in ``Y``.

    See Also
    --------
    resample_index : the list as row groups to stream.
    """
    if hasattr(Y, "tocsc"):  # scipy.sparse: the positives of each column from its indices
        csc = Y.tocsc()
        pools = [np.sort(csc.indices[csc.indptr[j] : csc.indptr[j + 1]]) for j in range(Y.shape[1])]
        none = np.flatnonzero(np.diff(Y.tocsr().indptr) == 0)
    else:
        Y = np.asarray(Y, dtype=bool)
        pools = [np.flatnonzero(Y[:, j]) for j in range(Y.shape[1])]
        none = np.flatnonzero(~Y.any(axis=1))
    pools = [p for p in pools if len(p)]
    if len(none):
        pools.append(none)
    if not pools:
        raise ValueError("no clips to sample")
    k = len(pools)
    queues = [rng.permutation(p) for p in pools]
    ptr = [0] * k
    out = np.empty(int(n), dtype=np.int64)
    i = 0
    while i < n:
        for c in rng.permutation(k):
            if i >= n:
                break
            if ptr[c] == len(queues[c]):
                queues[c], ptr[c] = rng.permutation(pools[c]), 0
            out[i] = queues[c][ptr[c]]
            ptr[c] += 1
            i += 1
    return out


def resample_index(index: ClipIndex, positions: np.ndarray) -> ClipIndex:
    """The index of a list of the index's clips (repeats allowed), without reading a shard.

    Parameters
    ----------
    index : ClipIndex
        Each clip listed once.
    positions : ndarray of int, shape (m,)
        Positions in ``index``: the new list.

    Returns
    -------
    ClipIndex
        ``m`` clips; position ``i`` is ``index``'s clip ``positions[i]``; its row groups in
        file order, each with its rows ascending (repeated for a repeated clip).
    """
    positions = np.asarray(positions, dtype=np.int64)
    n = len(index)
    g_of = np.full(n, -1, dtype=np.int64)
    r_of = np.zeros(n, dtype=np.int64)
    for gi, ref in enumerate(index.groups):
        g_of[ref.pos] = gi
        r_of[ref.pos] = ref.rows
    if len(positions) and (positions.min() < 0 or positions.max() >= n):
        raise IndexError("positions outside the index")
    g, r = g_of[positions], r_of[positions]
    if (g < 0).any():
        raise ValueError("the index lists a clip in no row group")
    order = np.lexsort((r, g))
    groups = []
    if len(order):
        gs = g[order]
        cuts = np.flatnonzero(np.diff(gs)) + 1
        for chunk in np.split(order, cuts):
            ref = index.groups[int(g[chunk[0]])]
            groups.append(RowGroupRef(ref.file, ref.group, r[chunk], chunk.astype(np.int64)))
    return ClipIndex(
        ytids=tuple(index.ytids[int(p)] for p in positions),
        files=index.files,
        groups=tuple(groups),
        params=index.params,
        n_frames=index.n_frames,
    )


# --- augmentation ----------------------------------------------------------------------------


def spec_augment(
    x: torch.Tensor,
    settings: SpecAugmentSettings,
    *,
    fill: torch.Tensor | float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment: per clip, ``time_masks`` bands of frames and ``freq_masks`` bands of mel
    rows set to ``fill``; each band's width drawn from ``[0, width]`` and its start uniformly.

    Parameters
    ----------
    x : Tensor, shape (B, C, F, T)
    settings : SpecAugmentSettings
    fill : Tensor or float
        Value of masked cells, broadcast against one clip (C, F, 1): the input mean, so that
        masked cells are zero after normalisation.
    generator : torch.Generator, optional
        Source of the draws (on the CPU).

    Returns
    -------
    Tensor
        A new tensor; ``x`` is not changed.
    """
    b, _, f, t = x.shape
    keep = torch.ones(b, 1, f, t, dtype=torch.bool)
    for n_masks, width, axis, size in (
        (settings.time_masks, settings.time_width, 3, t),
        (settings.freq_masks, settings.freq_width, 2, f),
    ):
        if n_masks <= 0 or width <= 0:
            continue
        w = torch.randint(0, min(width, size) + 1, (b, n_masks), generator=generator)
        start = (torch.rand(b, n_masks, generator=generator) * (size - w + 1)).long()
        ar = torch.arange(size)
        band = ((ar >= start[..., None]) & (ar < (start + w)[..., None])).any(dim=1)  # (b, size)
        if axis == 3:
            keep &= ~band[:, None, None, :]
        else:
            keep &= ~band[:, None, :, None]
    keep = keep.to(x.device)
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(keep, x, fill_t)


def mixup(
    x: torch.Tensor, y: torch.Tensor, *, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup of a batch with a permutation of itself: ``lam * a + (1 - lam) * b`` of inputs
    and targets, ``lam ~ Beta(alpha, alpha)`` (one per batch). ``alpha <= 0``: unchanged."""
    if alpha <= 0 or len(x) < 2:
        return x, y
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(len(x)), device=x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


# --- training --------------------------------------------------------------------------------


@dataclass
class _Part:
    index: ClipIndex
    Y: Any  # (n, L) bool: dense, or scipy.sparse for the train part
    table: pd.DataFrame


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


@torch.no_grad()
def predict_multilabel(
    model: nn.Module,
    index: ClipIndex,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> np.ndarray:
    """Probabilities of every label for every clip of an index, streamed in file order.

    Returns
    -------
    ndarray of float32, shape (len(index), n_labels)
    """
    device = torch.device(device)
    model.to(device).eval()
    n_labels = int(model.config["n_labels"])
    out = np.full((len(index), n_labels), np.nan, dtype=np.float32)
    stream = FeatureStream(index, batch_size=batch_size, shuffle=False)
    for b in stream.batches():
        with _autocast(device):
            z = model(torch.from_numpy(b.x).to(device))
        out[b.index] = torch.sigmoid(z.float()).cpu().numpy()
    return out


def _map(Y: np.ndarray, S: np.ndarray) -> float:
    aps = [average_precision(Y[:, j], S[:, j]) for j in range(Y.shape[1])]
    aps = [a for a in aps if np.isfinite(a)]
    return float(np.mean(aps)) if aps else float("nan")


def fit_multilabel(
    model: MultiLabelCNN,
    train: _Part,
    val: _Part,
    *,
    settings: TrainSettings,
    ml: MultilabelSettings,
    device: torch.device | str = "cpu",
    buffer_size: int = DEFAULT_BUFFER,
    logger: logging.Logger | None = None,
) -> list[dict]:
    """Train ``model`` in place; early stopping on the validation mAP, best weights kept.

    Each epoch draws ``len(train)`` clips (:func:`balanced_positions` with the balanced
    sampler, else every clip once) and streams them through a shuffle buffer; SpecAugment
    and mixup apply to training batches only. Stops after ``settings.patience`` epochs
    without a higher val mAP, never before ``settings.min_epochs``.

    Returns
    -------
    list of dict
        Per epoch: ``epoch, train_loss, val_mAP, seconds, clips_per_s`` (training batches
        per wall-clock second), ``clips_per_cpu_s`` (per CPU second of the process, all
        threads together), ``best``.
    """
    logger = logger or log
    device = torch.device(device)
    seed_everything(settings.seed)
    rng = np.random.default_rng([settings.seed, 0x4D4C])
    gen = torch.Generator().manual_seed(settings.seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    n = len(train.index)
    fill = model.mean.detach().to(device)
    history: list[dict] = []
    best, best_state, best_epoch, waited = -math.inf, copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(1, settings.epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        if ml.sampler == "balanced":
            positions = balanced_positions(train.Y, n=n, rng=rng)
        else:
            positions = np.arange(n, dtype=np.int64)
        stream = FeatureStream(
            resample_index(train.index, positions),
            batch_size=settings.batch_size,
            shuffle=True,
            seed=settings.seed,
            buffer_size=buffer_size,
        )
        model.train()
        total, seen = 0.0, 0
        for b in stream.batches(epoch):
            if len(b.x) < 2 and n > 1:
                continue
            xb = torch.from_numpy(b.x).to(device)
            yb = _dense_rows(train.Y, positions[b.index]).astype(np.float32)
            yb = torch.from_numpy(yb).to(device)
            if ml.specaugment.active:
                xb = spec_augment(xb, ml.specaugment, fill=fill, generator=gen)
            xb, yb = mixup(xb, yb, alpha=ml.mixup, rng=rng)
            opt.zero_grad(set_to_none=True)
            with _autocast(device):
                logits = model(xb)
            loss = loss_fn(logits.float(), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
            seen += len(xb)
        train_secs, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        val_map = _map(val.Y, predict_multilabel(model, val.index, device=device))
        secs = time.perf_counter() - t0
        improved = np.isfinite(val_map) and val_map > best + 1e-4
        if improved:
            best, best_epoch, waited = val_map, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "val_mAP": val_map,
                "seconds": secs,
                "clips_per_s": seen / max(train_secs, 1e-9),
                "clips_per_cpu_s": seen / max(train_cpu, 1e-9),
                "best": False,
            }
        )
        logger.info(
            "multilabel epoch %d/%d: train loss %.4f, val mAP %.4f (%.1f s, %.0f clips/s)%s",
            epoch,
            settings.epochs,
            history[-1]["train_loss"],
            val_map,
            secs,
            history[-1]["clips_per_s"],
            " *" if improved else "",
        )
        if waited >= settings.patience and epoch >= settings.min_epochs:
            logger.info("multilabel: early stop after epoch %d (best %d)", epoch, best_epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    for h in history:
        h["best"] = h["epoch"] == best_epoch
    return history


# --- checkpoints -----------------------------------------------------------------------------


@dataclass
class MultilabelCheckpoint:
    """A trained multi-label CNN and all that predicting from a media file needs.

    Attributes
    ----------
    model : MultiLabelCNN
        In eval mode, normalisation included.
    labels : list of dict
        ``mid``, ``name``, ``slug`` per output, in order.
    thresholds : ndarray of float, shape (n_labels,)
        Per label, the threshold of maximum F1 on validation.
    feature_params : dict
        :class:`~audiosetflow.audio.features.FeatureParams` fields.
    sample_rate : int
    clip_seconds : float
        Length of one window (the training clips' length).
    info : dict
        Training data counts and test metrics (``mAP``...).
    path : str
    """

    model: MultiLabelCNN
    labels: list[dict]
    thresholds: np.ndarray
    feature_params: dict
    sample_rate: int
    clip_seconds: float
    info: dict = field(default_factory=dict)
    path: str = ""

    @torch.no_grad()
    def predict(
        self, X: np.ndarray, *, device: torch.device | str = "cpu", batch_size: int = 32
    ) -> np.ndarray:
        """Probabilities (N, n_labels) for inputs (N, 1, n_mels, T)."""
        device = torch.device(device)
        self.model.to(device).eval()
        out = []
        for i in range(0, len(X), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(X[i : i + batch_size], dtype=np.float32))
            out.append(torch.sigmoid(self.model(xb.to(device)).float()).cpu().numpy())
        n = len(self.labels)
        return np.concatenate(out) if out else np.zeros((0, n), dtype=np.float32)

    def predict_file(
        self,
        path: str | Path,
        *,
        hop: float,
        device: torch.device | str = "cpu",
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Scores of every window of a media file.

        The file is decoded as a stream (ffmpeg, the training's sample rate) by
        :func:`audiosetflow.predicting.iter_windows`: windows of ``clip_seconds`` start every
        ``hop`` seconds (:func:`window_starts`), the last one zero-padded where the file ends
        inside it, each scored like a training clip, a batch of windows at a time. The scores
        of all windows are returned; ``audiosetflow predict`` consumes
        :func:`audiosetflow.predicting.score_windows` batch by batch instead.

        Returns
        -------
        starts : ndarray of float, shape (n_windows,)
            Window starts in seconds.
        scores : ndarray of float32, shape (n_windows, n_labels)
        duration : float
            Seconds of audio decoded.
        """
        from ..predicting import iter_windows, score_windows

        sr = self.sample_rate
        windows = iter_windows(path, window=self.clip_seconds, hop=hop, sample_rate=sr)
        parts = list(
            score_windows(
                windows,
                feature_params=self.feature_params,
                to_input=lambda feats: feats["log_mel"][None],
                predict=lambda X: self.predict(X, device=device),
            )
        )
        starts = np.concatenate([s for s, _ in parts])
        scores = np.concatenate([sc for _, sc in parts]).astype(np.float32, copy=False)
        return starts, scores, float(windows.duration)


def window_starts(duration: float, *, window: float, hop: float) -> list[float]:
    """Starts (s) of sliding windows covering ``[0, duration)``: every ``hop`` seconds while
    a window fits, plus one window ending at the end when the last does not reach it; one
    window at 0 for a file shorter than a window."""
    if hop <= 0 or window <= 0:
        raise ValueError("hop and window must be > 0")
    if duration <= window:
        return [0.0]
    last = duration - window
    starts = list(np.arange(0.0, last + 1e-9, hop))
    if last - starts[-1] > 1e-6:
        starts.append(last)
    return [round(float(s), 6) for s in starts]


def save_multilabel(
    path: str | Path,
    *,
    model: MultiLabelCNN,
    labels: Sequence[Mapping[str, str]],
    thresholds: Sequence[float],
    feature_params: Mapping,
    sample_rate: int,
    clip_seconds: float,
    info: Mapping | None = None,
) -> None:
    """Write a multi-label checkpoint atomically (see :class:`MultilabelCheckpoint`)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": MULTILABEL_FORMAT,
        "kind": "multilabel",
        "model_config": dict(model.config),
        "state_dict": state,
        "norm_mean": state["mean"].clone(),
        "norm_std": state["std"].clone(),
        "labels": [dict(lab) for lab in labels],
        "thresholds": [float(t) for t in thresholds],
        "feature_params": json.loads(json.dumps(dict(feature_params))),
        "sample_rate": int(sample_rate),
        "clip_seconds": float(clip_seconds),
        "info": json.loads(json.dumps(dict(info or {}), default=_json_default)),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def is_multilabel_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a readable multi-label checkpoint."""
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable: not one
        return False
    return isinstance(p, dict) and p.get("format") == MULTILABEL_FORMAT


def load_multilabel(
    path: str | Path, *, device: torch.device | str = "cpu"
) -> MultilabelCheckpoint:
    """Read a checkpoint written by :func:`save_multilabel`.

    Raises
    ------
    ValueError
        If the file is not a multi-label checkpoint (one line naming it).
    """
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable checkpoint: {exc}") from None
    if not isinstance(p, dict) or p.get("format") != MULTILABEL_FORMAT:
        raise ValueError(f"{path}: not a multi-label checkpoint ({MULTILABEL_FORMAT})")
    cfg = dict(p["model_config"])
    model = MultiLabelCNN(cfg.pop("n_labels"), cfg.pop("n_rows"), cfg.pop("in_channels"), **cfg)
    model.load_state_dict(p["state_dict"])
    model.to(torch.device(device)).eval()
    return MultilabelCheckpoint(
        model=model,
        labels=[dict(lab) for lab in p["labels"]],
        thresholds=np.asarray(p["thresholds"], dtype=np.float64),
        feature_params=dict(p["feature_params"]),
        sample_rate=int(p["sample_rate"]),
        clip_seconds=float(p["clip_seconds"]),
        info=dict(p.get("info") or {}),
        path=str(path),
    )


# --- the job ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MultilabelOutputs:
    """Files a multi-label training job writes.

    Attributes
    ----------
    model : str
        ``results/models/multilabel.pt``.
    metrics : str
        ``results/metrics/multilabel.json`` (written last).
    table : str
        ``results/metrics/multilabel.tsv``: one row per label.
    scores : str
        ``results/metrics/multilabel_scores.tsv``: per test clip, the score of each label of
        ``compare_mids`` (for :func:`compare_table`).
    ap_plot, history_plot : str
        PNG figures: per-label AP, mAP per epoch.
    """

    model: str
    metrics: str
    table: str
    scores: str
    ap_plot: str
    history_plot: str


@dataclass(frozen=True)
class MultilabelJob:
    """One multi-label training job.

    Attributes
    ----------
    labels : list of dict
        ``mid``, ``name`` (and ``slug``) of each candidate label (:attr:`~.plan.Plan.multilabel`).
    train_features : sequence of path
        The train split's shards.
    eval_features : sequence of path or None
        The eval split's shards; None: the test part is held out of train.
    params : FeatureParams
    outputs : MultilabelOutputs
    clip_seconds : float
    ontology : str or None
        ``ontology.json`` to expand the clips' labels with; None: labels as listed.
    compare_mids : list of str
        Labels with a binary model: their test scores go to ``outputs.scores``.
    val_fraction, test_fraction : float
        ``training.val_fraction`` and ``training.test_fraction`` (:func:`split_parts`).
    """

    labels: list[dict]
    train_features: Sequence[str | Path]
    eval_features: Sequence[str | Path] | None
    params: FeatureParams
    outputs: MultilabelOutputs
    clip_seconds: float = 10.0
    ontology: str | None = None
    compare_mids: list[str] = field(default_factory=list)
    val_fraction: float = 0.2
    test_fraction: float = 0.2


def _system_arrow_pool() -> None:
    """Let pyarrow allocate with the C library's malloc, not its own pool.

    pyarrow's default pool (jemalloc or mimalloc) keeps what the reads of many row groups freed:
    one epoch over 20,000 synthetic clips peaked at 1,441 MiB against 1,107 MiB over 2,000
    (1.30x); with the system allocator 1,270 against 1,078 MiB (1.18x), at the same speed
    (``benchmarks/bench_multilabel.py``, 2 threads, idle machine).
    """
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def run_multilabel(
    job: MultilabelJob,
    settings: TrainSettings,
    ml: MultilabelSettings,
    *,
    threads: int | None = None,
    buffer_size: int = DEFAULT_BUFFER,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Train, evaluate and write the multi-label model.

    Labels with fewer than ``ml.min_positives`` train clips with status ok (after the
    ontology expansion) are left out (listed under ``dropped_labels``). The metrics of the
    test part are :func:`multilabel_metrics` at the per-label thresholds chosen on val.

    Parameters
    ----------
    job : MultilabelJob
    settings : TrainSettings
        ``training:`` (epochs, patience, min_epochs, batch size, learning rate, threads,
        device, val and test fractions come from there) and the seed.
    ml : MultilabelSettings
    threads : int, optional
        Torch CPU threads (default ``settings.threads``).
    buffer_size : int
        Clips of the shuffle buffer.
    logger : logging.Logger, optional

    Returns
    -------
    dict
        The metrics JSON written to ``job.outputs.metrics``.

    Raises
    ------
    audiosetflow.errors.InputError
        Fewer than one label with enough positives, or an empty part.
    """
    from ..ontology import load_ontology

    logger = logger or log
    _system_arrow_pool()
    if ml.epochs:
        settings = replace(settings, epochs=int(ml.epochs))
    torch.set_num_threads(int(threads or settings.threads))
    device = resolve_device(settings.device)
    t_start = time.perf_counter()
    onto = load_ontology(job.ontology) if job.ontology else None
    train_tab = clip_table(job.train_features)
    eval_tab = clip_table(job.eval_features) if job.eval_features else None
    mids = [lab["mid"] for lab in job.labels]
    n_pos = _column_counts(
        label_matrix(train_tab["labels"].tolist(), mids, ontology=onto, sparse=True)
    )
    keep = n_pos >= ml.min_positives
    dropped = [
        {"mid": lab["mid"], "name": lab["name"], "n_pos_train": int(n)}
        for lab, n, k in zip(job.labels, n_pos, keep, strict=True)
        if not k
    ]
    labels = [lab for lab, k in zip(job.labels, keep, strict=True) if k]
    if dropped:
        logger.info(
            "multilabel: %d labels with fewer than %d train positives left out: %s",
            len(dropped),
            ml.min_positives,
            ", ".join(d["name"] for d in dropped[:10]) + (", ..." if len(dropped) > 10 else ""),
        )
    if not labels:
        raise InputError(
            f"multilabel: no label has {ml.min_positives} or more train clips with status ok "
            f"({len(train_tab)} clips): lower multilabel.min_positives or add clips"
        )
    mids = [lab["mid"] for lab in labels]
    parts = split_parts(
        train_tab, eval_tab, val_fraction=job.val_fraction, test_fraction=job.test_fraction,
        seed=settings.seed,
    )  # fmt: skip
    feats = {"train": list(job.train_features)}
    if job.eval_features:
        feats["eval"] = list(job.eval_features)
    idx = index_parts({k: v[["ytid", "split"]] for k, v in parts.items()}, feats)
    data = {
        k: _Part(
            idx[k],
            label_matrix(v["labels"].tolist(), mids, ontology=onto, sparse=k == "train"),
            v,
        )
        for k, v in parts.items()
    }
    logger.info(
        "multilabel: %d labels; train %d, val %d, test %d clips (test: %s); on %s, %d threads",
        len(labels), len(parts["train"]), len(parts["val"]), len(parts["test"]),
        parts["test"].attrs["test_source"], device, torch.get_num_threads(),
    )  # fmt: skip
    model = MultiLabelCNN(len(labels), job.params.n_mels, 1, width=ml.width)
    sub = np.random.default_rng([settings.seed, 7]).permutation(len(data["train"].index))[:2000]
    stats_stream = FeatureStream(resample_index(data["train"].index, np.sort(sub)))
    mean, std = stats_stream.channel_stats()
    model.set_normalization(mean, std)
    history = fit_multilabel(
        model, data["train"], data["val"], settings=settings, ml=ml, device=device,
        buffer_size=buffer_size, logger=logger,
    )  # fmt: skip
    val_s = predict_multilabel(model, data["val"].index, device=device)
    thresholds = [best_f1(data["val"].Y[:, j], val_s[:, j])[1] for j in range(len(labels))]
    test_s = predict_multilabel(model, data["test"].index, device=device)
    metrics = multilabel_metrics(data["test"].Y, test_s, labels=labels, thresholds=thresholds)
    train_pos = _column_counts(data["train"].Y)
    gain = None
    if onto is not None:
        gain = ontology_gain(parts["train"]["labels"].tolist(), mids, onto)
    for j, p in enumerate(metrics["per_label"]):
        p["n_pos_train"] = int(train_pos[j])
        p["n_pos_val"] = int(data["val"].Y[:, j].sum())
        if gain is not None:
            p["n_pos_train_direct"] = int(gain["n_pos_direct"].iloc[j])
            p["gained_by_ontology"] = int(gain["gained"].iloc[j])
    best = next((h for h in history if h["best"]), history[-1])
    result = {
        "model": "multilabel_cnn",
        **{k: metrics[k] for k in ("mAP", "mean_auc", "d_prime")},
        "val_mAP": best["val_mAP"],
        "n_labels": metrics["n_labels"],
        "n_labels_scored": metrics["n_labels_scored"],
        "test_source": parts["test"].attrs["test_source"],
        "n_train": len(parts["train"]),
        "n_val": len(parts["val"]),
        "n_test": len(parts["test"]),
        "best_epoch": best["epoch"],
        "sampler": ml.sampler,
        "mixup": ml.mixup,
        "specaugment": asdict(ml.specaugment),
        "width": ml.width,
        "device": str(device),
        "expand_ontology": onto is not None,
        "train_clips_per_s": float(np.median([h["clips_per_s"] for h in history])),
        "train_clips_per_cpu_s": float(np.median([h["clips_per_cpu_s"] for h in history])),
        "seconds": time.perf_counter() - t_start,
        "per_label": metrics["per_label"],
        "dropped_labels": dropped,
        "history": history,
    }
    _write(job, result, model=model, labels=labels, thresholds=thresholds, test=data["test"],
           test_scores=test_s)  # fmt: skip
    logger.info(
        "multilabel: test mAP %.4f, mean AUC %.4f, d' %.3f over %d labels (%.0f s)",
        result["mAP"], result["mean_auc"], result["d_prime"], result["n_labels_scored"],
        result["seconds"],
    )  # fmt: skip
    return result


def _write(
    job: MultilabelJob,
    result: dict,
    *,
    model: MultiLabelCNN,
    labels: list[dict],
    thresholds: list[float],
    test: _Part,
    test_scores: np.ndarray,
) -> None:
    out = job.outputs
    info = {k: result[k] for k in ("mAP", "mean_auc", "d_prime", "test_source", "n_train",
                                   "n_val", "n_test", "best_epoch")}  # fmt: skip
    save_multilabel(
        out.model,
        model=model.cpu(),
        labels=[
            {"mid": lab["mid"], "name": lab["name"], "slug": lab.get("slug", "")} for lab in labels
        ],
        thresholds=thresholds,
        feature_params=asdict(job.params),
        sample_rate=job.params.sample_rate,
        clip_seconds=job.clip_seconds,
        info=info,
    )
    table = pd.DataFrame(result["per_label"])
    write_tsv(out.table, table.round(6))
    scores = test.table[["ytid", "split", "start", "end"]].copy()
    col = {lab["mid"]: j for j, lab in enumerate(labels)}
    for mid in job.compare_mids:
        if mid in col:
            scores[mid] = np.round(test_scores[:, col[mid]].astype(float), 6)
            scores[f"target:{mid}"] = test.Y[:, col[mid]].astype(int)
    write_tsv(out.scores, scores)
    plot_label_ap(
        result["per_label"],
        out.ap_plot,
        title=f"Multi-label CNN, test ({result['test_source']}): mAP {result['mAP']:.3f}",
    )
    plot_map_history(result["history"], out.history_plot)
    text = json.dumps(result, indent=1, default=_json_default) + "\n"
    atomic_write_text(out.metrics, text.replace("NaN", "null"))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --- comparison with the binary models -------------------------------------------------------


def compare_table(ml_scores: pd.DataFrame, binary: Sequence[Mapping[str, str]]) -> pd.DataFrame:
    """The multi-label model's AP beside each binary model's, on the same test clips.

    Parameters
    ----------
    ml_scores : DataFrame
        ``results/metrics/multilabel_scores.tsv``: ``ytid`` and, per label, a score column
        named by its MID.
    binary : sequence of mapping
        Per label with a binary model: ``slug``, ``mid``, ``name`` and ``scores`` (the path
        of its ``{slug}_scores.tsv``: ``ytid, split, start, end, target`` and one score
        column per model).

    Returns
    -------
    DataFrame
        One row per label: ``slug, name, mid, n_clips`` (the binary test clips the
        multi-label model also scored), ``n_pos``, ``n_binary_test``, ``ap_multilabel`` and
        ``ap_<model>`` per binary model (NaN where the multi-label model lacks the label).
    """
    from .training import SCORES_COLUMNS

    rows = []
    for b in binary:
        sc = read_tsv(b["scores"])
        models = [c for c in sc.columns if c not in SCORES_COLUMNS]
        row: dict[str, Any] = {"slug": b["slug"], "name": b["name"], "mid": b["mid"]}
        if b["mid"] in ml_scores.columns:
            m = sc.merge(ml_scores[["ytid", b["mid"]]], on="ytid", how="inner")
            y = m["target"].to_numpy().astype(int)
            row.update(n_clips=len(m), n_pos=int(y.sum()), n_binary_test=len(sc))
            row["ap_multilabel"] = average_precision(y, m[b["mid"]].to_numpy())
            for k in models:
                row[f"ap_{k}"] = average_precision(y, m[k].to_numpy())
        else:
            y = sc["target"].to_numpy().astype(int)
            row.update(n_clips=0, n_pos=int(y.sum()), n_binary_test=len(sc))
            row["ap_multilabel"] = float("nan")
            for k in models:
                row[f"ap_{k}"] = average_precision(y, sc[k].to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


# --- plots -----------------------------------------------------------------------------------


def plot_label_ap(
    per_label: Sequence[Mapping], out: str | Path, *, title: str = "", most: int = 80
) -> None:
    """Horizontal bars of each label's AP, best at the top, with its number of positives.

    More than ``most`` labels: the ``most // 2`` best and the ``most // 2`` worst, with a
    line saying how many are left out between them. Labels without an AP are not drawn.
    """
    plt = _plt()
    rows = sorted(
        ((p["name"], float(p["ap"]), int(p.get("n_pos", 0))) for p in per_label
         if p.get("ap") is not None and np.isfinite(p["ap"])),
        key=lambda r: -r[1],
    )  # fmt: skip
    skipped = 0
    if len(rows) > most:
        skipped = len(rows) - most
        rows = rows[: most // 2] + [("…", float("nan"), 0)] + rows[-(most // 2) :]
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.24 * max(len(rows), 1)))
    ypos = np.arange(len(rows))[::-1]
    vals = [0.0 if not np.isfinite(r[1]) else r[1] for r in rows]
    ax.barh(ypos, vals, color="#4477aa", height=0.7)
    ax.set_yticks(ypos, [f"{r[0]} (n={r[2]})" if np.isfinite(r[1]) else
                         f"… {skipped} labels left out …" for r in rows], fontsize=8)  # fmt: skip
    for yp, r in zip(ypos, rows, strict=True):
        if np.isfinite(r[1]):
            ax.text(r[1] + 0.01, yp, f"{r[1]:.2f}", va="center", fontsize=7)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("average precision (test)")
    ax.set_title(title or "Average precision per label", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, out)


def plot_map_history(history: Sequence[Mapping], out: str | Path) -> None:
    """Validation mAP and training loss per epoch; the kept epoch marked."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(ep, [h["val_mAP"] for h in history], "o-", color="#4477aa", label="val mAP")
    best = [h for h in history if h.get("best")]
    if best:
        ax.axvline(best[0]["epoch"], color="#999999", ls="--", lw=1, label="kept epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation mAP")
    ax.set_ylim(0, 1)
    ax2 = ax.twinx()
    ax2.plot(ep, [h["train_loss"] for h in history], "s-", color="#ee6677", ms=3,
             label="train loss")  # fmt: skip
    ax2.set_ylabel("training loss (BCE)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Multi-label CNN: mAP per epoch", fontsize=10)
    _save(fig, out)
