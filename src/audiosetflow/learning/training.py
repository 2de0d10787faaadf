"""Training of one label's models: the CNN, the seed-style dense baseline and a logistic
regression, all on the same balanced train part, all scored on the whole test part.

The networks train through the one loop of :mod:`~.trainer`; metrics come from
:mod:`~.metrics`; the CNN is written in the one checkpoint format of :mod:`~.checkpoint`
(``results/models/{label}.pt``: weights, feature parameters, sample rate, clip length, extra
channels, normalisation, the decision threshold, the label and the provenance).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import section
from ..errors import InputError
from ..io import write_tsv
from .checkpoint import save_checkpoint
from .evaluation import plot_confusion, plot_roc_pr, plot_training_curves
from .heap import bounded_heap, release_memory
from .labelsets import ModelSettings
from .metrics import (
    _clean,
    binary_metrics,
    decision_threshold,
    mean_std,
    write_json,
)
from .models import DenseNet, make_cnn
from .stream import DEFAULT_BUFFER, FeatureStream, part_streams
from .trainer import ArrayBatches, FitSettings, fit, resolve_device, score

if TYPE_CHECKING:
    from ..audio.features import FeatureParams
    from .pack import PackedPart

__all__ = [
    "TrainSettings",
    "DenseSettings",
    "fit_logreg",
    "seed_columns",
    "baseline_columns",
    "MODEL_KINDS",
    "SCORED_PARTS",
    "LabelRef",
    "TrainOutputs",
    "TrainJob",
    "LabelData",
    "FittedModel",
    "ModelMetrics",
    "TrainResult",
    "load_features",
    "load_label_data",
    "train_cnn",
    "train_dense",
    "train_logreg",
    "evaluate_model",
    "write_outputs",
    "SCORES_COLUMNS",
    "scores_table",
    "run_train",
]

log = logging.getLogger("audiosetflow.training")


@dataclass(frozen=True)
class DenseSettings:
    """The dense baseline's hyper-parameters (``training.dense``).

    Attributes
    ----------
    hidden : tuple of int
        Hidden layer sizes.
    dropout : float
        Dropout after each hidden layer.
    members : int
        Networks in the ensemble (their probabilities averaged).
    epochs : int
        Epochs (all of them with ``monitor`` ``"none"``).
    monitor : {"none", "loss", "ap"}
        Early stopping on the val part's loss or AP; ``"none"``: every epoch runs and the
        last weights are kept (the val part only chooses the threshold). On a small val part
        that separates perfectly after a few epochs, stopping on the val AP kept an early,
        under-trained epoch (epoch 3 of 103 for Music on real recordings split by package:
        test AP 0.990, F1 0.895), and stopping on the val loss stopped too early on the demo
        corpus (``benchmarks/bench_baselines_real.py``).
    patience, min_epochs : int
        Early stopping's (with ``monitor`` ``"loss"`` or ``"ap"``).
    batch_size : int
    learning_rate, weight_decay : float
    """

    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    members: int = 5
    epochs: int = 100
    monitor: str = "none"
    patience: int = 10
    min_epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class TrainSettings:
    """Training hyper-parameters (``config['training']`` plus the global seed).

    Attributes
    ----------
    epochs : int
        Maximum epochs of the CNN, >= 1.
    patience : int
        Epochs without a lower val loss before stopping, >= 1.
    min_epochs : int
        Early stopping never stops before this epoch, >= 0.
    batch_size : int
        Clips per batch, >= 1.
    learning_rate : float
        Adam's learning rate, > 0.
    weight_decay : float
        Adam's L2 weight decay of the CNNs, >= 0.
    width : int
        Channels of the per-label CNN's first block.
    dropout : float
        Dropout before the CNN's output layer.
    threads : int
        Torch CPU threads of a job.
    extra_channels : tuple of str
        Frame-level features stacked after log-mel as CNN channels
        (:data:`audiosetflow.audio.features.FRAME_FEATURES`).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (:func:`~.trainer.resolve_device`).
    threshold : {"prevalence", "balanced"}
        How a binary model's decision threshold is chosen on the val part
        (:func:`~.metrics.data_threshold`).
    seeds : int
        Trainings of every model, >= 1: seed, seed + 1, ...; metrics give mean and standard
        deviation, the first seed's model is kept.
    dense : DenseSettings
    seed : int
        Seed of every draw (``selection.seed``).
    model : ModelSettings
        The ``model:`` section (the CNN architecture).
    """

    epochs: int = 30
    patience: int = 5
    min_epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    width: int = 16
    dropout: float = 0.3
    threads: int = 2
    extra_channels: tuple[str, ...] = ()
    device: str = "auto"
    threshold: str = "prevalence"
    seeds: int = 1
    dense: DenseSettings = field(default_factory=DenseSettings)
    seed: int = 1234
    model: ModelSettings = field(default_factory=ModelSettings)

    @classmethod
    def from_config(
        cls, training_cfg: Mapping, *, seed: int, model: Mapping | None = None
    ) -> TrainSettings:
        """Build from ``config['training']`` (unknown keys ignored, missing ones from the
        schema: :func:`audiosetflow.config.section`), ``selection.seed`` and
        ``config['model']``."""
        return section(
            cls, training_cfg, "training", seed=int(seed), model=ModelSettings.from_config(model)
        )

    def fit_settings(self, device: torch.device | str, *, seed: int) -> FitSettings:
        """The CNN's :class:`~.trainer.FitSettings` for one seed."""
        return FitSettings(
            epochs=self.epochs,
            patience=self.patience,
            min_epochs=self.min_epochs,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            monitor="loss",
            seed=seed,
            device=str(device),
        )


