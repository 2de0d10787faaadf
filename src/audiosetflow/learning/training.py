"""Training of one label's models: the CNN, the seed-style dense baseline and a logistic
regression, all on the same balanced split; early stopping, checkpoints and metrics.

The checkpoint (``results/models/{label}.pt``) holds the CNN's weights and everything needed
to recompute its input from a media file: feature parameters, sample rate, clip length, extra
channels, normalisation statistics, the decision threshold chosen on validation and the label.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import section
from ..errors import InputError
from ..io import atomic_path, atomic_write_text, write_tsv
from .evaluation import (
    binary_metrics,
    choose_threshold,
    plot_confusion,
    plot_roc_pr,
    plot_training_curves,
)
from .models import AudioCNN, DenseNet, build_model
from .stream import DEFAULT_BUFFER, BatchSource, FeatureStream, part_streams

if TYPE_CHECKING:
    from ..audio.features import FeatureParams

__all__ = [
    "CHECKPOINT_VERSION",
    "TrainSettings",
    "FitResult",
    "Checkpoint",
    "resolve_device",
    "seed_everything",
    "stack_channels",
    "channel_stats",
    "fit_torch",
    "fit_batches",
    "predict_scores",
    "predict_stream",
    "fit_logreg",
    "DENSE_MEMBERS",
    "save_checkpoint",
    "load_checkpoint",
    "seed_columns",
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

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainSettings:
    """Training hyper-parameters (``config['training']`` plus the global seed).

    Attributes
    ----------
    epochs : int
        Maximum epochs of the CNN, >= 1 (the dense baseline runs at least 100).
    patience : int
        Epochs without a lower val loss before stopping, >= 1 (dense: at least 10).
    min_epochs : int
        Early stopping never stops before this epoch, >= 0.
    batch_size : int
        Clips per batch, >= 1 (dense: at most 16).
    learning_rate : float
        Adam's learning rate, > 0.
    threads : int
        Torch CPU threads of a job.
    extra_channels : tuple of str
        Frame-level features stacked after log-mel as CNN channels
        (:data:`audiosetflow.audio.features.FRAME_FEATURES`).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (:func:`resolve_device`).
    seed : int
        Seed of every draw (``selection.seed``).
    """

    epochs: int = 30
    patience: int = 5
    min_epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    threads: int = 2
    extra_channels: tuple[str, ...] = ()
    device: str = "auto"
    seed: int = 1234

    @classmethod
    def from_config(cls, training_cfg: Mapping, *, seed: int) -> TrainSettings:
        """Build from ``config['training']`` (unknown keys ignored, missing ones from the
        schema: :func:`audiosetflow.config.section`) and ``selection.seed``."""
        return section(cls, training_cfg, "training", seed=int(seed))


@dataclass
class FitResult:
    """Outcome of :func:`fit_torch`: per-epoch history, the epoch kept and the time spent."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; ``"cpu"`` / ``"cuda"`` as given.

    Raises
    ------
    RuntimeError
        If ``"cuda"`` is asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's legacy global generator."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use the global state


def _resize(a: np.ndarray, rows: int, frames: int) -> np.ndarray:
    """Linear interpolation of (N, r, t) to (N, rows, frames); one row is broadcast."""
    n, r, t = a.shape
    if t != frames:
        x_old = np.linspace(0.0, 1.0, t)
        x_new = np.linspace(0.0, 1.0, frames)
        a = np.stack([[np.interp(x_new, x_old, row) for row in clip] for clip in a])
    if r == rows:
        return a.astype(np.float32, copy=False)
    if r == 1:
        return np.broadcast_to(a, (n, rows, frames)).astype(np.float32)
    pos = np.linspace(0.0, r - 1, rows)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, r - 1)
    w = (pos - lo)[None, :, None]
    return ((1 - w) * a[:, lo, :] + w * a[:, hi, :]).astype(np.float32)


