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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import section
from ..io import atomic_path, atomic_write_text
from .evaluation import (
    binary_metrics,
    choose_threshold,
    plot_confusion,
    plot_roc_pr,
    plot_training_curves,
)
from .models import AudioCNN, DenseNet, build_model

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
    "predict_scores",
    "fit_logreg",
    "save_checkpoint",
    "load_checkpoint",
    "seed_columns",
    "run_train",
]

log = logging.getLogger("audiosetflow.training")

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainSettings:
    """Training hyper-parameters (``config['training']`` plus the global seed)."""

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


@torch.no_grad()
def _evaluate(model, X: torch.Tensor, y: torch.Tensor, device, batch_size: int):
    model.eval()
    logits = []
    for i in range(0, len(X), batch_size):
        logits.append(model(X[i : i + batch_size].to(device)).float().cpu())
    z = torch.cat(logits) if logits else torch.zeros(0)
    loss = nn.functional.binary_cross_entropy_with_logits(z, y).item() if len(z) else math.nan
    return loss, torch.sigmoid(z).numpy()


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
    logger: logging.Logger | None = None,
    name: str = "model",
) -> FitResult:
    """Train a binary classifier (one logit per example) with Adam and early stopping.

    Early stopping watches the validation loss: training stops after ``patience`` epochs
    without improvement, but never before epoch ``min_epochs`` (with few batches per epoch
    BatchNorm's running statistics lag, and the validation loss of the first epochs says little),
    and the weights of the best epoch are restored into ``model``. Without
    validation examples all ``epochs`` run and the last weights are kept. One progress line
    per epoch is logged.

    Returns
    -------
    FitResult
        ``history``: one dict per epoch (``epoch, train_loss, val_loss, val_auc, seconds,
        best``).
    """
    logger = logger or log
    device = torch.device(device)
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    Xt = torch.from_numpy(np.ascontiguousarray(X_train, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.float32))
    Xv = torch.from_numpy(np.ascontiguousarray(X_val, dtype=np.float32))
    yv = torch.from_numpy(np.asarray(y_val, dtype=np.float32))
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    result = FitResult()
    best_loss, best_state, waited = math.inf, copy.deepcopy(model.state_dict()), 0
    t_start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(Xt), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2 and len(order) > 1:  # BatchNorm needs 2+ examples
                continue
            xb, yb = Xt[idx].to(device), yt[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        train_loss = total / max(len(order), 1)
        val_loss, val_scores = _evaluate(model, Xv, yv, device, 2 * batch_size)
        val_auc = _auc(y_val, val_scores)
        secs = time.perf_counter() - t0
        improved = len(Xv) == 0 or (val_loss < best_loss - 1e-4)
        if improved:
            best_loss, waited, result.best_epoch = val_loss, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_auc": val_auc,
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
            len(order) / max(secs, 1e-9),
            " *" if improved else "",
        )
        if len(Xv) and waited >= patience and epoch >= min_epochs:
            logger.info(
                "%s: early stop after epoch %d (best epoch %d, val loss %.4f)",
                name,
                epoch,
                result.best_epoch,
                best_loss,
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


def fit_logreg(X_train: np.ndarray, y_train: np.ndarray, *, seed: int = 0):
    """sklearn ``StandardScaler`` + ``LogisticRegression`` pipeline fitted on the data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
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


# --- one label, end to end -------------------------------------------------------------------


class _SplitFeatures:
    """Lazily loaded features of one split (frame-level arrays and summary table), by YTID."""

    def __init__(self, features_dir: str | Path | None):
        self.dir = features_dir
        self._frames: dict[str, tuple[np.ndarray, pd.Index]] = {}
        self._summary: pd.DataFrame | None = None

    def frames(self, feature: str, ytids: Sequence[str]) -> np.ndarray:
        from ..audio.features import load_split

        if feature not in self._frames:
            X, meta = load_split(self.dir, feature=feature)
            self._frames[feature] = (X, pd.Index(meta["ytid"].astype(str)))
        X, index = self._frames[feature]
        return X[_positions(index, ytids, self.dir)]

    def summary(self, columns: Sequence[str] | None, ytids: Sequence[str]) -> np.ndarray:
        """Summary columns (None: :func:`seed_columns`) of the clips, in ``ytids`` order."""
        from ..audio.features import load_summary

        if self._summary is None:
            self._summary = load_summary(self.dir)
        s = self._summary
        if columns is None:
            columns = seed_columns(s.columns)
        pos = _positions(pd.Index(s["ytid"].astype(str)), ytids, self.dir)
        return s[list(columns)].to_numpy(dtype=np.float32)[pos]


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


def _positions(index: pd.Index, ytids: Sequence[str], where) -> np.ndarray:
    if not index.is_unique:
        index = index.drop_duplicates(keep="first")
    pos = index.get_indexer(list(ytids))
    if (pos < 0).any():
        missing = [y for y, p in zip(ytids, pos, strict=True) if p < 0][:3]
        raise ValueError(
            f"{where}: no features (status ok) for YTIDs {missing}...: the "
            "dataset is stale, rerun the dataset rule"
        )
    return pos


def _gather(splits: Mapping[str, _SplitFeatures], part: pd.DataFrame, get) -> np.ndarray:
    """Rows of a dataset part from the split each YTID belongs to, in the part's order."""
    out = None
    for split, grp in part.groupby("split", sort=False):
        arr = get(splits[str(split)], grp["ytid"].astype(str).tolist())
        if out is None:
            out = np.empty((len(part), *arr.shape[1:]), dtype=np.float32)
        out[np.flatnonzero((part["split"] == split).to_numpy())] = arr
    if out is None:
        raise ValueError("empty dataset part")
    return out


def run_train(
    *,
    dataset: str | Path | Mapping[str, str | Path],
    train_features: str | Path,
    eval_features: str | Path | None,
    model_out: str | Path,
    metrics_out: str | Path,
    plots: Mapping[str, str | Path],
    label: Mapping[str, str],
    training_cfg: Mapping,
    features_cfg: Mapping,
    sample_rate: int,
    clip_seconds: float = 10.0,
    seed: int = 1234,
    threads: int | None = None,
    logger: logging.Logger | None = None,
) -> dict:
    """Train and evaluate one label's CNN and both baselines; write checkpoint, metrics, plots.

    Parameters
    ----------
    dataset : folder or {part: path}
        The label's ``train/val/test.tsv`` (:func:`audiosetflow.datasets.write_dataset`).
    train_features, eval_features : path
        Feature folders of the splits (``results/features/train``, ``.../eval``).
    model_out, metrics_out : path
        ``results/models/{label}.pt`` and ``results/metrics/{label}.json``.
    plots : mapping
        Output paths for ``roc_pr``, ``confusion`` and ``curves`` figures.
    label : mapping
        ``slug``, ``name``, ``mid``.
    training_cfg, features_cfg : mapping
        ``config['training']`` and ``config['features']``.
    threads : int, optional
        Torch CPU threads (default ``training_cfg['threads']``).

    Returns
    -------
    dict
        The metrics written to ``metrics_out``.
    """
    from dataclasses import asdict

    from ..audio.features import FeatureParams
    from .datasets import read_dataset

    logger = logger or log
    cfg = TrainSettings.from_config(training_cfg, seed=seed)
    torch.set_num_threads(int(threads or cfg.threads))
    device = resolve_device(cfg.device)
    params = FeatureParams.from_config(dict(features_cfg), sample_rate=sample_rate)
    name = label.get("name") or label.get("slug", "label")
    logger.info("%s: training on %s with %d threads", name, device, torch.get_num_threads())

    parts = read_dataset(dataset if isinstance(dataset, (str, Path)) else dict(dataset))
    source = parts["test"].attrs["test_source"]
    splits = {"train": _SplitFeatures(train_features), "eval": _SplitFeatures(eval_features)}
    y = {p: parts[p]["target"].to_numpy(dtype=np.float32) for p in parts}

    def cnn_input(sf: _SplitFeatures, ytids):
        lm = sf.frames("log_mel", ytids)
        return stack_channels(lm, [sf.frames(f, ytids) for f in cfg.extra_channels])

    t0 = time.perf_counter()
    X = {p: _gather(splits, parts[p], cnn_input) for p in parts}
    S = {p: _gather(splits, parts[p], lambda sf, ids: sf.summary(None, ids)) for p in parts}
    logger.info(
        "%s: features loaded in %.1f s: train %s, val %d, test %d clips",
        name,
        time.perf_counter() - t0,
        X["train"].shape,
        len(y["val"]),
        len(y["test"]),
    )

    fit_kw = dict(
        epochs=cfg.epochs,
        patience=cfg.patience,
        min_epochs=cfg.min_epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        device=device,
        seed=cfg.seed,
        logger=logger,
    )
    scores: dict[str, dict[str, np.ndarray]] = {}
    histories: dict[str, list[dict]] = {}
    fit_info: dict[str, dict] = {}

    # CNN on log-mel (+ extra channels)
    seed_everything(cfg.seed)
    cnn = AudioCNN(X["train"].shape[2], X["train"].shape[1])
    cnn.set_normalization(*channel_stats(X["train"]))
    res = fit_torch(cnn, X["train"], y["train"], X["val"], y["val"], name=f"{name} cnn", **fit_kw)
    scores["cnn"] = {p: predict_scores(cnn, X[p], device=device) for p in parts}
    histories["cnn"], fit_info["cnn"] = res.history, _fit_info(res)

    # seed-style dense network on the summary features
    seed_everything(cfg.seed)
    dense = DenseNet(S["train"].shape[1])
    dense.set_normalization(S["train"].mean(axis=0), S["train"].std(axis=0))
    dense_kw = {
        **fit_kw,
        "epochs": max(cfg.epochs, 100),
        "patience": max(cfg.patience, 10),
        "batch_size": min(cfg.batch_size, 16),
        "device": "cpu",
    }
    res = fit_torch(
        dense, S["train"], y["train"], S["val"], y["val"], name=f"{name} dense", **dense_kw
    )
    scores["dense"] = {p: predict_scores(dense, S[p]) for p in parts}
    histories["dense"], fit_info["dense"] = res.history, _fit_info(res)

    # logistic regression on the summary features
    t1 = time.perf_counter()
    lr = fit_logreg(S["train"], y["train"], seed=cfg.seed)
    scores["logreg"] = {p: lr.predict_proba(S[p])[:, 1] for p in parts}
    fit_info["logreg"] = {"seconds": round(time.perf_counter() - t1, 3)}

    models = {}
    for kind, sc in scores.items():
        thr = choose_threshold(y["val"], sc["val"]) if len(y["val"]) else 0.5
        models[kind] = {
            "val": binary_metrics(y["val"], sc["val"], threshold=thr),
            "test": binary_metrics(y["test"], sc["test"], threshold=thr),
            "fit": fit_info[kind],
        }
        t = models[kind]["test"]
        logger.info(
            "%s %s test: ROC-AUC %s, AP %s, F1 %.3f, accuracy %.3f (threshold %.3f)",
            name,
            kind,
            _fmt(t["roc_auc"]),
            _fmt(t["average_precision"]),
            t["f1"],
            t["accuracy"] or 0.0,
            thr,
        )

    metrics = {
        "label": label.get("slug", ""),
        "name": label.get("name", ""),
        "mid": label.get("mid", ""),
        "dataset": {
            "n_train": len(y["train"]),
            "n_val": len(y["val"]),
            "n_test": len(y["test"]),
            "test_source": source,
        },
        "settings": {
            **asdict(cfg),
            "extra_channels": list(cfg.extra_channels),
            "device": str(device),
        },
        "models": models,
    }
    save_checkpoint(
        model_out,
        model=cnn.cpu(),
        label=dict(label),
        feature_params=asdict(params),
        sample_rate=sample_rate,
        clip_seconds=clip_seconds,
        extra_channels=cfg.extra_channels,
        threshold=models["cnn"]["val"]["threshold"],
        info={"test": models["cnn"]["test"], "test_source": source},
    )
    title = f"{name} ({label.get('mid', '')}), test set: {source}, n={len(y['test'])}"
    plot_roc_pr(y["test"], {k: s["test"] for k, s in scores.items()}, plots["roc_pr"], title=title)
    plot_confusion(
        {k: m["test"]["confusion"] for k, m in models.items()}, plots["confusion"], title=title
    )
    plot_training_curves(histories, plots["curves"], title=f"{name}: training")
    atomic_write_text(metrics_out, json.dumps(metrics, indent=1, default=_json_default) + "\n")
    logger.info("%s: done in %.1f s", name, time.perf_counter() - t0)
    return metrics


def _fit_info(res: FitResult) -> dict:
    return {
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "seconds": round(res.seconds, 3),
    }


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