#: Inverse regularisation strengths :func:`fit_logreg` chooses from.
def fit_logreg(X_train: np.ndarray, y_train: np.ndarray, *, seed: int = 0, C: float = 1.0):
    """scikit-learn's standard linear pipeline: ``StandardScaler`` + ``LogisticRegression``.

    The scaler is the pipeline's first step, fitted on the training examples only, so scoring
    applies the same standardisation. ``C`` stays at scikit-learn's default: on the demo
    corpus, choosing it by 5-fold cross-validation of the training part (average precision over
    11 values from 1e-3 to 1e2) gave a lower test AP than the default for Music (0.634 against
    0.715), so the baseline is the standard implementation itself.

    Parameters
    ----------
    X_train : ndarray, shape (n, k)
    y_train : ndarray, shape (n,)
        0/1 targets, both classes present.
    seed : int
        Seed of the solver.
    C : float
        Inverse L2 regularisation strength, > 0.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``StandardScaler`` then ``LogisticRegression``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed % 2**32)
    )
    return clf.fit(X_train, np.asarray(y_train).astype(int))


# --- the features of a dataset's clips -------------------------------------------------------


def seed_columns(columns: Sequence[str]) -> list[str]:
    """The dense baseline's inputs among summary ``columns``: the seed project's five summary
    features (frame means of MFCCs, spectral centroid, ZCR, chroma and roll-off).

    :data:`audiosetflow.features.SUMMARY_FEATURES` when all present (default feature
    parameters), else the same features picked by name (e.g. another ``n_mfcc``).
    """
    from ..audio.features import SUMMARY_FEATURES

    cols = list(columns)
    if set(SUMMARY_FEATURES) <= set(cols):
        return list(SUMMARY_FEATURES)
    single = {"spectral_centroid_mean", "zcr_mean", "rolloff_mean"}
    picked = [c for c in cols if c in single or c.startswith(("mfcc_mean_", "chroma_mean_"))]
    if not picked:
        raise ValueError("no seed summary columns (mfcc/centroid/zcr/chroma/rolloff means)")
    return picked


def baseline_columns(columns: Sequence[str]) -> list[str]:
    """The baselines' inputs among summary ``columns``: the seed features' frame means
    (:func:`seed_columns`) followed by their frame standard deviations (``mfcc_std_00``, ...,
    ``rolloff_std``): 70 columns with the default parameters.

    The means alone describe a clip's average spectrum, which differs with the speaker, the
    language and the recording chain; how much each feature varies over the clip (speech
    alternates voiced, unvoiced and silent frames, music holds notes) carries over to
    recordings the training set never had. On real recordings split by package
    (``tests/realaudio.py``), scikit-learn's StandardScaler + MLPClassifier(64, 32) reaches a
    test AP of 0.998 for Speech from the 70 columns against 0.961 from the 35 means, and 0.994
    against 0.984 for Music (``benchmarks/bench_baselines_real.py``).

    Raises
    ------
    ValueError
        If there is no seed column, or a mean has no standard deviation column.
    """
    means = seed_columns(columns)
    have = set(columns)
    stds = [c.replace("_mean", "_std", 1) for c in means]
    missing = [c for c in stds if c not in have]
    if missing:
        raise ValueError(f"no standard deviation columns {missing[:3]} of the seed means")
    return means + stds


# --- one label: the job, its data, its models, its result -------------------------------------

#: Networks in the dense baseline's ensemble (:func:`train_dense`).
DENSE_MEMBERS = 5
#: The models trained for every label, in the order they are trained and reported.
MODEL_KINDS: tuple[str, ...] = ("cnn", "dense", "logreg")
#: The parts whose scores are computed (metrics and the per-clip scores table).
SCORED_PARTS: tuple[str, ...] = ("val", "test")


@dataclass(frozen=True)
class LabelRef:
    """The label a training job is for.

    Attributes
    ----------
    slug : str
        File-system safe name (``music``); the metrics' ``label``.
    name : str
        Display name (``Music``).
    mid : str
        Freebase machine id (``/m/04rlf``).
    """

    slug: str = ""
    name: str = ""
    mid: str = ""

    @classmethod
    def from_mapping(cls, label: Mapping[str, str]) -> LabelRef:
        """From ``{"slug", "name", "mid"}`` (the train rule's ``label`` parameter); a missing
        key is empty, other keys are ignored."""
        return cls(
            slug=str(label.get("slug", "")),
            name=str(label.get("name", "")),
            mid=str(label.get("mid", "")),
        )

    @property
    def display(self) -> str:
        """The name of log lines and figure titles: ``name``, else ``slug``."""
        return self.name or self.slug or "label"

    def as_dict(self) -> dict[str, str]:
        """``{"slug", "name", "mid"}``, as stored in the checkpoint."""
        return {"slug": self.slug, "name": self.name, "mid": self.mid}


@dataclass(frozen=True)
class TrainOutputs:
    """The files one training job writes.

    Attributes
    ----------
    model : str or Path
        The CNN checkpoint (:func:`save_checkpoint`), ``results/models/{label}.pt``.
    metrics : str or Path
        The metrics JSON (:meth:`TrainResult.metrics`), ``results/metrics/{label}.json``.
    roc_pr, confusion, curves : str or Path
        PNG figures: ROC and precision-recall curves of the test set, confusion matrices at
        the validation thresholds, and the CNN's and dense baseline's training curves.
    scores : str, Path or None
        The per-clip test scores (:data:`SCORES_COLUMNS` then one column per model of
        :data:`MODEL_KINDS`), ``results/metrics/{label}_scores.tsv``; None: not written.
    """

    model: str | Path
    metrics: str | Path
    roc_pr: str | Path
    confusion: str | Path
    curves: str | Path
    scores: str | Path | None = None


@dataclass(frozen=True)
class TrainJob:
    """What one label's training job reads and writes (its settings are a
    :class:`TrainSettings`).

    Attributes
    ----------
    label : LabelRef
    dataset : str, Path or mapping of str to path
        The label's ``train/val/test.tsv``: their folder, or ``{part: path}``
        (:func:`audiosetflow.learning.datasets.write_dataset`).
    train_features : str, Path or sequence of path
        The training split's feature shards (the files, or their folder).
    eval_features : str, Path, sequence of path or None
        The eval split's feature shards; None when there is no eval split.
    params : audiosetflow.audio.features.FeatureParams
        The parameters the features were computed with (stored in the checkpoint, so that
        the CLI computes the same input from a media file); ``params.sample_rate`` is the
        clips' sample rate.
    outputs : TrainOutputs
    clip_seconds : float
        Clip length in seconds, > 0 (stored in the checkpoint).
    config : mapping, optional
        The workflow's effective configuration: only its hash is recorded (provenance).
    """

    label: LabelRef
    dataset: str | Path | Mapping[str, str | Path]
    train_features: str | Path | Sequence[str | Path]
    eval_features: str | Path | Sequence[str | Path] | None
    params: FeatureParams
    outputs: TrainOutputs
    clip_seconds: float = 10.0
    config: Mapping | None = None


@dataclass(frozen=True)
class LabelData:
    """The inputs of one label's models, per dataset part (``train``, ``val``, ``test``).

    Attributes
    ----------
    parts : dict of str to DataFrame
        The dataset: ``ytid, split, target`` per clip (:func:`~.datasets.read_dataset`), plus
        the segment's ``start, end`` (seconds) once its features are loaded
        (:func:`load_label_data`).
    y : dict of str to ndarray of float32, shape (n,)
        Targets (1: the clip has the label).
    cnn : dict of str to FeatureStream
        CNN inputs, streamed from the shards: log-mel plus the extra channels
        (:func:`stack_channels`), batches of (B, C, n_mels, T).
    summary : dict of str to ndarray of float32, shape (n, k)
        The baselines' inputs: the seed features' means and standard deviations
        (:func:`baseline_columns`).
    test_source : str
        ``"eval"`` or ``"train holdout"``.
    prevalence : float or None
        The label's share of the training split's clips with status ok (where the decision
        threshold is aimed: :func:`~.metrics.decision_threshold`).
    balanced_test : ndarray of bool or None
        The test part's clips of the 1:1 balanced draw (the dataset's ``balanced`` column);
        None when that is every clip.
    """

    parts: dict[str, pd.DataFrame]
    y: dict[str, np.ndarray]
    cnn: dict[str, FeatureStream]
    summary: dict[str, np.ndarray]
    test_source: str
    prevalence: float | None = None
    balanced_test: np.ndarray | None = None


@dataclass
class FittedModel:
    """A model fitted on a label's train part, with its scores on every part.

    Attributes
    ----------
    kind : str
        One of :data:`MODEL_KINDS`.
    model : nn.Module or sklearn Pipeline
    scores : dict of str to ndarray, shape (n,)
        Probability of the label for every clip of the evaluated parts (:data:`SCORED_PARTS`;
        the train part is not scored: nothing uses it, and for the CNN it would be another
        pass over the largest part).
    seconds : float
        Time spent fitting.
    history : list of dict or None
        Per-epoch history of :func:`fit_torch` (None: logistic regression).
    best_epoch : int or None
        The epoch whose weights were kept (None: logistic regression).
    threshold : float or None
        A decision threshold the model chose while fitting (the logistic regression's, from
        out-of-fold scores: :func:`train_logreg`); None: :func:`evaluate_model` chooses it on
        the val part.
    """

    kind: str
    model: object
    scores: dict[str, np.ndarray]
    seconds: float
    history: list[dict] | None = None
    best_epoch: int | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class ModelMetrics:
    """Validation and test metrics of one model, at the threshold chosen on validation.

    Attributes
    ----------
    val, test : dict
        :func:`~.metrics.binary_metrics` of the val part and of the whole test part.
    test_balanced : dict or None
        The same on the test part's 1:1 balanced subset (not the headline).
    seconds : float
        Time spent fitting, rounded to ms.
    best_epoch, epochs_run : int or None
        The epoch kept and the epochs run (None: logistic regression).
    """

    val: dict
    test: dict
    seconds: float
    test_balanced: dict | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    over_seeds: dict | None = None

    @property
    def threshold(self) -> float:
        """The decision threshold chosen on validation (:func:`~.metrics.decision_threshold`)."""
        return self.val["threshold"]

    def fit_info(self) -> dict:
        """The metrics' ``fit`` entry: ``best_epoch, epochs_run, seconds`` (networks) or
        ``seconds`` (logistic regression)."""
        if self.best_epoch is None:
            return {"seconds": self.seconds}
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict:
        """``{"val", "test", "test_balanced", "fit"}`` (and ``over_seeds`` with several
        seeds), as in the metrics JSON."""
        out = {"val": self.val, "test": self.test, "test_balanced": self.test_balanced}
        out["fit"] = self.fit_info()
        if self.over_seeds is not None:
            out["over_seeds"] = self.over_seeds
        return out


@dataclass(frozen=True)
class TrainResult:
    """What one label's training job found (returned by :func:`run_train`).

    Attributes
    ----------
    label : LabelRef
    n_train, n_val, n_test : int
        Clips per dataset part.
    test_source : str
        ``"eval"`` or ``"train holdout"``.
    settings : TrainSettings
    device : str
        Where the CNN was trained (``"cpu"``, ``"cuda"``).
    models : dict of str to ModelMetrics
        Per model kind, in the order of :data:`MODEL_KINDS` (the first seed's).
    provenance : dict
        :func:`audiosetflow.provenance.provenance` of the run.
    n_test_pos : int
        Positives of the test part.
    train_prevalence : float or None
        The label's share of the train split's clips: the rate the ``prevalence`` threshold
        rule aims at (None: unknown, the threshold then maximises F1 on val as it is).
    """

    label: LabelRef
    n_train: int
    n_val: int
    n_test: int
    test_source: str
    settings: TrainSettings
    device: str
    models: dict[str, ModelMetrics]
    provenance: dict = field(default_factory=dict)
    n_test_pos: int = 0
    train_prevalence: float | None = None

    @property
    def best_epochs(self) -> dict[str, int]:
        """Epoch kept per network (``cnn``, ``dense``)."""
        return {k: m.best_epoch for k, m in self.models.items() if m.best_epoch is not None}

    def metrics(self) -> dict:
        """The metrics JSON: ``label, name, mid, dataset, settings, models, provenance``.

        ``dataset``: ``n_train, n_val, n_test, n_test_pos, test_source, train_prevalence``;
        ``settings``: the fields of :class:`TrainSettings` (``device``: the device used);
        ``models``: per kind,
        ``val``, ``test`` (every test clip, natural prevalence), ``test_balanced`` (its 1:1
        subset) (:func:`~.metrics.binary_metrics`), ``fit`` (:meth:`ModelMetrics.fit_info`)
        and, with ``training.seeds`` > 1, ``over_seeds`` (mean and standard deviation of the
        test metrics). Read by :func:`~.evaluation.summarize_metrics`.
        """
        return {
            "label": self.label.slug,
            "name": self.label.name,
            "mid": self.label.mid,
            "dataset": {
                "n_train": self.n_train,
                "n_val": self.n_val,
                "n_test": self.n_test,
                "n_test_pos": self.n_test_pos,
                "test_source": self.test_source,
                "train_prevalence": self.train_prevalence,
            },
            "settings": _clean({**asdict(self.settings), "device": self.device}),
            "models": {k: m.to_dict() for k, m in self.models.items()},
            "provenance": self.provenance,
        }


# --- one label: the steps ---------------------------------------------------------------------


def load_features(
    parts: Mapping[str, pd.DataFrame],
    train_features: str | Path | Sequence[str | Path],
    eval_features: str | Path | Sequence[str | Path] | None,
    *,
    extra_channels: Sequence[str] = (),
) -> tuple[dict[str, FeatureStream], dict[str, np.ndarray]]:
    """CNN input streams and summary features of every clip of every part.

    No split is read whole: one pass over the shards' ``ytid``/``status``/``n_frames``
    columns finds the row groups holding each part's clips (:func:`~.stream.part_streams`).
    The CNN's frame-level inputs are then streamed from those row groups batch by batch
    (:class:`~.stream.FeatureStream`; nothing of them is read here). The baselines' inputs
    are small and read into memory: the seed summary columns (:func:`seed_columns`, 35
    floats per clip with the default parameters) of the parts' clips only, read column by
    column from the same row groups.

    Parameters
    ----------
    parts : mapping of str to DataFrame
        Dataset parts (``ytid, split, target``); ``split`` says which features hold a clip.
    train_features, eval_features : str, Path, sequence of path or None
        Feature shards of the train and eval splits (eval: None when there is none).
    extra_channels : sequence of str
        Frame-level features stacked after log-mel (:func:`stack_channels`).

    Returns
    -------
    cnn : dict of str to FeatureStream
        Per part, unshuffled, targets from the part's ``target`` column; its batches are
        (B, 1 + len(extra_channels), n_mels, T) float32.
    summary : dict of str to ndarray of float32, shape (n, k)
        The seed summary columns, in the part's order.

    Each part's DataFrame gets the columns ``start`` and ``end`` (its clips' segments, in
    seconds) when it has none.

    Raises
    ------
    audiosetflow.errors.InputError
        If a clip of a part has no features with status ``ok`` (a stale dataset).
    """
    from ..audio.features import summary_columns

    cnn = part_streams(
        parts, {"train": train_features, "eval": eval_features}, extra_channels=extra_channels
    )
    columns = baseline_columns(summary_columns(next(iter(cnn.values())).index.params))
    summary = {p: st.read_columns(columns) for p, st in cnn.items()}
    for p, part in parts.items():  # the segments, for the per-clip scores table
        if isinstance(part, pd.DataFrame) and len(part) and "start" not in part.columns:
            seg = cnn[p].read_columns(["start", "end"]).astype(np.float64)
            part["start"], part["end"] = seg[:, 0], seg[:, 1]
    for st in cnn.values():
        st.close()
    release_memory()  # what the index and column reads left in the heap
    return cnn, summary


def load_label_data(
    job: TrainJob, settings: TrainSettings, *, logger: logging.Logger | None = None
) -> LabelData:
    """Read a label's dataset, check its parts and index (CNN) or load (summary) the
    features of its clips.

    Parameters
    ----------
    job : TrainJob
        ``dataset``, ``train_features`` and ``eval_features`` are read.
    settings : TrainSettings
        ``extra_channels``: the CNN's channels after log-mel.
    logger : logging.Logger, optional
        One line with the sizes and the time spent.

    Returns
    -------
    LabelData
        Targets, CNN input streams and summary features per part.

    Raises
    ------
    audiosetflow.errors.InputError
        If a part has no clip, train or val lacks a positive or a negative
        (:func:`~.datasets.check_dataset`), or the dataset does not match the features.

    See Also
    --------
    load_features : the features alone (no split is read whole).
    """
    from .datasets import check_dataset, read_dataset

    logger = logger or log
    name = job.label.display
    dataset = job.dataset if isinstance(job.dataset, (str, Path)) else dict(job.dataset)
    parts = read_dataset(dataset)
    check_dataset(parts, label=name)
    if job.eval_features is None and any((df["split"] == "eval").any() for df in parts.values()):
        raise InputError(
            f"label {name}: the dataset has clips of the eval split but the job has no eval "
            "features: rebuild the dataset (snakemake --forcerun dataset)"
        )
    y = {p: parts[p]["target"].to_numpy(dtype=np.float32) for p in parts}
    t0 = time.perf_counter()
    try:
        cnn, summary = load_features(
            parts, job.train_features, job.eval_features, extra_channels=settings.extra_channels
        )
    except InputError as exc:
        raise InputError(f"label {name}: {exc}") from None
    logger.info(
        "%s: features indexed in %.1f s: train %s (streamed, %d of %d row groups), "
        "val %d, test %d clips",
        name,
        time.perf_counter() - t0,
        cnn["train"].shape,
        len(cnn["train"].index.groups),
        cnn["train"].index.groups_total,
        len(y["val"]),
        len(y["test"]),
    )
    balanced = None
    test = parts["test"]
    if "balanced" in test.columns and not test["balanced"].astype(bool).all():
        balanced = test["balanced"].to_numpy().astype(bool)
    return LabelData(
        parts=parts,
        y=y,
        cnn=cnn,
        summary=summary,
        test_source=test.attrs["test_source"],
        prevalence=train_prevalence(job.train_features, job.label.mid),
        balanced_test=balanced,
    )


def train_prevalence(features: str | Path | Sequence[str | Path], mid: str) -> float | None:
    """The share of a split's clips with status ok that have label ``mid``.

    A clip listed in several rows counts once (as in :func:`~.multilabel.clip_table`). The
    shards' ``ytid``, ``status`` and ``labels`` columns are read a row group at a time; what
    is kept is a YTID's bytes and one flag per clip.

    Parameters
    ----------
    features : path or sequence of paths
        The split's shard files, or their folder (:func:`~..audio.features.shard_files`).
    mid : str
        The label's MID, e.g. ``"/m/04rlf"``.

    Returns
    -------
    float or None
        In (0, 1]; None if the split has no clip with status ok or none has the label.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..audio.features import ok_row_groups

    if not mid:
        return None
    ytids, flags = [], []
    for t in ok_row_groups(features, ["ytid", "status", "labels"]):
        if not t.num_rows:
            continue
        labels = t["labels"].combine_chunks()
        has = np.zeros(t.num_rows, dtype=bool)
        hit = pc.equal(pc.list_flatten(labels), mid).to_numpy(zero_copy_only=False)
        has[pc.list_parent_indices(labels).to_numpy()[np.asarray(hit, dtype=bool)]] = True
        ytids.append(np.array(t["ytid"].cast(pa.binary()).to_pylist(), dtype=bytes))
        flags.append(has)
    if not ytids:
        return None
    _, first = np.unique(np.concatenate(ytids), return_index=True)
    has = np.concatenate(flags)[first]
    return float(has.mean()) if has.any() else None


