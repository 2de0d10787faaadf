"""PyTorch models: a small CNN on log-mel (plus optional extra channels), the seed's dense
network on summary features, and the multi-label CNN (the same trunk, one logit per label).

Every model holds its input normalisation (``mean``/``std`` buffers, fitted on the training
set) so that a checkpoint's ``state_dict`` alone reproduces predictions. The binary models
output one logit per example, the multi-label one a logit per label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["AudioCNN", "DenseNet", "MultiLabelCNN", "build_model", "MODEL_KINDS"]

#: Kinds of model (a checkpoint's ``kind``): one label's CNN and dense baseline, the
#: multi-label CNN.
MODEL_KINDS = ("cnn", "dense", "multilabel")


class _Normalized(nn.Module):
    """Mixin holding ``mean``/``std`` buffers of the input (broadcast against one example)."""

    def _init_norm(self, shape: Sequence[int]) -> None:
        self.register_buffer("mean", torch.zeros(*shape))
        self.register_buffer("std", torch.ones(*shape))

    def set_normalization(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor):
        """Set the input mean and standard deviation (shape of one example or broadcastable).

        Standard deviations below 1e-6 are replaced by 1.
        """
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(self.mean.shape)
        std_t = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(self.std.shape)
        std_t = torch.where(std_t < 1e-6, torch.ones_like(std_t), std_t)
        self.mean.copy_(mean_t)
        self.std.copy_(std_t)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _block(c_in: int, c_out: int, *, kernel: int = 3, stride: int = 1, pool: int = 2):
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool > 1:
        layers.append(nn.MaxPool2d(pool, ceil_mode=True))  # short inputs still work
    return nn.Sequential(*layers)


class AudioCNN(_Normalized):
    """Small conv net for (channels, n_mels, frames) inputs, sized for CPU training.

    A strided 5x5 convolution and max pooling reduce a 128 x 431 log-mel by 4 in both axes
    before three 3x3 blocks; the frequency axis is then averaged and the time axis pooled
    (mean and max concatenated), so any number of frames works.

    Parameters
    ----------
    n_rows : int
        Frequency rows of the input (``n_mels``).
    in_channels : int
        Input channels (1 for log-mel alone, plus one per extra feature).
    width : int
        Channels of the first block; later blocks have 2x, 4x and 4x.
    dropout : float
        Dropout before the output layer.
    """

    def __init__(
        self, n_rows: int = 128, in_channels: int = 1, *, width: int = 16, dropout: float = 0.3
    ):
        super().__init__()
        self.config = {
            "n_rows": int(n_rows),
            "in_channels": int(in_channels),
            "width": int(width),
            "dropout": float(dropout),
        }
        self._init_norm((in_channels, n_rows, 1))
        w = width
        self.features = nn.Sequential(
            _block(in_channels, w, kernel=5, stride=2, pool=2),
            _block(w, 2 * w, pool=2),
            _block(2 * w, 4 * w, pool=2),
            _block(4 * w, 4 * w, pool=1),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * w, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, n_rows, frames) -> logits (batch,)."""
        h = self.features(self.normalize(x))
        h = h.mean(dim=2)  # over frequency: (batch, ch, time)
        h = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)
        return self.head(h).squeeze(1)


class _ParallelLinear(nn.Module):
    """``members`` independent linear layers applied side by side: (k, B, n_in) -> (k, B, n_out).

    Each member is initialised as :class:`torch.nn.Linear` would be (uniform in
    +-1/sqrt(n_in), weights and bias).
    """

    def __init__(self, members: int, n_in: int, n_out: int):
        super().__init__()
        bound = 1.0 / float(np.sqrt(n_in))
        self.weight = nn.Parameter(torch.empty(members, n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, n_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class DenseNet(_Normalized):
    """The seed project's approach: a dense network on a few summary features per clip, as
    an ensemble of ``members`` independently initialised networks trained side by side.

    In training mode the output is one logit per member and example, shape (members, batch)
    (each member has its own loss: :func:`~.training.fit_batches` broadcasts the targets); in
    eval mode it is the logit of the members' mean probability, shape (batch,). Averaging a
    few networks removes most of the variance of one small network's random start on a small
    training set, at the cost of one network's steps (the members share every batch).

    Parameters
    ----------
    n_inputs : int
        Number of summary features.
    hidden : sequence of int
        Sizes of the hidden layers.
    dropout : float
        Dropout after every hidden layer.
    members : int
        Networks in the ensemble, >= 1.
    """

    def __init__(
        self,
        n_inputs: int = 5,
        *,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.2,
        members: int = 1,
    ):
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, not {members}")
        self.config = {
            "n_inputs": int(n_inputs),
            "hidden": [int(h) for h in hidden],
            "dropout": float(dropout),
            "members": int(members),
        }
        self._init_norm((n_inputs,))
        layers: list[nn.Module] = []
        prev = n_inputs
        for h in hidden:
            layers += [
                _ParallelLinear(members, prev, h),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
            ]
            prev = h
        layers.append(_ParallelLinear(members, prev, 1))
        self.net = nn.Sequential(*layers)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_inputs) -> each member's logits, (members, batch)."""
        h = self.normalize(x).unsqueeze(0).expand(self.config["members"], -1, -1)
        return self.net(h).squeeze(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, n_inputs) -> logits: (members, batch) in training mode, else (batch,)."""
        z = self.member_logits(x)
        if self.training:
            return z
        return torch.logit(torch.sigmoid(z.double()).mean(dim=0), eps=1e-12).to(z.dtype)


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


def build_model(kind: str, config: dict) -> nn.Module:
    """Build a model from its kind (:data:`MODEL_KINDS`) and its ``config`` dict (as stored in a
    checkpoint).

    Raises
    ------
    ValueError
        If the kind is unknown.
    TypeError
        If ``config`` lacks a key the model needs or has one it does not take.
    """
    cfg = dict(config)
    if kind == "multilabel":
        return MultiLabelCNN(cfg.pop("n_labels"), cfg.pop("n_rows"), cfg.pop("in_channels"), **cfg)
    if kind == "cnn":
        return AudioCNN(cfg.pop("n_rows"), cfg.pop("in_channels"), **cfg)
    if kind == "dense":
        return DenseNet(cfg.pop("n_inputs"), **cfg)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")
