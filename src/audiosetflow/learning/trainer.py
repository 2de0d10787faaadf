"""The one training loop: every network of the workflow is trained by :func:`fit`.

The per-label CNN, the dense baseline and the multi-label CNN differ in their model, their
batch sources and a few settings (:class:`FitSettings`), never in the loop:

1. seed torch, numpy and Python (:func:`seed_everything`), and only then build the model;
2. each epoch, train on ``train.batches(epoch)`` with Adam (mixup, SpecAugment and bfloat16
   autocast on CUDA are options), then score ``val`` with :func:`score`;
3. stop early on the validation loss or the validation (mean) AP, keep the best weights;
4. return the model (eval mode, best weights) and its history, one dict per epoch.

:func:`score` is the one scoring path: evaluation, the report and ``predict`` use it.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .heap import release_memory
from .metrics import average_precision, roc_auc

if TYPE_CHECKING:
    from .labelsets import SpecAugmentSettings
    from .stream import BatchSource

__all__ = [
    "ArrayBatches",
    "fit_arrays",
    "predict_arrays",
    "FitSettings",
    "FitResult",
    "fit",
    "score",
    "seed_everything",
    "resolve_device",
    "spec_augment",
    "mixup",
    "MONITORS",
]

log = logging.getLogger("audiosetflow.trainer")

#: What early stopping can watch on the validation clips.
MONITORS = ("loss", "ap")

#: Training batches between two :func:`~.heap.release_memory` calls in :func:`fit`.
RELEASE_EVERY = 16


@dataclass(frozen=True)
class FitSettings:
    """Settings of one :func:`fit`.

    Attributes
    ----------
    epochs : int
        Most epochs, >= 1.
    patience : int
        Epochs without improvement of ``monitor`` before stopping, >= 1.
    min_epochs : int
        Never stop before this epoch, >= 0.
    learning_rate : float
        Adam's learning rate, > 0.
    weight_decay : float
        Adam's L2 weight decay, >= 0.
    monitor : {"loss", "ap"}
        Validation binary cross-entropy (lower is better) or validation AP, averaged over the
        outputs with a positive (higher is better).
    seed : int
        Seeds the model's initialisation, the batch order, mixup and SpecAugment.
    mixup : float
        Mixup's Beta alpha; 0: off.
    specaugment : SpecAugmentSettings or None
        Time and frequency masks of training inputs (4-D inputs only); None: off.
    amp : bool
        bfloat16 autocast on CUDA (ignored on the CPU).
    device : str
        ``"cpu"``, ``"cuda"``...
    """

    epochs: int = 30
    patience: int = 5
    min_epochs: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    monitor: str = "loss"
    seed: int = 0
    mixup: float = 0.0
    specaugment: SpecAugmentSettings | None = None
    amp: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, not {self.monitor!r}")
        if self.epochs < 1 or self.patience < 1 or self.min_epochs < 0:
            raise ValueError("epochs >= 1, patience >= 1 and min_epochs >= 0")


@dataclass
class FitResult:
    """What :func:`fit` returns besides the model.

    Attributes
    ----------
    history : list of dict
        Per epoch: ``epoch, train_loss, val_loss, val_ap, val_auc, seconds, clips_per_s,
        clips_per_cpu_s, best`` (``val_ap``/``val_auc``: means over the outputs where defined).
    best_epoch : int
        The epoch whose weights were kept (0: no epoch trained).
    seconds : float
        Wall-clock time of the whole fit.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's legacy and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use the global state
    torch.manual_seed(seed)


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