def _score_parts(model, sources: Mapping[str, Any], device) -> dict[str, np.ndarray]:
    """Each part's probabilities, in the part's order (:func:`~.trainer.score`)."""
    out = {}
    for p in SCORED_PARTS:
        src = sources[p]
        S, _ = score(model, src.batches(0), n=len(src), device=device)
        out[p] = S[:, 0]
    return out


@contextmanager
def packed_parts(data: LabelData, near: str | Path | None = None):
    """The CNN inputs of every part packed in canonical order (:mod:`~.pack`) for the time
    of the block: in a temporary folder beside ``near`` (or the system's)."""
    from .pack import pack_folder, pack_parts

    with contextlib.ExitStack() as stack:
        if near is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pack-")))
        else:
            folder = stack.enter_context(pack_folder(near))
        yield pack_parts(data.cnn, folder)


def train_cnn(
    data: LabelData,
    settings: TrainSettings,
    *,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    logger: logging.Logger | None = None,
    name: str = "label",
    buffer_size: int = DEFAULT_BUFFER,
    packed: Mapping[str, PackedPart] | None = None,
) -> FittedModel:
    """Fit the CNN on log-mel (+ extra channels) with early stopping on the val loss,
    streaming its inputs from the parts packed in canonical order.

    The network (``model.arch``: :func:`~.models.make_cnn`) is built by :func:`~.trainer.fit`
    after seeding
    and normalises its input with the train part's per-channel, per-row statistics. Every
    part is read through its packed copy (:mod:`~.pack`: records in sorted-YTID order), so
    the batches do not depend on the shards' layout: each epoch reads the train part's
    blocks in an order drawn from ``seed`` and the epoch, through a shuffle buffer of
    ``buffer_size`` clips; validation and scoring read in canonical order. Memory holds the
    buffer, one block and a batch, whatever the number of clips.

    Parameters
    ----------
    data : LabelData
    settings : TrainSettings
    seed : int, optional
        Default ``settings.seed``.
    device : torch.device or str
    logger : logging.Logger, optional
    name : str
        Prefix of the log lines (the label's name).
    buffer_size : int
        Clips of the training stream's shuffle buffer.
    packed : mapping of str to PackedPart, optional
        The parts packed (:func:`packed_parts`); None: packed here, in the system's
        temporary folder, for this fit alone.

    Returns
    -------
    FittedModel
        The network with its best epoch's weights, its scores on val and test (in the parts'
        order) and its history.
    """
    seed = settings.seed if seed is None else int(seed)
    if packed is None:
        with packed_parts(data) as parts:
            return train_cnn(data, settings, seed=seed, device=device, logger=logger, name=name,
                             buffer_size=buffer_size, packed=parts)  # fmt: skip
    train = packed["train"].source(
        batch_size=settings.batch_size, shuffle=True, seed=seed, buffer_size=buffer_size
    )
    val = packed["val"].source(batch_size=2 * settings.batch_size)
    _, channels, rows, _ = packed["train"].shape
    stats = packed["train"].channel_stats()

    m = settings.model
    if m.init:
        (logger or log).info(
            "%s: model.init starts the multi-label model only; this CNN starts at random", name
        )

    def build() -> nn.Module:
        cnn = make_cnn(
            m.arch,
            n_labels=None,
            n_rows=rows,
            in_channels=channels,
            width=settings.width,
            cnn14_width=m.cnn14_width,
            dropout=settings.dropout,
        )
        return cnn.set_normalization(*stats)

    cnn, res = fit(
        build, train, val, settings=settings.fit_settings(device, seed=seed),
        logger=logger or log, name=f"{name} cnn",
    )  # fmt: skip
    scores = _score_parts(cnn, {p: packed[p].source(batch_size=64) for p in SCORED_PARTS}, device)
    return FittedModel("cnn", cnn, scores, res.seconds, res.history, res.best_epoch)