def stack_channels(
    log_mel: np.ndarray, extras: Mapping[str, np.ndarray] | Sequence[np.ndarray] = ()
) -> np.ndarray:
    """CNN input: log-mel plus each extra frame-level feature as a channel.

    Each extra feature ``(N, r, t)`` is interpolated to the log-mel's ``(n_mels, T)`` grid
    (rows linearly, a single row broadcast over all of them), so that e.g. an MFCC matrix or
    the spectral centroid become extra image channels aligned in time.

    Parameters
    ----------
    log_mel : ndarray, shape (N, n_mels, T) or (n_mels, T)
    extras : mapping or sequence of ndarray, each (N, r, t) or (r, t)

    Returns
    -------
    ndarray of float32, shape (N, 1 + len(extras), n_mels, T) (no N axis for 2-D input)
    """
    single = log_mel.ndim == 2
    lm = log_mel[None] if single else log_mel
    values = list(extras.values()) if isinstance(extras, Mapping) else list(extras)
    chans = [lm.astype(np.float32, copy=False)]
    for e in values:
        e = e[None] if e.ndim == 2 else e
        chans.append(_resize(e, lm.shape[1], lm.shape[2]))
    out = np.stack(chans, axis=1)
    return out[0] if single else out


def channel_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per channel and row over clips and frames.

    ``X`` is (N, C, R, T); returns two arrays of shape (C, R, 1).
    """
    mean = X.mean(axis=(0, 3), dtype=np.float64)[..., None]
    std = X.std(axis=(0, 3), dtype=np.float64)[..., None]
    return mean.astype(np.float32), std.astype(np.float32)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s))


def _ap(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(average_precision_score(y, s))


class _ArrayBatches:
    """A :class:`~.stream.BatchSource` over in-memory arrays: shuffled with ``generator``
    (one permutation per call of :meth:`batches`), or in order without it."""

    def __init__(self, X, y, batch_size: int, generator: torch.Generator | None = None):
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.float32))
        self.batch_size, self.generator = int(batch_size), generator

    def __len__(self) -> int:
        return len(self.X)

    def batches(self, epoch: int = 0):
        if self.generator is None:
            for i in range(0, len(self.X), self.batch_size):
                yield self.X[i : i + self.batch_size], self.y[i : i + self.batch_size]
            return
        order = torch.randperm(len(self.X), generator=self.generator)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.X[idx], self.y[idx]


def _tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a, dtype=np.float32))


@torch.no_grad()
def _evaluate(model, source: BatchSource, device, epoch: int):
    """Loss and scores over one pass of ``source``; also returns the targets in that order."""
    model.eval()
    logits, ys = [], []
    for xb, yb, *_ in source.batches(epoch):
        logits.append(model(_tensor(xb).to(device)).float().cpu())
        ys.append(_tensor(yb).float())
    z = torch.cat(logits) if logits else torch.zeros(0)
    y = torch.cat(ys) if ys else torch.zeros(0)
    loss = nn.functional.binary_cross_entropy_with_logits(z, y).item() if len(z) else math.nan
    return loss, torch.sigmoid(z).numpy(), y.numpy()


def fit_torch(
    model: nn.Module,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    patience: int,
    batch_size: int,
    learning_rate: float,
    min_epochs: int = 0,
    device: torch.device | str = "cpu",
    seed: int = 0,
    weight_decay: float = 1e-4,
    monitor: str = "loss",
    logger: logging.Logger | None = None,
    name: str = "model",
) -> FitResult:
    """Train a binary classifier (one logit per example) on in-memory arrays:
    :func:`fit_batches` with the train examples in a new random order each epoch (a torch
    generator seeded with ``seed``) and the val examples in order, ``2 * batch_size`` at a
    time.

    The summary-feature baseline (:func:`train_dense`) trains this way; the CNN streams its
    inputs from the shards (:func:`train_cnn`).
    """
    gen = torch.Generator().manual_seed(seed)
    return fit_batches(
        model,
        _ArrayBatches(X_train, y_train, batch_size, gen),
        _ArrayBatches(X_val, y_val, 2 * batch_size),
        epochs=epochs,
        patience=patience,
        learning_rate=learning_rate,
        min_epochs=min_epochs,
        device=device,
        seed=seed,
        weight_decay=weight_decay,
        monitor=monitor,
        logger=logger,
        name=name,
    )


def fit_batches(
    model: nn.Module,
    train: BatchSource,
    val: BatchSource | None,
    *,
    epochs: int,
    patience: int,
    learning_rate: float,
    min_epochs: int = 0,
    device: torch.device | str = "cpu",
    seed: int = 0,
    weight_decay: float = 1e-4,
    monitor: str = "loss",
    logger: logging.Logger | None = None,
    name: str = "model",
) -> FitResult:
    """Train a binary classifier (one logit per example) with Adam and early stopping, from
    batch sources.

    ``train.batches(epoch)`` gives epoch ``epoch``'s training batches (in the order to train
    on: a shuffled :class:`~.stream.FeatureStream`, or :func:`fit_torch`'s arrays);
    ``val.batches(epoch)`` one pass over the validation examples. A batch of one example is
    skipped when there are more (BatchNorm needs two).

    Early stopping watches ``monitor`` on the validation examples: ``"loss"`` (their binary
    cross-entropy, lower is better) or ``"ap"`` (their average precision, higher is better; a
    ranking measure, which does not punish a network for growing confident, so that a small
    network on a hard problem is not stopped after its first epochs). Training stops after
    ``patience`` epochs without improvement, but never before epoch ``min_epochs`` (with few
    batches per epoch BatchNorm's running statistics lag, and the validation loss of the first
    epochs says little), and the weights of the best epoch are restored into ``model``.
    Without validation examples all ``epochs`` run and the last weights are kept. One
    progress line per epoch is logged.

    Returns
    -------
    FitResult
        ``history``: one dict per epoch (``epoch, train_loss, val_loss, val_auc, val_ap,
        seconds, best``).

    Raises
    ------
    ValueError
        If ``monitor`` is neither ``"loss"`` nor ``"ap"``.
    """
    if monitor not in ("loss", "ap"):
        raise ValueError(f"monitor must be 'loss' or 'ap', not {monitor!r}")
    logger = logger or log
    device = torch.device(device)
    seed_everything(seed)
    n_train, n_val = len(train), (0 if val is None else len(val))
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    result = FitResult()
    # the monitored value, as a cost: the loss, or minus the AP
    best_cost, best_state, waited = math.inf, copy.deepcopy(model.state_dict()), 0
    t_start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for xb, yb, *_ in train.batches(epoch - 1):
            if len(xb) < 2 and n_train > 1:  # BatchNorm needs 2+ examples
                continue
            xb, yb = _tensor(xb).to(device), _tensor(yb).to(device)
            opt.zero_grad(set_to_none=True)
            z = model(xb)  # (batch,), or (members, batch) for an ensemble
            loss = loss_fn(z, yb.expand_as(z))
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        train_loss = total / max(n_train, 1)
        if n_val:
            val_loss, val_scores, val_y = _evaluate(model, val, device, epoch - 1)
            val_auc, val_ap = _auc(val_y, val_scores), _ap(val_y, val_scores)
        else:
            val_loss, val_auc, val_ap = math.nan, float("nan"), float("nan")
        secs = time.perf_counter() - t0
        cost = val_loss if monitor == "loss" or math.isnan(val_ap) else -val_ap
        improved = n_val == 0 or (cost < best_cost - 1e-4)
        if improved:
            best_cost, waited, result.best_epoch = cost, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_auc": val_auc,
                "val_ap": val_ap,
                "seconds": secs,
                "best": False,
            }
        )
        logger.info(
            "%s epoch %d/%d: train loss %.4f, val loss %.4f, val AUC %.3f (%.1f s, %.0f clips/s)%s",
            name,
            epoch,
            epochs,
            train_loss,
            val_loss,
            val_auc,
            secs,
            n_train / max(secs, 1e-9),
            " *" if improved else "",
        )
        if n_val and waited >= patience and epoch >= min_epochs:
            logger.info(
                "%s: early stop after epoch %d (best epoch %d, val %s %.4f)",
                name,
                epoch,
                result.best_epoch,
                monitor,
                best_cost if monitor == "loss" else -best_cost,
            )
            break
    model.load_state_dict(best_state)
    model.eval()
    for h in result.history:
        h["best"] = h["epoch"] == result.best_epoch
    result.seconds = time.perf_counter() - t_start
    return result


@torch.no_grad()
def predict_scores(
    model: nn.Module, X: np.ndarray, *, device: torch.device | str = "cpu", batch_size: int = 64
) -> np.ndarray:
    """Probabilities (sigmoid of the logit) of a model for every example of ``X``."""
    device = torch.device(device)
    model.to(device).eval()
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    out = [
        torch.sigmoid(model(Xt[i : i + batch_size].to(device))).float().cpu()
        for i in range(0, len(Xt), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


@torch.no_grad()
def predict_stream(
    model: nn.Module,
    stream: FeatureStream,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> np.ndarray:
    """Probabilities of a model for every clip of a stream, in the stream's clip order (the
    dataset part's), read in file order ``batch_size`` clips at a time."""
    device = torch.device(device)
    model.to(device).eval()
    scores = np.full(len(stream), np.nan, dtype=np.float32)
    for b in stream.replace(batch_size=batch_size).batches(shuffle=False):
        z = model(torch.from_numpy(b.x).to(device)).float().cpu()
        scores[b.index] = torch.sigmoid(z).numpy()
    return scores


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