def deterministic(on: bool = True) -> None:
    """Ask torch for deterministic kernels (on CUDA, cuBLAS needs its workspace setting)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.benchmark = False


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


class ArrayBatches:
    """A :class:`~.stream.BatchSource` over in-memory arrays: batches ``(x, y, index)``,
    shuffled with a generator seeded from ``seed`` and the epoch, or in order without a seed.

    Parameters
    ----------
    X : ndarray, shape (n, ...)
    y : ndarray, shape (n,) or (n, L)
    batch_size : int
    seed : int, optional
    """

    def __init__(self, X, y, batch_size: int, seed: int | None = None):
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.float32))
        self.batch_size, self.seed = int(batch_size), seed

    def __len__(self) -> int:
        return len(self.X)

    def batches(self, epoch: int = 0):
        if self.seed is None:
            order = torch.arange(len(self.X))
        else:
            gen = torch.Generator().manual_seed(int(self.seed) * 100_003 + int(epoch))
            order = torch.randperm(len(self.X), generator=gen)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.X[idx], self.y[idx], idx.numpy()


def _tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a, dtype=np.float32))


def _autocast(device: torch.device, on: bool):
    if on and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


@torch.no_grad()
def score(
    model: nn.Module,
    batches: Iterable[tuple],
    *,
    n: int | None = None,
    device: torch.device | str = "cpu",
    amp: bool = True,
    logits: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a model for every example of a pass over ``batches``.

    The one scoring path of the workflow: validation, evaluation, the report's tables and
    ``predict`` all score through it.

    Parameters
    ----------
    model : nn.Module
        Output (B,) (one label) or (B, L) (one logit per label).
    batches : iterable of tuple
        ``(x, y)`` or ``(x, y, index)``: with ``index`` (positions of the examples in the
        clip list) the rows land at those positions, else in the order given.
    n : int, optional
        Examples in the list (with ``index``); default: the number seen.
    device : torch.device or str
    amp : bool
        bfloat16 autocast on CUDA.
    logits : bool
        Return logits instead of probabilities.

    Returns
    -------
    scores : ndarray of float32, shape (n, L)
        L = 1 for a one-label model. NaN for positions no batch gave.
    targets : ndarray of float32, shape (n, L) or (n, 1)
        The batches' targets, in the same rows (NaN where none).
    """
    device = torch.device(device)
    model.to(device).eval()
    outs, ys, idxs = [], [], []
    for b in batches:
        xb, yb = b[0], b[1]
        with _autocast(device, amp):
            z = model(_tensor(xb).to(device))
        z = z.float()
        z = z if logits else torch.sigmoid(z)
        z = z.reshape(len(z), -1).cpu().numpy()
        y = np.asarray(yb.cpu() if isinstance(yb, torch.Tensor) else yb, dtype=np.float32)
        outs.append(z)
        ys.append(y.reshape(len(z), -1))
        idxs.append(np.asarray(b[2]) if len(b) > 2 else None)
    width = outs[0].shape[1] if outs else int(getattr(model, "config", {}).get("n_labels", 1))
    if not outs:
        return np.zeros((n or 0, width), np.float32), np.zeros((n or 0, width), np.float32)
    if any(i is None for i in idxs):
        return np.concatenate(outs), np.concatenate(ys)
    total = int(n if n is not None else sum(len(i) for i in idxs))
    S = np.full((total, width), np.nan, dtype=np.float32)
    Y = np.full((total, ys[0].shape[1]), np.nan, dtype=np.float32)
    for z, y, i in zip(outs, ys, idxs, strict=True):
        S[i], Y[i] = z, y
    return S, Y