def train_dense(
    data: LabelData,
    settings: TrainSettings,
    *,
    seed: int | None = None,
    logger: logging.Logger | None = None,
    name: str = "label",
) -> FittedModel:
    """Fit the seed project's dense network on the summary features, on the CPU.

    An ensemble of ``settings.dense.members`` networks (:class:`~.models.DenseNet`) trained
    side by side on the inputs standardised with the train part's column means and standard
    deviations (held in the model, so scoring applies them), on the seed features' means and
    standard deviations (:func:`baseline_columns`); by default for a fixed number of epochs,
    the last weights kept (:class:`DenseSettings`: sizes, dropout, epochs, early stopping,
    batch size, learning rate, weight decay).

    Returns
    -------
    FittedModel
    """
    seed = settings.seed if seed is None else int(seed)
    S, y, d = data.summary, data.y, settings.dense

    def build() -> DenseNet:
        dense = DenseNet(S["train"].shape[1], hidden=d.hidden, dropout=d.dropout, members=d.members)
        return dense.set_normalization(S["train"].mean(axis=0), S["train"].std(axis=0))

    stop = d.monitor != "none"
    fs = FitSettings(
        epochs=d.epochs, patience=d.patience if stop else d.epochs,
        min_epochs=d.min_epochs if stop else d.epochs, learning_rate=d.learning_rate,
        weight_decay=d.weight_decay, monitor=d.monitor if stop else "loss", seed=seed,
    )  # fmt: skip
    sources = {
        p: ArrayBatches(S[p], y[p], (d.batch_size if p == "train" else 2 * d.batch_size),
                        seed if p == "train" else None)
        for p in ("train", "val", "test")
    }  # fmt: skip
    dense, res = fit(
        build, sources["train"], sources["val"] if stop else None, settings=fs,
        logger=logger or log, name=f"{name} dense",
    )  # fmt: skip
    scores = _score_parts(dense, sources, "cpu")
    return FittedModel("dense", dense, scores, res.seconds, res.history, res.best_epoch)