# --- checkpoints ---------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A trained CNN with everything needed to predict from a media file.

    Attributes
    ----------
    model : nn.Module
        The network (eval mode), normalisation included.
    label : dict
        ``slug``, ``name``, ``mid``.
    feature_params : dict
        Parameters of :class:`audiosetflow.features.FeatureParams`.
    sample_rate : int
    clip_seconds : float
    extra_channels : list of str
        Frame-level features stacked after log-mel, in order.
    threshold : float
        Decision threshold chosen on validation (max F1).
    """

    model: nn.Module
    kind: str
    label: dict
    feature_params: dict
    sample_rate: int
    clip_seconds: float
    extra_channels: list[str]
    threshold: float
    info: dict = field(default_factory=dict)
    path: str = ""

    def input_from_features(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        """CNN input (C, n_mels, T) of one clip from :func:`audiosetflow.features.compute`."""
        return stack_channels(feats["log_mel"], [feats[k] for k in self.extra_channels])

    def predict(self, X: np.ndarray, *, device: torch.device | str = "cpu") -> np.ndarray:
        """Probabilities for inputs (N, C, n_mels, T)."""
        return predict_scores(self.model, X, device=device)


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    label: Mapping[str, str],
    feature_params: Mapping,
    sample_rate: int,
    clip_seconds: float,
    extra_channels: Sequence[str],
    threshold: float,
    info: Mapping | None = None,
) -> None:
    """Write a CNN checkpoint atomically (see :class:`Checkpoint` for the fields).

    The normalisation statistics are part of the model's ``state_dict`` and are also stored
    as ``norm_mean`` / ``norm_std``.
    """
    kind = "cnn" if isinstance(model, AudioCNN) else "dense" if isinstance(model, DenseNet) else ""
    if not kind:
        raise TypeError(f"cannot checkpoint a {type(model).__name__}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format_version": CHECKPOINT_VERSION,
        "kind": kind,
        "model_config": dict(model.config),
        "state_dict": state,
        "norm_mean": state["mean"].clone(),
        "norm_std": state["std"].clone(),
        "label": dict(label),
        "feature_params": json.loads(json.dumps(dict(feature_params))),
        "sample_rate": int(sample_rate),
        "clip_seconds": float(clip_seconds),
        "extra_channels": list(extra_channels),
        "threshold": float(threshold),
        "info": json.loads(json.dumps(dict(info or {}))),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, *, device: torch.device | str = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    ValueError
        If the file is not an audiosetflow checkpoint (message names the file).
    """
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem means the same thing
        raise ValueError(f"{path}: not a readable checkpoint: {exc}") from None
    if not isinstance(p, dict) or p.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: not an audiosetflow checkpoint (format {CHECKPOINT_VERSION})")
    model = build_model(p["kind"], p["model_config"])
    model.load_state_dict(p["state_dict"])
    model.to(torch.device(device)).eval()
    return Checkpoint(
        model=model,
        kind=p["kind"],
        label=dict(p["label"]),
        feature_params=dict(p["feature_params"]),
        sample_rate=int(p["sample_rate"]),
        clip_seconds=float(p["clip_seconds"]),
        extra_channels=list(p["extra_channels"]),
        threshold=float(p["threshold"]),
        info=dict(p.get("info") or {}),
        path=str(path),
    )


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
    """

    label: LabelRef
    dataset: str | Path | Mapping[str, str | Path]
    train_features: str | Path | Sequence[str | Path]
    eval_features: str | Path | Sequence[str | Path] | None
    params: FeatureParams
    outputs: TrainOutputs
    clip_seconds: float = 10.0


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
        The baselines' inputs: the seed summary columns (:func:`seed_columns`).
    test_source : str
        ``"eval"`` or ``"train holdout"``.
    """

    parts: dict[str, pd.DataFrame]
    y: dict[str, np.ndarray]
    cnn: dict[str, FeatureStream]
    summary: dict[str, np.ndarray]
    test_source: str


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
    """

    kind: str
    model: object
    scores: dict[str, np.ndarray]
    seconds: float
    history: list[dict] | None = None
    best_epoch: int | None = None


@dataclass(frozen=True)
class ModelMetrics:
    """Validation and test metrics of one model, at the threshold chosen on validation.

    Attributes
    ----------
    val, test : dict
        :func:`~.evaluation.binary_metrics` of the val and test parts.
    seconds : float
        Time spent fitting, rounded to ms.
    best_epoch, epochs_run : int or None
        The epoch kept and the epochs run (None: logistic regression).
    """

    val: dict
    test: dict
    seconds: float
    best_epoch: int | None = None
    epochs_run: int | None = None

    @property
    def threshold(self) -> float:
        """The decision threshold (max F1 on validation; 0.5 without validation clips)."""
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
        """``{"val", "test", "fit"}``, as in the metrics JSON."""
        return {"val": self.val, "test": self.test, "fit": self.fit_info()}


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
        Per model kind, in the order of :data:`MODEL_KINDS`.
    """

    label: LabelRef
    n_train: int
    n_val: int
    n_test: int
    test_source: str
    settings: TrainSettings
    device: str
    models: dict[str, ModelMetrics]

    @property
    def best_epochs(self) -> dict[str, int]:
        """Epoch kept per network (``cnn``, ``dense``)."""
        return {k: m.best_epoch for k, m in self.models.items() if m.best_epoch is not None}

    def metrics(self) -> dict:
        """The metrics JSON: ``label, name, mid, dataset, settings, models``.

        ``dataset``: ``n_train, n_val, n_test, test_source``; ``settings``: the fields of
        :class:`TrainSettings` (``device``: the device used); ``models``: per kind,
        ``val`` and ``test`` (:func:`~.evaluation.binary_metrics`) and ``fit``
        (:meth:`ModelMetrics.fit_info`). Read by :func:`~.evaluation.summarize_metrics`.
        """
        return {
            "label": self.label.slug,
            "name": self.label.name,
            "mid": self.label.mid,
            "dataset": {
                "n_train": self.n_train,
                "n_val": self.n_val,
                "n_test": self.n_test,
                "test_source": self.test_source,
            },
            "settings": {
                **asdict(self.settings),
                "extra_channels": list(self.settings.extra_channels),
                "device": self.device,
            },
            "models": {k: m.to_dict() for k, m in self.models.items()},
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
    columns = seed_columns(summary_columns(next(iter(cnn.values())).index.params))
    summary = {p: st.read_columns(columns) for p, st in cnn.items()}
    for p, part in parts.items():  # the segments, for the per-clip scores table
        if isinstance(part, pd.DataFrame) and len(part) and "start" not in part.columns:
            seg = cnn[p].read_columns(["start", "end"]).astype(np.float64)
            part["start"], part["end"] = seg[:, 0], seg[:, 1]
    for st in cnn.values():
        st.close()
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
    return LabelData(
        parts=parts, y=y, cnn=cnn, summary=summary, test_source=parts["test"].attrs["test_source"]
    )


def _fit_kwargs(settings: TrainSettings, device, logger) -> dict:
    return dict(
        epochs=settings.epochs,
        patience=settings.patience,
        min_epochs=settings.min_epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        device=device,
        seed=settings.seed,
        logger=logger,
    )


def train_cnn(
    data: LabelData,
    settings: TrainSettings,
    *,
    device: torch.device | str = "cpu",
    logger: logging.Logger | None = None,
    name: str = "label",
    buffer_size: int = DEFAULT_BUFFER,
) -> FittedModel:
    """Fit the CNN on log-mel (+ extra channels) with early stopping on the val part,
    streaming its inputs from the feature shards.

    The network (:class:`~.models.AudioCNN`) is built after seeding with ``settings.seed``
    and normalises its input with the train part's per-channel, per-row statistics
    (:meth:`~.stream.FeatureStream.channel_stats`: one streaming pass, equal to
    :func:`channel_stats` of the whole array). Each epoch reads the train part's row groups in
    a new order (seeded with ``settings.seed`` and the epoch) through a shuffle buffer of
    ``buffer_size`` clips; validation and the scores of every part read in file order
    (:func:`predict_stream`). Memory holds the buffer, one row group and a batch, whatever
    the number of clips.

    Parameters
    ----------
    data : LabelData
        ``cnn`` streams and targets ``y`` of the parts.
    settings : TrainSettings
        ``epochs``, ``patience``, ``min_epochs``, ``batch_size``, ``learning_rate``,
        ``seed``.
    device : torch.device or str
        Where to train (:func:`resolve_device`).
    logger : logging.Logger, optional
    name : str
        Prefix of the log lines (the label's name).
    buffer_size : int
        Clips of the training stream's shuffle buffer.

    Returns
    -------
    FittedModel
        The network with the weights of its best epoch, its scores on val and test (in the
        part's order) and its history.

    See Also
    --------
    fit_batches : the training loop.
    """
    streams = data.cnn
    train = streams["train"].replace(
        shuffle=True, seed=settings.seed, batch_size=settings.batch_size, buffer_size=buffer_size
    )
    val = streams["val"].replace(shuffle=False, batch_size=2 * settings.batch_size)
    _, channels, rows, _ = train.shape
    seed_everything(settings.seed)
    cnn = AudioCNN(rows, channels)
    cnn.set_normalization(*train.channel_stats())
    kw = _fit_kwargs(settings, device, logger or log)
    del kw["batch_size"]
    res = fit_batches(cnn, train, val, name=f"{name} cnn", **kw)
    scores = {p: predict_stream(cnn, streams[p], device=device) for p in SCORED_PARTS}
    for st in (train, val, *streams.values()):
        st.close()
    return FittedModel("cnn", cnn, scores, res.seconds, res.history, res.best_epoch)


def train_dense(
    data: LabelData,
    settings: TrainSettings,
    *,
    logger: logging.Logger | None = None,
    name: str = "label",
) -> FittedModel:
    """Fit the seed project's dense network on the summary features, on the CPU.

    An ensemble of :data:`DENSE_MEMBERS` networks of hidden sizes (64, 32) trained side by
    side (:class:`~.models.DenseNet`), dropout 0.1, weight decay 1e-3, batches of 32 clips,
    the input standardised with the train part's column means and standard deviations (held
    in the model, so scoring applies them). Up to ``max(settings.epochs, 300)`` epochs, never
    stopping before epoch 100 and then after 100 epochs without a higher average precision of
    the ensemble on the val part; the weights of the best epoch are kept. (Early stopping on
    the val loss stopped this network after a few epochs on small hard problems, far below a
    plain scikit-learn ``MLPClassifier``; AP is what the model is judged by.) Otherwise as
    :func:`train_cnn`.

    Parameters
    ----------
    data : LabelData
        ``summary`` features and targets ``y`` of the parts.
    settings : TrainSettings
        ``epochs``, ``learning_rate``, ``seed``.
    logger : logging.Logger, optional
    name : str
        Prefix of the log lines.

    Returns
    -------
    FittedModel
    """
    S, y = data.summary, data.y
    seed_everything(settings.seed)
    dense = DenseNet(S["train"].shape[1], hidden=(64, 32), dropout=0.1, members=DENSE_MEMBERS)
    dense.set_normalization(S["train"].mean(axis=0), S["train"].std(axis=0))
    kw = {
        **_fit_kwargs(settings, "cpu", logger or log),
        "epochs": max(settings.epochs, 300),
        "patience": 100,
        "min_epochs": 100,
        "batch_size": 32,
        "weight_decay": 1e-3,
        "monitor": "ap",
    }
    res = fit_torch(dense, S["train"], y["train"], S["val"], y["val"], name=f"{name} dense", **kw)
    scores = {p: predict_scores(dense, S[p]) for p in SCORED_PARTS}
    return FittedModel("dense", dense, scores, res.seconds, res.history, res.best_epoch)


def train_logreg(data: LabelData, settings: TrainSettings) -> FittedModel:
    """Fit the logistic regression on the summary features (:func:`fit_logreg`: scikit-learn's
    standardised linear pipeline).

    Parameters
    ----------
    data : LabelData
    settings : TrainSettings
        ``seed``: the folds' and the solver's seed.

    Returns
    -------
    FittedModel
        ``history`` and ``best_epoch`` are None.
    """
    S, y = data.summary, data.y
    t0 = time.perf_counter()
    clf = fit_logreg(S["train"], y["train"], seed=settings.seed)
    scores = {p: clf.predict_proba(S[p])[:, 1] for p in SCORED_PARTS}
    return FittedModel("logreg", clf, scores, time.perf_counter() - t0)


def evaluate_model(
    fitted: FittedModel,
    y: Mapping[str, np.ndarray],
    *,
    logger: logging.Logger | None = None,
    name: str = "label",
) -> ModelMetrics:
    """Metrics of a fitted model on the val and test parts at the threshold chosen on val.

    The threshold maximises F1 on the val part (:func:`~.evaluation.choose_threshold`; 0.5
    without val clips). One line with the test metrics is logged.

    Parameters
    ----------
    fitted : FittedModel
        Its ``scores`` of the ``val`` and ``test`` parts.
    y : mapping of str to ndarray
        Targets per part.
    logger : logging.Logger, optional
    name : str
        Prefix of the log line.

    Returns
    -------
    ModelMetrics
        ``val`` and ``test``: :func:`~.evaluation.binary_metrics` (``roc_auc,
        average_precision, f1, accuracy, precision, recall, log_loss, threshold, n, n_pos,
        confusion``), plus the fit's epochs and time.
    """
    sc = fitted.scores
    thr = choose_threshold(y["val"], sc["val"]) if len(y["val"]) else 0.5
    m = ModelMetrics(
        val=binary_metrics(y["val"], sc["val"], threshold=thr),
        test=binary_metrics(y["test"], sc["test"], threshold=thr),
        seconds=round(fitted.seconds, 3),
        best_epoch=fitted.best_epoch,
        epochs_run=None if fitted.history is None else len(fitted.history),
    )
    t = m.test
    (logger or log).info(
        "%s %s test: ROC-AUC %s, AP %s, F1 %.3f, accuracy %.3f (threshold %.3f)",
        name,
        fitted.kind,
        _fmt(t["roc_auc"]),
        _fmt(t["average_precision"]),
        t["f1"],
        t["accuracy"] or 0.0,
        thr,
    )
    return m


def write_outputs(
    job: TrainJob,
    result: TrainResult,
    *,
    cnn: nn.Module,
    y_test: np.ndarray,
    test_scores: Mapping[str, np.ndarray],
    histories: Mapping[str, list[dict]],
    test_part: pd.DataFrame | None = None,
) -> None:
    """Write the checkpoint, the figures, the test scores and (last) the metrics JSON of a job.

    Each file is written atomically; the metrics JSON comes last, so that its presence means
    the job finished.

    Parameters
    ----------
    job : TrainJob
        ``outputs`` (the files), ``label``, ``params`` and ``clip_seconds`` (checkpoint).
    result : TrainResult
        The metrics; the checkpoint's threshold is the CNN's val threshold and its ``info``
        holds the CNN's test metrics and the test part's source.
    cnn : nn.Module
        The trained CNN (moved to the CPU).
    y_test : ndarray
        Targets of the test part.
    test_scores : mapping of str to ndarray
        Each model's scores of the test part (ROC / PR figure).
    histories : mapping of str to list of dict
        Per-epoch histories of the networks (training-curves figure).
    test_part : DataFrame, optional
        The test part (``ytid, split, target, start, end``, in the order of ``test_scores``);
        with ``job.outputs.scores`` set, its rows and every model's score are written there
        (:func:`scores_table`).

    See Also
    --------
    save_checkpoint, TrainResult.metrics, scores_table
    """
    out, label = job.outputs, job.label
    cnn_metrics = result.models["cnn"]
    save_checkpoint(
        out.model,
        model=cnn.cpu(),
        label=label.as_dict(),
        feature_params=asdict(job.params),
        sample_rate=job.params.sample_rate,
        clip_seconds=job.clip_seconds,
        extra_channels=result.settings.extra_channels,
        threshold=cnn_metrics.threshold,
        info={"test": cnn_metrics.test, "test_source": result.test_source},
    )
    title = f"{label.display} ({label.mid}), test set: {result.test_source}, n={len(y_test)}"
    plot_roc_pr(y_test, dict(test_scores), out.roc_pr, title=title)
    plot_confusion(
        {k: m.test["confusion"] for k, m in result.models.items()}, out.confusion, title=title
    )
    plot_training_curves(dict(histories), out.curves, title=f"{label.display}: training")
    if out.scores is not None:
        if test_part is None:
            raise ValueError("write_outputs: outputs.scores is set but test_part is not given")
        write_tsv(out.scores, scores_table(test_part, test_scores))
    text = json.dumps(result.metrics(), indent=1, default=_json_default) + "\n"
    atomic_write_text(out.metrics, text)


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
    logger = logger or log
    torch.set_num_threads(int(threads or settings.threads))
    device = resolve_device(settings.device)
    name = job.label.display
    logger.info("%s: training on %s with %d threads", name, device, torch.get_num_threads())
    t0 = time.perf_counter()
    data = load_label_data(job, settings, logger=logger)
    fitted = {
        "cnn": train_cnn(data, settings, device=device, logger=logger, name=name),
        "dense": train_dense(data, settings, logger=logger, name=name),
        "logreg": train_logreg(data, settings),
    }
    result = TrainResult(
        label=job.label,
        n_train=len(data.y["train"]),
        n_val=len(data.y["val"]),
        n_test=len(data.y["test"]),
        test_source=data.test_source,
        settings=settings,
        device=str(device),
        models={k: evaluate_model(f, data.y, logger=logger, name=name) for k, f in fitted.items()},
    )
    write_outputs(
        job,
        result,
        cnn=fitted["cnn"].model,
        y_test=data.y["test"],
        test_scores={k: f.scores["test"] for k, f in fitted.items()},
        histories={k: f.history for k, f in fitted.items() if f.history is not None},
        test_part=data.parts["test"],
    )
    logger.info("%s: done in %.1f s", name, time.perf_counter() - t0)
    return result


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