def _mean_finite(values: list[float]) -> float:
    v = [x for x in values if np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _val_measures(model, val, device, amp: bool) -> tuple[float, float, float]:
    """Validation loss (BCE of the logits), mean AP and mean ROC-AUC over the outputs."""
    Z, Y = score(model, val.batches(0), device=device, amp=amp, logits=True)
    if not len(Z):
        return math.nan, math.nan, math.nan
    ok = np.isfinite(Y)
    z, y = torch.from_numpy(Z[ok]), torch.from_numpy(Y[ok])
    loss = float(nn.functional.binary_cross_entropy_with_logits(z, y).item())
    cols = range(Z.shape[1])
    ap = _mean_finite([average_precision(Y[:, j] > 0.5, Z[:, j]) for j in cols])
    auc = _mean_finite([roc_auc(Y[:, j] > 0.5, Z[:, j]) for j in cols])
    return loss, ap, auc


def fit(
    build: Callable[[], nn.Module],
    train: BatchSource,
    val: BatchSource | None,
    *,
    settings: FitSettings,
    logger: logging.Logger | None = None,
    name: str = "model",
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[nn.Module, FitResult]:
    """Build a model after seeding, then train it with Adam and early stopping.

    ``train.batches(epoch)`` gives epoch ``epoch``'s training batches (``(x, y, ...)``, in
    the order to train on); ``val.batches(0)`` one pass over the validation examples. A batch
    of one example is skipped when there are more (BatchNorm needs two). Targets broadcast
    against the output: (B,) against (B,) or an ensemble's (members, B); (B, L) against (B, L).

    Early stopping watches ``settings.monitor`` on the validation examples. Training stops
    after ``patience`` epochs without improvement, never before epoch ``min_epochs``; the
    weights of the best epoch are restored. Without validation examples every epoch runs and
    the last weights are kept. One progress line per epoch is logged.

    Parameters
    ----------
    build : callable
        Returns the model, normalisation set. Called after :func:`seed_everything`, so the
        initial weights are a function of ``settings.seed`` alone.
    train, val : BatchSource
    settings : FitSettings
    logger : logging.Logger, optional
    name : str
        Prefix of the log lines.
    loss : callable, optional
        ``loss(logits, targets)`` of a training batch (e.g. :func:`~.teacher.distill_loss`,
        whose targets are wider than the output); default: binary cross-entropy. Validation
        always uses binary cross-entropy against the labels.

    Returns
    -------
    model : nn.Module
        In eval mode, with the best epoch's weights.
    result : FitResult
    """
    logger = logger or log
    device = torch.device(settings.device)
    deterministic()
    seed_everything(settings.seed)
    model = build().to(device)
    rng = np.random.default_rng([settings.seed, 0x4D58])  # mixup
    gen = torch.Generator().manual_seed(settings.seed)  # SpecAugment
    fill = getattr(model, "mean", torch.zeros(())).detach().to(device)
    n_train, n_val = len(train), (0 if val is None else len(val))
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    bce = nn.BCEWithLogitsLoss()

    def loss_fn(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return bce(z, y.expand_as(z)) if loss is None else loss(z, y)

    result = FitResult()
    best_cost, best_state, waited = math.inf, copy.deepcopy(model.state_dict()), 0
    t_start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        total, seen = 0.0, 0
        for step, b in enumerate(train.batches(epoch - 1), 1):
            xb, yb = b[0], b[1]
            if step % RELEASE_EVERY == 0:
                release_memory()
            if len(xb) < 2 and n_train > 1:  # BatchNorm needs 2+ examples
                continue
            xb, yb = _tensor(xb).to(device), _tensor(yb).float().to(device)
            if settings.specaugment is not None and settings.specaugment.active and xb.ndim == 4:
                xb = spec_augment(xb, settings.specaugment, fill=fill, generator=gen)
            xb, yb = mixup(xb, yb, alpha=settings.mixup, rng=rng)
            opt.zero_grad(set_to_none=True)
            with _autocast(device, settings.amp):
                z = model(xb)
            z = z.float()
            batch_loss = loss_fn(z, yb)
            batch_loss.backward()
            opt.step()
            total += batch_loss.item() * len(xb)
            seen += len(xb)
        train_secs, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        release_memory()
        if n_val:
            val_loss, val_ap, val_auc = _val_measures(model, val, device, settings.amp)
        else:
            val_loss = val_ap = val_auc = math.nan
        secs = time.perf_counter() - t0
        use_loss = settings.monitor == "loss" or not np.isfinite(val_ap)
        cost = val_loss if use_loss else -val_ap
        improved = n_val == 0 or (np.isfinite(cost) and cost < best_cost - 1e-4)
        if improved:
            best_cost, waited, result.best_epoch = cost, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "val_loss": val_loss,
                "val_ap": val_ap,
                "val_auc": val_auc,
                "seconds": secs,
                "clips_per_s": seen / max(train_secs, 1e-9),
                "clips_per_cpu_s": seen / max(train_cpu, 1e-9),
                "best": False,
            }
        )
        scored = (
            f"val loss {val_loss:.4f}, val AP {val_ap:.4f}, val AUC {val_auc:.3f}"
            if n_val else "no val part (fixed epochs)"
        )  # fmt: skip
        logger.info(
            "%s epoch %d/%d: train loss %.4f, %s (%.1f s, %.0f clips/s)%s",
            name, epoch, settings.epochs, total / max(seen, 1), scored,
            secs, seen / max(train_secs, 1e-9), " *" if improved else "",
        )  # fmt: skip
        if n_val and waited >= settings.patience and epoch >= settings.min_epochs:
            logger.info(
                "%s: early stop after epoch %d (best epoch %d, val %s %.4f)",
                name, epoch, result.best_epoch, settings.monitor,
                best_cost if use_loss else -best_cost,
            )  # fmt: skip
            break
    model.load_state_dict(best_state)
    model.eval()
    for h in result.history:
        h["best"] = h["epoch"] == result.best_epoch
    result.seconds = time.perf_counter() - t_start
    return model, result


def fit_arrays(
    build: Callable[[], nn.Module],
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    settings: FitSettings,
    batch_size: int = 32,
    logger: logging.Logger | None = None,
    name: str = "model",
) -> tuple[nn.Module, FitResult]:
    """:func:`fit` on in-memory arrays (:class:`ArrayBatches`: the train examples shuffled
    anew each epoch, the val examples in order, ``2 * batch_size`` at a time)."""
    train = ArrayBatches(X_train, y_train, batch_size, settings.seed)
    val = None if X_val is None else ArrayBatches(X_val, y_val, 2 * batch_size)
    return fit(build, train, val, settings=settings, logger=logger, name=name)


def predict_arrays(
    model: nn.Module, X: np.ndarray, *, device: torch.device | str = "cpu", batch_size: int = 64
) -> np.ndarray:
    """Probabilities of ``model`` for every example of ``X`` (:func:`score`): shape (n,) for
    a one-output model, else (n, L)."""
    S, _ = score(model, ArrayBatches(X, np.zeros(len(X)), batch_size).batches(), n=len(X),
                 device=device)  # fmt: skip
    return S[:, 0] if S.shape[1] == 1 else S