def train_logreg(
    data: LabelData, settings: TrainSettings, *, seed: int | None = None
) -> FittedModel:
    """Fit the logistic regression on the summary features (:func:`fit_logreg`: scikit-learn's
    standardised linear pipeline), and choose its threshold from out-of-fold scores.

    The model is fitted on the train part. Its threshold comes from out-of-fold scores over the
    train and val parts together (:func:`~.metrics.choose_threshold_oof`: the median over 10
    draws of 5 folds, each draw's threshold chosen by ``settings.threshold`` at the label's
    prevalence): the val part alone is small and drawn from the same sources as the train
    part, and a threshold fitted to it did not transfer to recordings from other sources (on
    real recordings split by package, ``tests/realaudio.py``: Music F1 on the held-out
    packages 0.849 at the val part's threshold, 0.962 out of fold, best 0.981;
    ``benchmarks/bench_baselines_real.py``). With fewer than two clips of a class the
    threshold is left to :func:`evaluate_model`.

    Returns
    -------
    FittedModel
        ``history`` and ``best_epoch`` are None; ``threshold`` the out-of-fold one.
    """
    from .metrics import choose_threshold_oof

    seed = settings.seed if seed is None else int(seed)
    S, y = data.summary, data.y
    t0 = time.perf_counter()
    clf = fit_logreg(S["train"], y["train"], seed=seed)
    scores = {p: clf.predict_proba(S[p])[:, 1] for p in SCORED_PARTS}

    def fit_predict(X_fit, y_fit, X_score):
        return fit_logreg(X_fit, y_fit, seed=seed).predict_proba(X_score)[:, 1]

    X_all = np.concatenate([S["train"], S["val"]])
    y_all = np.concatenate([y["train"], y["val"]])
    try:
        thr = choose_threshold_oof(
            fit_predict, X_all, y_all, seed=seed, rule=settings.threshold,
            prevalence=data.prevalence,
        )  # fmt: skip
    except ValueError:  # too few clips of a class for two folds
        thr = None
    return FittedModel("logreg", clf, scores, time.perf_counter() - t0, threshold=thr)


