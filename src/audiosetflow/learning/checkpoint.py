"""One checkpoint format for every kind of model (per-label CNN, dense baseline, multi-label).

A checkpoint is a file written with :func:`torch.save` (readable with
``torch.load(path, weights_only=True)``) holding a dict:

``format``
    :data:`CHECKPOINT_FORMAT`.
``header``
    JSON text: ``kind`` (:data:`~.models.MODEL_KINDS`), ``arch`` (:data:`~.models.ARCHS`;
    ``small`` where absent, and ``model_config.arch`` must agree), ``model_config``,
    ``labels`` (``mid``, ``name``, ``slug`` per output), ``thresholds`` (one per label, null
    where undefined),
    ``inputs`` (``"log_mel"`` or ``"summary"``), ``extra_channels`` or ``summary_columns``,
    ``feature_params``, ``sample_rate``, ``clip_seconds``, ``normalization`` (``mean`` and
    ``std`` as nested lists, also in the weights), ``provenance``
    (:func:`audiosetflow.provenance.provenance`) and ``info`` (data counts, test metrics).
``state_dict``
    The weights.

:func:`read_header` reads and checks the header with the weights memory-mapped, never read;
:func:`load_checkpoint` checks every field and every tensor's shape against the model the
header describes (built on torch's ``meta`` device, which allocates nothing) before a byte of
the model is allocated. A malformed file is one line naming it and what is wrong
(:class:`CheckpointError`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io import atomic_path
from .inputs import stack_channels
from .metrics import _clean
from .models import ARCHS, MODEL_KINDS, build_model
from .trainer import score

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "read_header",
    "load_checkpoint",
    "window_starts",
]

CHECKPOINT_FORMAT = "audiosetflow-checkpoint-2"
#: Limits a header must keep (well above any real model), checked before anything is built.
MAX_LABELS = 100_000
MAX_FILE_BYTES = 4 << 30
_CONFIG_LIMITS = {
    "n_rows": (1, 4096),
    "in_channels": (1, 256),
    "width": (1, 4096),
    "n_labels": (1, MAX_LABELS),
    "n_inputs": (1, 1_000_000),
    "members": (1, 1024),
}


class CheckpointError(InputError):
    """A file that is not a usable audiosetflow checkpoint (one line naming it)."""


@dataclass
class Checkpoint:
    """A trained model and all that scoring a media file needs.

    Attributes
    ----------
    model : nn.Module
        In eval mode, normalisation included.
    kind : str
        ``"cnn"``, ``"dense"`` or ``"multilabel"``.
    labels : list of dict
        ``mid``, ``name``, ``slug`` of each output, in order.
    thresholds : ndarray of float, shape (n_labels,)
        Decision thresholds (NaN where none could be chosen).
    feature_params : dict
        :class:`audiosetflow.audio.features.FeatureParams` fields.
    sample_rate : int
    clip_seconds : float
        Length of one window (the training clips' length).
    extra_channels : list of str
        Frame-level features stacked after log-mel (CNNs).
    header : dict
        The whole header as stored (``provenance``, ``info``...).
    path : str
    """

    model: nn.Module
    kind: str
    labels: list[dict]
    thresholds: np.ndarray
    feature_params: dict
    sample_rate: int
    clip_seconds: float
    extra_channels: list[str] = field(default_factory=list)
    header: dict = field(default_factory=dict)
    path: str = ""

    @property
    def label(self) -> dict:
        """The first (for a binary model: the only) label."""
        return self.labels[0]

    @property
    def threshold(self) -> float:
        """The first label's threshold (0.5 where none was stored)."""
        t = float(self.thresholds[0])
        return t if math.isfinite(t) else 0.5

    @property
    def info(self) -> dict:
        """Training data counts and test metrics stored with the model."""
        return dict(self.header.get("info") or {})

    @property
    def provenance(self) -> dict:
        return dict(self.header.get("provenance") or {})

    def input_from_features(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's input (C, n_mels, T) of one clip from
        :func:`audiosetflow.audio.features.compute`."""
        return stack_channels(feats["log_mel"], [feats[k] for k in self.extra_channels])

    def predict(
        self, X: np.ndarray, *, device: torch.device | str = "cpu", batch_size: int = 32
    ) -> np.ndarray:
        """Probabilities for inputs (N, C, n_mels, T): shape (N,) for a binary model, (N, L)
        for a multi-label one (:func:`~.trainer.score`)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        batches = (
            (X[i : i + batch_size], np.zeros(len(X[i : i + batch_size]), np.float32))
            for i in range(0, len(X), batch_size)
        )
        S, _ = score(self.model, batches, device=device)
        if not len(S):
            S = np.zeros((0, len(self.labels)), np.float32)
        return S if self.kind == "multilabel" else S[:, 0]

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
        scores : ndarray of float32, shape (n_windows, n_labels)
        duration : float
            Seconds of audio decoded.
        """
        from ..predicting import iter_windows, score_windows

        windows = iter_windows(
            path, window=self.clip_seconds, hop=hop, sample_rate=self.sample_rate
        )
        parts = list(
            score_windows(
                windows,
                feature_params=self.feature_params,
                to_input=self.input_from_features,
                predict=lambda X: self.predict(X, device=device),
            )
        )
        starts = np.concatenate([s for s, _ in parts])
        scores = np.concatenate([np.asarray(sc).reshape(len(s), -1) for s, sc in parts])
        return starts, scores.astype(np.float32, copy=False), float(windows.duration)


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


def _kind_of(model: nn.Module) -> str:
    from .models import AudioCNN, Cnn14, DenseNet, MultiLabelCNN

    if isinstance(model, Cnn14):
        return "cnn" if model.config["binary"] else "multilabel"
    if isinstance(model, MultiLabelCNN):
        return "multilabel"
    if isinstance(model, AudioCNN):
        return "cnn"
    if isinstance(model, DenseNet):
        return "dense"
    raise TypeError(f"cannot checkpoint a {type(model).__name__}")


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    labels: Sequence[Mapping[str, str]],
    thresholds: Sequence[float],
    feature_params: Mapping,
    sample_rate: int,
    clip_seconds: float,
    extra_channels: Sequence[str] = (),
    summary_columns: Sequence[str] = (),
    provenance: Mapping | None = None,
    info: Mapping | None = None,
) -> None:
    """Write a checkpoint of any kind atomically (the format: module docstring).

    Parameters
    ----------
    path : path
    model : nn.Module
        :class:`~.models.AudioCNN`, :class:`~.models.DenseNet` or
        :class:`~.models.MultiLabelCNN` (moved to the CPU for saving).
    labels : sequence of mapping
        ``mid``, ``name`` (and ``slug``) per output.
    thresholds : sequence of float
        One per label.
    feature_params : mapping
    sample_rate : int
    clip_seconds : float
    extra_channels : sequence of str
        CNN input channels after log-mel.
    summary_columns : sequence of str
        The dense model's inputs.
    provenance, info : mapping, optional
    """
    kind = _kind_of(model)
    if len(thresholds) != len(labels):
        raise ValueError(f"{len(thresholds)} thresholds for {len(labels)} labels")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    header = {
        "kind": kind,
        "arch": model.config.get("arch", "small") if kind != "dense" else None,
        "model_config": dict(model.config),
        "labels": [
            {"mid": str(lab["mid"]), "name": str(lab["name"]), "slug": str(lab.get("slug", ""))}
            for lab in labels
        ],
        "thresholds": [float(t) for t in thresholds],
        "inputs": "summary" if kind == "dense" else "log_mel",
        "extra_channels": list(extra_channels),
        "summary_columns": list(summary_columns),
        "feature_params": dict(feature_params),
        "sample_rate": int(sample_rate),
        "clip_seconds": float(clip_seconds),
        "normalization": {
            "mean": state["mean"].double().tolist(),
            "std": state["std"].double().tolist(),
        },
        "provenance": dict(provenance or {}),
        "info": dict(info or {}),
    }
    text = json.dumps(_clean(header), allow_nan=False, default=str)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "header": text, "state_dict": state}, tmp)


def _fail(path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}")


def _load_raw(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise _fail(path, "no such file")
    if not p.is_file():
        raise _fail(path, "not a regular file")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _fail(path, f"{size} bytes: larger than any audiosetflow checkpoint")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the file is not one of ours
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        why = f" ({type(exc).__name__}: {first})" if first else ""
        raise _fail(path, f"not an audiosetflow checkpoint: torch cannot read it{why}") from None
    if not isinstance(raw, dict):
        raise _fail(path, "not an audiosetflow checkpoint (not a dict)")
    fmt = raw.get("format", raw.get("format_version"))
    if fmt != CHECKPOINT_FORMAT:
        if fmt in (1, "audiosetflow-multilabel-1"):
            raise _fail(
                path, "written by an older audiosetflow (format 1): retrain it with this version"
            )
        raise _fail(path, f"not an audiosetflow checkpoint (format {fmt!r})")
    return raw


def _num(h: Mapping, key: str, lo: float, hi: float, path, *, integer: bool = False) -> None:
    v = h.get(key)
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not (lo <= v <= hi):
        raise _fail(path, f"header {key} is {v!r}: expected a number in [{lo}, {hi}]")


def _check_header(h: Any, path) -> dict:
    if not isinstance(h, dict):
        raise _fail(path, "header is not a JSON object")
    kind = h.get("kind")
    if kind not in MODEL_KINDS:
        raise _fail(path, f"header kind {kind!r} is not one of {MODEL_KINDS}")
    labels, thr = h.get("labels"), h.get("thresholds")
    if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS:
        n = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise _fail(path, f"header labels: {n}: expected a list of 1 to {MAX_LABELS}")
    for i, lab in enumerate(labels):
        if not isinstance(lab, dict) or not isinstance(lab.get("mid"), str):
            raise _fail(path, f"header labels[{i}] has no mid")
    if not isinstance(thr, list) or len(thr) != len(labels):
        raise _fail(path, f"header thresholds: expected one per label ({len(labels)})")
    if any(t is not None and not isinstance(t, (int, float)) for t in thr):
        raise _fail(path, "header thresholds must be numbers or null")
    cfg = h.get("model_config")
    if not isinstance(cfg, dict):
        raise _fail(path, "header model_config is not an object")
    if kind != "dense":
        arch = h.get("arch", "small")
        if arch not in ARCHS:
            raise _fail(path, f"header arch {arch!r} is not one of {ARCHS}")
        if cfg.get("arch", "small") != arch:
            raise _fail(path, f"header arch {arch!r} but model_config arch {cfg.get('arch')!r}")
    for key, (lo, hi) in _CONFIG_LIMITS.items():
        if key in cfg:
            _num(cfg, key, lo, hi, path, integer=True)
    hidden = cfg.get("hidden", [])
    if not isinstance(hidden, list) or any(
        not isinstance(v, int) or not 1 <= v <= 1 << 16 for v in hidden
    ):
        raise _fail(path, f"header model_config hidden is {hidden!r}")
    if kind == "multilabel" and cfg.get("n_labels") != len(labels):
        raise _fail(path, f"model has {cfg.get('n_labels')} outputs but {len(labels)} labels")
    if kind != "multilabel" and len(labels) != 1:
        raise _fail(path, f"a {kind} model has one label, the header lists {len(labels)}")
    _num(h, "sample_rate", 1000, 384_000, path, integer=True)
    _num(h, "clip_seconds", 0.01, 3600, path)
    if not isinstance(h.get("feature_params"), dict):
        raise _fail(path, "header feature_params is not an object")
    extra = h.get("extra_channels", [])
    if not isinstance(extra, list) or not all(isinstance(e, str) for e in extra):
        raise _fail(path, "header extra_channels must be a list of names")
    return h


def read_header(path: str | Path) -> dict:
    """The checked header of a checkpoint; the weights are memory-mapped, not read.

    Raises
    ------
    CheckpointError
        One line naming the file and what is wrong.
    """
    return _header(_load_raw(path), path)


def _header(raw: dict, path) -> dict:
    """The checked header of a loaded checkpoint dict."""
    try:
        header = json.loads(raw.get("header"))
    except (TypeError, ValueError):
        raise _fail(path, "header is not JSON text") from None
    return _check_header(header, path)


def load_checkpoint(
    path: str | Path, *, device: torch.device | str = "cpu", kind: str | None = None
) -> Checkpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Every tensor's name and shape is compared with the model the header describes, built on
    the ``meta`` device (nothing allocated), before the model is built for real.

    Parameters
    ----------
    path : path
    device : torch.device or str
    kind : str, optional
        The kind expected (e.g. ``"multilabel"``); another is an error.

    Raises
    ------
    CheckpointError
        One line naming the file and what is wrong.
    """
    raw = _load_raw(path)
    header = _header(raw, path)
    if kind is not None and header["kind"] != kind:
        raise _fail(path, f"a {header['kind']} checkpoint, not a {kind} one")
    state = raw.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(path, "state_dict is not a mapping of tensors")
    try:
        with torch.device("meta"):
            skeleton = build_model(header["kind"], header["model_config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise _fail(path, f"header model_config does not describe a model ({exc})") from None
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want.keys() != have.keys():
        missing, extra = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
        raise _fail(
            path, f"weights do not match the model (missing {missing[:3]}, extra {extra[:3]})"
        )
    bad = [k for k in want if want[k] != have[k]]
    if bad:
        k = bad[0]
        raise _fail(path, f"weight {k} has shape {have[k]}, the model needs {want[k]}")
    model = build_model(header["kind"], header["model_config"])
    model.load_state_dict(state)
    model.to(torch.device(device)).eval()
    thresholds = np.asarray(
        [np.nan if t is None else float(t) for t in header["thresholds"]], dtype=np.float64
    )
    return Checkpoint(
        model=model,
        kind=header["kind"],
        labels=[dict(lab) for lab in header["labels"]],
        thresholds=thresholds,
        feature_params=dict(header["feature_params"]),
        sample_rate=int(header["sample_rate"]),
        clip_seconds=float(header["clip_seconds"]),
        extra_channels=list(header.get("extra_channels") or []),
        header=header,
        path=str(path),
    )
