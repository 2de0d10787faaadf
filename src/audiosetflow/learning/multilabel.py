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

import logging
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
from ..io import read_tsv, write_tsv, write_tsv_parts
from ..ontology import Ontology, expand_labels, ontology_gain
from ..provenance import data_hash, provenance
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint, window_starts
from .evaluation import _plt, _save
from .heap import bounded_heap
from .labelsets import MultilabelSettings
from .metrics import average_precision, best_f1, multilabel_metrics, write_json
from .models import make_cnn
from .pack import PackedPart, pack_folder, pack_parts
from .stream import DEFAULT_BUFFER, ClipIndex, FeatureStream, RowGroupRef, index_parts
from .trainer import FitSettings, fit, resolve_device, score

if TYPE_CHECKING:
    from ..audio.features import FeatureParams
    from .training import TrainSettings

__all__ = [
    "MULTILABEL_FILE",
    "MultilabelCheckpoint",
    "MultilabelOutputs",
    "MultilabelJob",
    "clip_table",
    "label_matrix",
    "split_parts",
    "balanced_positions",
    "resample_index",
    "predict_multilabel",
    "load_multilabel",
    "is_multilabel_checkpoint",
    "window_starts",
    "run_multilabel",
    "compare_table",
    "plot_label_ap",
    "plot_map_history",
]

log = logging.getLogger("audiosetflow.multilabel")

#: The checkpoint's file name in the models folder (``predict`` looks for it).
MULTILABEL_FILE = "multilabel.pt"

_CLIP_COLUMNS = ["ytid", "split", "start", "end", "labels", "status"]


# --- data ------------------------------------------------------------------------------------