def evaluate_model(
    fitted: FittedModel,
    data: LabelData,
    *,
    rule: str = "prevalence",
    logger: logging.Logger | None = None,
    name: str = "label",
) -> ModelMetrics:
    """Metrics of a fitted model on the val part, on the whole test part (the clips at their
    natural prevalence: the headline) and on its 1:1 balanced subset, at the threshold chosen
    on val.

    The threshold is :func:`~.metrics.decision_threshold` of the val scores with ``rule``
    and the label's prevalence in the training split (``data.prevalence``). One line with the
    test metrics is logged.

    Returns
    -------
    ModelMetrics
        ``val``, ``test`` and ``test_balanced`` (None when the test part has no balanced
        subset distinct from it): :func:`~.metrics.binary_metrics`; the fit's epochs and time.
    """
    sc, y = fitted.scores, data.y
    thr = fitted.threshold
    if thr is None:
        thr = decision_threshold(y["val"], sc["val"], rule=rule, prevalence=data.prevalence)
    bal = data.balanced_test
    m = ModelMetrics(
        val=binary_metrics(y["val"], sc["val"], threshold=thr),
        test=binary_metrics(y["test"], sc["test"], threshold=thr),
        test_balanced=(
            None if bal is None else binary_metrics(y["test"][bal], sc["test"][bal], threshold=thr)
        ),
        seconds=round(fitted.seconds, 3),
        best_epoch=fitted.best_epoch,
        epochs_run=None if fitted.history is None else len(fitted.history),
    )
    t = m.test
    if not THRESHOLD_FLAG <= thr <= 1 - THRESHOLD_FLAG:
        (logger or log).warning(
            "%s %s: the stored threshold %.3f is near %d: the model barely separates the label "
            "on validation; its yes/no decisions are not to be trusted",
            name, fitted.kind, thr, round(thr),
        )  # fmt: skip
    (logger or log).info(
        "%s %s test (%d clips, %d positive): AP %s, ROC-AUC %s, F1 %s at threshold %.3f "
        "(best F1 %s)",
        name, fitted.kind, t["n"], t["n_pos"], _fmt(t["average_precision"]), _fmt(t["roc_auc"]),
        _fmt(t["f1"]), thr, _fmt(t["best_f1"]),
    )  # fmt: skip
    return m


def write_outputs(
    job: TrainJob,
    result: TrainResult,
    *,
    cnn: torch.nn.Module,
    data: LabelData,
    test_scores: Mapping[str, np.ndarray],
    histories: Mapping[str, list[dict]],
) -> None:
    """Write the checkpoint, the figures, the test scores and (last) the metrics JSON of a job.

    Each file is written atomically; the metrics JSON comes last, so that its presence means
    the job finished.

    Parameters
    ----------
    job : TrainJob
    result : TrainResult
        The metrics; the checkpoint's threshold is the CNN's and its ``info`` holds the CNN's
        test metrics and the data counts.
    cnn : nn.Module
        The trained CNN (moved to the CPU).
    data : LabelData
        The parts (test part: the scores table's rows) and targets.
    test_scores : mapping of str to ndarray
        Each model's scores of the test part (ROC / PR figure, scores table).
    histories : mapping of str to list of dict
        Per-epoch histories of the networks (training-curves figure).
    """
    out, label = job.outputs, job.label
    cnn_metrics = result.models["cnn"]
    y_test = data.y["test"]
    save_checkpoint(
        out.model,
        model=cnn.cpu(),
        labels=[label.as_dict()],
        thresholds=[cnn_metrics.threshold],
        feature_params=asdict(job.params),
        sample_rate=job.params.sample_rate,
        clip_seconds=job.clip_seconds,
        extra_channels=result.settings.extra_channels,
        provenance=result.provenance,
        info={
            "test": cnn_metrics.test,
            "test_source": result.test_source,
            "dataset": {
                "n_train": result.n_train,
                "n_val": result.n_val,
                "n_test": result.n_test,
                "n_train_pos": int(data.y["train"].sum()),
                "n_val_pos": int(data.y["val"].sum()),
                "n_test_pos": int(y_test.sum()),
            },
        },
    )
    n_pos = int(y_test.sum())
    title = (
        f"{label.display} ({label.mid}), test: {result.test_source}, {len(y_test)} clips, "
        f"{n_pos} positive"
    )
    plot_roc_pr(y_test, dict(test_scores), out.roc_pr, title=title)
    plot_confusion(
        {k: m.test["confusion"] for k, m in result.models.items()}, out.confusion, title=title
    )
    plot_training_curves(dict(histories), out.curves, title=f"{label.display}: training")
    if out.scores is not None:
        write_tsv(out.scores, scores_table(data.parts["test"], test_scores))
    write_json(out.metrics, result.metrics())


#: The first columns of the scores table (:func:`scores_table`); one column per model follows.
SCORES_COLUMNS: list[str] = ["ytid", "split", "start", "end", "target"]