def clip_table(features: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """The clips with status ok of a split's shards: ``ytid, split, start, end, labels``.

    Only those columns are read (no frame-level array); a YTID is kept once (its first row
    with status ok, as the stream's index takes it), sorted by YTID so that the seeded parts
    do not depend on the order the files are read in. ``labels`` is a list of MIDs per clip.
    The files are read one row group at a time, in order (a scan of them all at once held
    many in flight: 184 MB at 16,000 clips, of which 59 MB stayed resident).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..audio.features import ok_row_groups, shard_files

    files = shard_files(features)
    pieces = list(ok_row_groups(files, _CLIP_COLUMNS))
    if pieces:
        table = pa.concat_tables(pieces, promote_options="default")
    else:
        schema = pq.read_schema(files[0])
        table = pa.table({c: pa.array([], schema.field(c).type) for c in _CLIP_COLUMNS})
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
    """Seeded train / val / test parts of clip tables (:func:`clip_table`).

    ``test`` None or empty: ``test_fraction`` of the train clips are held out as the test
    part first. Val is ``val_fraction`` of the rest. The clips of a part are those of lowest
    keyed-hash rank (:func:`~.draw.lowest_ranked` of the YTIDs with ``seed``): the parts
    depend on the clips and the seed only, not on the order of the rows. Each part keeps the
    train table's order.

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
    from .draw import lowest_ranked

    ytids = train["ytid"].astype(str).tolist()
    n = len(train)
    rest = np.ones(n, dtype=bool)
    source = "eval"
    if test is None or test.empty:
        k = max(1, int(round(test_fraction * n))) if n > 2 else 0
        held = lowest_ranked(ytids, k, seed=seed, key="multilabel\x1ftest")
        test = train.loc[held]
        rest = ~held
        source = "train holdout"
    idx = np.flatnonzero(rest)
    k = max(1, int(round(val_fraction * len(idx)))) if len(idx) > 1 else 0
    val = np.zeros(n, dtype=bool)
    val[idx[lowest_ranked([ytids[i] for i in idx], k, seed=seed, key="multilabel\x1fval")]] = True
    parts = {
        "train": train.loc[rest & ~val].reset_index(drop=True),
        "val": train.loc[val].reset_index(drop=True),
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


# --- training --------------------------------------------------------------------------------


@dataclass
class _Part:
    index: ClipIndex
    Y: Any  # (n, L) bool: dense, or scipy.sparse for the train part
    table: pd.DataFrame


class _EpochSampler:
    """The multi-label train part as a :class:`~.stream.BatchSource`: each epoch draws
    ``len(part)`` clips (:func:`balanced_positions`, or every clip once) from a generator
    seeded with the seed and the epoch, and reads them from the packed part (:mod:`~.pack`)
    through a shuffle buffer."""

    def __init__(self, part: _Part, packed: PackedPart, *, sampler: str, batch_size: int,
                 seed: int, buffer: int, extra=None):  # fmt: skip
        self.part, self.packed, self.sampler = part, packed, sampler
        self.batch_size, self.seed, self.buffer = int(batch_size), int(seed), int(buffer)
        self.extra = extra  # positions -> more target columns (the teacher's soft targets)

    def __len__(self) -> int:
        return len(self.packed)

    def batches(self, epoch: int = 0):
        n = len(self.packed)
        if self.sampler == "balanced":
            rng = np.random.default_rng([self.seed, 0x4D4C, int(epoch)])
            positions = balanced_positions(self.part.Y, n=n, rng=rng)
        else:
            positions = np.arange(n, dtype=np.int64)
        src = self.packed.source(
            batch_size=self.batch_size, shuffle=True, seed=self.seed, buffer_size=self.buffer,
            positions=positions, targets=self._rows,
        )  # fmt: skip
        return src.batches(epoch)

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        y = _dense_rows(self.part.Y, positions).astype(np.float32)
        return y if self.extra is None else np.concatenate([y, self.extra(positions)], axis=1)


def _scored(part: _Part, packed: PackedPart, *, batch_size: int = 64):
    """A part in canonical order for validation and scoring: batches ``(x, Y, index)``."""
    return packed.source(
        batch_size=batch_size, targets=lambda p: _dense_rows(part.Y, p).astype(np.float32)
    )


def val_sample(ytids: Sequence[str], max_clips: int | None, *, seed: int) -> np.ndarray | None:
    """The positions of the validation clips scored each epoch (early stopping), ascending.

    ``None`` (every clip) when ``max_clips`` is ``None`` or 0 or the part has no more clips;
    else the ``max_clips`` clips of lowest keyed-hash rank of their YTIDs with ``seed``
    (:func:`~.draw.lowest_ranked`): the same clips whatever the order of the rows.
    """
    from .draw import lowest_ranked

    if not max_clips or len(ytids) <= int(max_clips):
        return None
    mask = lowest_ranked(list(ytids), int(max_clips), seed=seed, key="multilabel\x1fval-sample")
    return np.flatnonzero(mask)


class _Sample:
    """A batch source over some positions of a packed part: its batches' index is the place
    of each clip in ``positions`` (what :func:`~.trainer.score` fills in)."""

    def __init__(self, part: _Part, packed: PackedPart, positions: np.ndarray, *,
                 batch_size: int = 64):  # fmt: skip
        self.positions = np.asarray(positions, dtype=np.int64)
        self.src = packed.source(
            batch_size=batch_size, positions=self.positions,
            targets=lambda p: _dense_rows(part.Y, p).astype(np.float32),
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.positions)

    def batches(self, epoch: int = 0):
        for x, y, p in self.src.batches(epoch):
            yield x, y, np.searchsorted(self.positions, p)


def predict_multilabel(
    model: nn.Module, part: _Part, packed: PackedPart, *, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Probabilities (len(part), n_labels) of every clip of a part, read from its packed copy
    in canonical order (:func:`~.trainer.score`)."""
    S, _ = score(model, _scored(part, packed).batches(), n=len(packed), device=device)
    return S


#: A multi-label checkpoint is a :class:`~.checkpoint.Checkpoint` of kind ``multilabel``.
MultilabelCheckpoint = Checkpoint


def load_multilabel(path: str | Path, *, device: torch.device | str = "cpu") -> Checkpoint:
    """:func:`~.checkpoint.load_checkpoint` of a multi-label checkpoint (another kind is a
    :class:`~.checkpoint.CheckpointError`)."""
    return load_checkpoint(path, device=device, kind="multilabel")


def is_multilabel_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a readable checkpoint of kind ``multilabel`` (header only)."""
    from .checkpoint import read_header

    try:
        return read_header(path)["kind"] == "multilabel"
    except InputError:
        return False


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
    config : mapping, optional
        The effective configuration: only its hash is recorded (provenance).
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
    config: Mapping | None = None


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
    bounded_heap()
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
    fs = FitSettings(
        epochs=settings.epochs,
        patience=settings.patience,
        min_epochs=settings.min_epochs,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay if ml.weight_decay is None else ml.weight_decay,
        monitor="ap",
        seed=settings.seed,
        mixup=ml.mixup,
        specaugment=ml.specaugment,
        device=str(device),
    )

    with pack_folder(job.outputs.model) as folder:
        packed = pack_parts({k: FeatureStream(v.index) for k, v in data.items()}, folder)
        logger.info(
            "multilabel: parts packed in canonical order (%.0f MB on disk while training)",
            sum(len(p) * p.clip_bytes for p in packed.values()) / 1e6,
        )
        # the normalisation: a seeded sample of the train clips taken in sorted-YTID order
        canon = np.argsort(np.asarray(packed["train"].ytids, dtype=object), kind="stable")
        sample = np.random.default_rng([settings.seed, 7]).permutation(len(canon))
        stats = packed["train"].channel_stats(canon[np.sort(sample[: ml.norm_clips])])

        m = settings.model
        init_info: dict[str, Any] = {}

        def build() -> nn.Module:
            model = make_cnn(
                m.arch,
                n_labels=len(labels),
                n_rows=job.params.n_mels,
                width=ml.width,
                cnn14_width=m.cnn14_width,
                dropout=ml.dropout,
            )
            if not m.init:
                return model.set_normalization(*stats)
            from .pretrained import freeze_trunk, init_from_panns

            if job.params.frontend != "panns":
                logger.warning(
                    "multilabel: model.init is a PANNs checkpoint but the features come from "
                    "the %s front-end, not the log-mel it was trained on: set "
                    "features.frontend: panns", job.params.frontend,
                )  # fmt: skip
            init_info.update(
                init_from_panns(
                    model,
                    m.init,
                    head=m.init_head,
                    label_indices=[lab.get("index") for lab in labels],
                )
            )
            if m.freeze_trunk:
                init_info["frozen_parameters"] = freeze_trunk(model)
            return model

        distill, extra = None, None
        teacher_info: dict[str, Any] | None = None
        if ml.teacher.path:
            from .teacher import distill_loss, read_teacher

            t = ml.teacher
            targets = read_teacher(
                t.path, ytids=parts["train"]["ytid"].tolist(), labels=labels,
                outputs=t.outputs, index=t.index, folder=folder,
            )  # fmt: skip
            teacher_info = {
                "file": Path(t.path).name, "outputs": t.outputs, "weight": t.weight,
                "temperature": t.temperature, "rows_in_file": targets.n_rows,
                "n_train_with_teacher": targets.n_with, "n_train": len(parts["train"]),
            }  # fmt: skip
            logger.info(
                "multilabel: teacher %s: %d of %d train clips have a row (the others train on "
                "their labels alone); weight %.2f, temperature %.2f",
                teacher_info["file"], targets.n_with, len(parts["train"]), t.weight,
                t.temperature,
            )  # fmt: skip
            distill = distill_loss(len(labels), weight=t.weight, temperature=t.temperature)
            extra = lambda pos: targets.soft_rows(pos, t.temperature)  # noqa: E731

        train = _EpochSampler(
            data["train"], packed["train"], sampler=ml.sampler, batch_size=settings.batch_size,
            seed=settings.seed, buffer=buffer_size, extra=extra,
        )  # fmt: skip
        # early stopping watches a fixed seeded sample of a large val part; the thresholds
        # below and the test metrics use every clip
        monitor = val_sample(parts["val"]["ytid"].astype(str).tolist(), ml.val_max_clips,
                             seed=settings.seed)  # fmt: skip
        if monitor is None:
            val_src = _scored(data["val"], packed["val"])
        else:
            val_src = _Sample(data["val"], packed["val"], monitor)
            logger.info(
                "multilabel: validating each epoch on %d of the %d val clips "
                "(multilabel.val_max_clips)", len(monitor), len(parts["val"]),
            )  # fmt: skip
        model, fitted = fit(build, train, val_src, settings=fs, logger=logger,
                            name="multilabel", loss=distill)  # fmt: skip
        history = fitted.history
        val_s = predict_multilabel(model, data["val"], packed["val"], device=device)
        test_s = predict_multilabel(model, data["test"], packed["test"], device=device)
    thresholds = [best_f1(data["val"].Y[:, j], val_s[:, j])[1] for j in range(len(labels))]
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
        "val_mAP": best["val_ap"],
        "n_labels": metrics["n_labels"],
        "n_labels_scored": metrics["n_labels_scored"],
        "test_source": parts["test"].attrs["test_source"],
        "n_train": len(parts["train"]),
        "n_val": len(parts["val"]),
        "n_val_monitored": len(parts["val"]) if monitor is None else len(monitor),
        "n_test": len(parts["test"]),
        "best_epoch": best["epoch"],
        "sampler": ml.sampler,
        "mixup": ml.mixup,
        "specaugment": asdict(ml.specaugment),
        "arch": settings.model.arch,
        "width": ml.width if settings.model.arch == "small" else settings.model.cnn14_width,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "init": init_info or None,
        "teacher": teacher_info,
        "weight_decay": fs.weight_decay,
        "threshold_rule": "best F1 on val (natural prevalence)",
        "device": str(device),
        "expand_ontology": onto is not None,
        "train_clips_per_s": float(np.median([h["clips_per_s"] for h in history])),
        "train_clips_per_cpu_s": float(np.median([h["clips_per_cpu_s"] for h in history])),
        "seconds": time.perf_counter() - t_start,
        "provenance": provenance(
            config=job.config,
            seeds=[settings.seed],
            device=str(device),
            data=data_hash(
                (r.ytid, r.split, r.labels, part)
                for part, df in parts.items()
                for r in df[["ytid", "split", "labels"]].itertuples(index=False)
            ),
        ),
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
    model: nn.Module,
    labels: list[dict],
    thresholds: list[float],
    test: _Part,
    test_scores: np.ndarray,
) -> None:
    out = job.outputs
    info = {k: result[k] for k in ("mAP", "mean_auc", "d_prime", "test_source", "n_train",
                                   "n_val", "n_test", "best_epoch")}  # fmt: skip
    save_checkpoint(
        out.model,
        model=model.cpu(),
        labels=[
            {"mid": lab["mid"], "name": lab["name"], "slug": lab.get("slug", "")} for lab in labels
        ],
        thresholds=thresholds,
        feature_params=asdict(job.params),
        sample_rate=job.params.sample_rate,
        clip_seconds=job.clip_seconds,
        provenance=result["provenance"],
        info=info,
    )
    table = pd.DataFrame(result["per_label"])
    write_tsv(out.table, table.round(6))
    write_tsv_parts(out.scores, _score_rows(test, test_scores, labels))
    plot_label_ap(
        result["per_label"],
        out.ap_plot,
        title=f"Multi-label CNN, test ({result['test_source']}): mAP {result['mAP']:.3f}",
    )
    plot_map_history(result["history"], out.history_plot)
    write_json(out.metrics, result)


def _score_rows(test: _Part, test_scores: np.ndarray, labels: list[dict], *, rows: int = 1024):
    """The eval split's score matrix as blocks of ``rows`` clips: ``ytid, split, start, end``,
    then per label its score and its target. Built a block at a time: the whole table, in
    float64 and int64 and copied by pandas, took some 25 KB a clip (100 MB at 4,000 clips)."""
    meta = test.table[["ytid", "split", "start", "end"]].reset_index(drop=True)
    for lo in range(0, max(len(meta), 1), rows):
        hi = min(lo + rows, len(meta))
        cols = {}
        for j, lab in enumerate(labels):  # every label: the eval split's score matrix
            cols[lab["mid"]] = np.round(test_scores[lo:hi, j].astype(float), 6)
            cols[f"target:{lab['mid']}"] = np.asarray(test.Y[lo:hi, j]).astype(int).ravel()
        block = pd.DataFrame(cols, index=range(lo, hi))
        yield pd.concat([meta.iloc[lo:hi], block], axis=1)


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
    line saying how many are left out between them (the landing page's sortable table has
    them all). Labels without an AP are not drawn. Names are text: ``$`` starts no TeX.
    """
    plt = _plt()
    with plt.rc_context({"text.parse_math": False}):
        _plot_label_ap(plt, per_label, out, title=title, most=most)


def _plot_label_ap(plt, per_label: Sequence[Mapping], out: str | Path, *, title: str,
                   most: int) -> None:  # fmt: skip
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
    ax.plot(ep, [h["val_ap"] for h in history], "o-", color="#4477aa", label="val mAP")
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