def scores_table(part: pd.DataFrame, scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per-clip scores of a dataset part: one row per clip, one score column per model.

    Parameters
    ----------
    part : DataFrame
        ``ytid, split, target`` and the segment's ``start, end`` (seconds), as in
        :attr:`LabelData.parts`.
    scores : mapping of str to ndarray, shape (n,)
        Each model's probability of the label for the clips of ``part``, in its order.

    Returns
    -------
    DataFrame
        :data:`SCORES_COLUMNS` then one column per model (in the order of ``scores``), the
        scores rounded to 6 decimals; ``target`` is 0 or 1.

    Raises
    ------
    ValueError
        If a model's scores do not have one value per clip.
    """
    out = pd.DataFrame(
        {
            "ytid": part["ytid"].astype(str).to_numpy(),
            "split": part["split"].astype(str).to_numpy(),
            "start": part["start"].to_numpy(dtype=float),
            "end": part["end"].to_numpy(dtype=float),
            "target": part["target"].to_numpy().astype(int),
        }
    )
    for kind, s in scores.items():
        s = np.asarray(s, dtype=float)
        if len(s) != len(out):
            raise ValueError(f"scores of {kind}: {len(s)} values for {len(out)} clips")
        out[kind] = np.round(s, 6)
    return out


def run_train(
    job: TrainJob,
    settings: TrainSettings,
    *,
    threads: int | None = None,
    logger: logging.Logger | None = None,
) -> TrainResult:
    """Train and evaluate one label's CNN and both baselines; write checkpoint, metrics and
    figures.

    The three models (:data:`MODEL_KINDS`) learn from the same balanced train part: the CNN
    on log-mel plus ``settings.extra_channels`` (:func:`train_cnn`), the seed project's dense
    network (:func:`train_dense`) and a logistic regression (:func:`train_logreg`) on the
    summary features. The networks stop early on the val part's loss; each model's decision
    threshold is the one of maximum F1 on val, and its test metrics are taken at it
    (:func:`evaluate_model`). Every draw is seeded from ``settings.seed``: the same inputs
    give the same metrics and weights.

    Parameters
    ----------
    job : TrainJob
        The label, its dataset, the feature shards and the output files.
    settings : TrainSettings
        Hyper-parameters (``config['training']`` and ``selection.seed``).
    threads : int, optional
        Torch CPU threads, >= 1 (default ``settings.threads``; the rule passes its
        ``threads``).
    logger : logging.Logger, optional
        Progress lines: one per epoch and one with each model's test metrics.

    Returns
    -------
    TrainResult
        Per-model val and test metrics, best epochs and dataset sizes;
        :meth:`TrainResult.metrics` is the JSON written to ``job.outputs.metrics``.

    Raises
    ------
    audiosetflow.errors.InputError
        If a dataset part has no clip, train or val lacks a positive or a negative, or the
        dataset does not match the features (one line naming the label and what to change);
        nothing is written then.
    RuntimeError
        If ``settings.device`` is ``"cuda"`` and no CUDA device is available.

    See Also
    --------
    audiosetflow.learning.datasets.run_dataset : the stage before, which writes the dataset.
    load_checkpoint : read the CNN back (as the CLI does).
    audiosetflow.learning.evaluation.summarize_metrics : one table of every label's metrics.

    Examples
    --------
    >>> from audiosetflow.audio.features import FeatureParams
    >>> job = TrainJob(
    ...     label=LabelRef(slug="music", name="Music", mid="/m/04rlf"),
    ...     dataset="results/datasets/music",
    ...     train_features="results/features/train",
    ...     eval_features="results/features/eval",
    ...     params=FeatureParams.from_config({}, sample_rate=22050),
    ...     outputs=TrainOutputs(model="music.pt", metrics="music.json", roc_pr="roc_pr.png",
    ...                          confusion="confusion.png", curves="curves.png"),
    ... )  # doctest: +SKIP
    >>> result = run_train(job, TrainSettings(epochs=5))  # doctest: +SKIP
    >>> result.models["cnn"].test["roc_auc"], result.best_epochs["cnn"]  # doctest: +SKIP
    """
    from ..provenance import data_hash, provenance

    logger = logger or log
    bounded_heap()
    torch.set_num_threads(int(threads or settings.threads))
    device = resolve_device(settings.device)
    name = job.label.display
    logger.info("%s: training on %s with %d threads", name, device, torch.get_num_threads())
    t0 = time.perf_counter()
    data = load_label_data(job, settings, logger=logger)
    seeds = [settings.seed + k for k in range(max(1, int(settings.seeds)))]
    runs: list[dict[str, FittedModel]] = []
    with packed_parts(data, job.outputs.model) as packed:
        logger.info(
            "%s: parts packed in canonical order (%.0f MB on disk while training)",
            name, sum(len(p) * p.clip_bytes for p in packed.values()) / 1e6,
        )  # fmt: skip
        for k, seed in enumerate(seeds):
            if len(seeds) > 1:
                logger.info("%s: seed %d (%d of %d)", name, seed, k + 1, len(seeds))
            runs.append(
                {
                    "cnn": train_cnn(data, settings, seed=seed, device=device, logger=logger,
                                     name=name, packed=packed),
                    "dense": train_dense(data, settings, seed=seed, logger=logger, name=name),
                    "logreg": train_logreg(data, settings, seed=seed),
                }
            )  # fmt: skip
    per_seed = [
        {
            k: evaluate_model(f, data, rule=settings.threshold, logger=logger, name=name)
            for k, f in run.items()
        }
        for run in runs
    ]
    models = dict(per_seed[0])
    if len(seeds) > 1:
        models = {k: replace(m, over_seeds=_over_seeds(k, per_seed)) for k, m in models.items()}
    clips = [
        (r.ytid, r.split, int(r.target), part)
        for part, df in data.parts.items()
        for r in df[["ytid", "split", "target"]].itertuples(index=False)
    ]
    result = TrainResult(
        label=job.label,
        n_train=len(data.y["train"]),
        n_val=len(data.y["val"]),
        n_test=len(data.y["test"]),
        n_test_pos=int(data.y["test"].sum()),
        test_source=data.test_source,
        train_prevalence=data.prevalence,
        settings=settings,
        device=str(device),
        models=models,
        provenance=provenance(
            config=job.config, seeds=seeds, device=str(device), data=data_hash(clips)
        ),
    )
    fitted = runs[0]
    write_outputs(
        job,
        result,
        cnn=fitted["cnn"].model,
        data=data,
        test_scores={k: f.scores["test"] for k, f in fitted.items()},
        histories={k: f.history for k, f in fitted.items() if f.history is not None},
    )
    logger.info("%s: done in %.1f s", name, time.perf_counter() - t0)
    return result


#: A stored threshold outside [THRESHOLD_FLAG, 1 - THRESHOLD_FLAG] is flagged (log, report).
THRESHOLD_FLAG = 0.05

#: Test metrics summarised over seeds (``training.seeds`` > 1).
SEED_METRICS = ("average_precision", "roc_auc", "f1", "best_f1")


def _over_seeds(kind: str, per_seed: Sequence[Mapping[str, ModelMetrics]]) -> dict:
    """Mean and standard deviation of each of :data:`SEED_METRICS` over the seeds."""
    return {m: mean_std([run[kind].test[m] for run in per_seed]) for m in SEED_METRICS} | {
        "seeds": len(per_seed)
    }


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
