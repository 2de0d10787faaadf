"""PyTorch models: a small CNN on log-mel (plus optional extra channels), the seed's dense
network on summary features, the multi-label CNN (the same trunk, one logit per label) and
CNN14 as PANNs defines it (:class:`Cnn14`, for one label or many).

Architectures (``model.arch``, :data:`ARCHS`): ``small`` (:class:`AudioCNN` /
:class:`MultiLabelCNN`) and ``cnn14`` (:class:`Cnn14`). Every CNN takes (batch, channels,
n_mels, frames) inputs of any size and has :meth:`embed` (the clip embedding before the
output layer).

Every model holds its input normalisation (``mean``/``std`` buffers, fitted on the training
set) so that a checkpoint's ``state_dict`` alone reproduces predictions. The binary models
output one logit per example, the multi-label one a logit per label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["AudioCNN", "DenseNet", "MultiLabelCNN", "Cnn14", "build_model", "make_cnn",
           "MODEL_KINDS", "ARCHS"]  # fmt: skip

#: Kinds of model (a checkpoint's ``kind``): one label's CNN and dense baseline, the
#: multi-label CNN.
MODEL_KINDS = ("cnn", "dense", "multilabel")
#: CNN architectures (``model.arch``; a checkpoint's ``arch``): the small CNN, PANNs' CNN14.
ARCHS = ("small", "cnn14")


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
            "arch": "small",
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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, n_rows, frames) -> clip embeddings (batch, 8 * width): the
        frequency-averaged trunk output pooled over time (mean and max concatenated)."""
        h = self.features(self.normalize(x))
        h = h.mean(dim=2)  # over frequency: (batch, ch, time)
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, n_rows, frames) -> logits (batch,)."""
        return self.head(self.embed(x)).squeeze(1)


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
        self.config = {"arch": "small", "n_labels": int(n_labels),
                       **{k: v for k, v in self.config.items() if k != "arch"}}  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * width, int(n_labels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, n_rows, frames) -> logits (batch, n_labels)."""
        return self.head(self.embed(x))


class _Cnn14Block(nn.Module):
    """Two 3x3 convolutions (no bias), each followed by batch norm and ReLU: PANNs'
    ``ConvBlock`` (parameter names ``conv1``, ``bn1``, ``conv2``, ``bn2``)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        if pool > 1:
            # PANNs' 2x2 average pooling (floor); an axis already down to one cell is kept,
            # so that inputs of any size work (identical to PANNs wherever PANNs runs).
            k = (min(pool, x.shape[2]), min(pool, x.shape[3]))
            x = nn.functional.avg_pool2d(x, k)
        return x


class Cnn14(_Normalized):
    """CNN14 as PANNs defines it (Kong et al. 2020, ``Cnn14`` of
    ``audioset_tagging_cnn/pytorch/models.py``), on a log-mel computed by the workflow.

    ``bn0`` (batch norm over the mel bins), six blocks of two 3x3 convolutions with 64, 128,
    256, 512, 1024 and 2048 channels (``width`` times 1, 2, 4, 8, 16, 32), 2x2 average
    pooling after the first five, dropout 0.2 after each; the mean over frequency, then the
    max plus the mean over time, dropout 0.5, ``fc1`` (ReLU) and the output layer
    ``fc_audioset``. The parameter names are PANNs', so that a PANNs ``state_dict`` loads
    (:mod:`~.pretrained`); PANNs' front-end buffers (``spectrogram_extractor.*``,
    ``logmel_extractor.*``) have no counterpart: the workflow computes the log-mel itself.
    Internally the input is turned to PANNs' (batch, channels, time, mel) orientation, so
    that a pretrained kernel sees the axes it was trained on.

    Parameters
    ----------
    n_labels : int
        Outputs (527 in PANNs), >= 1.
    n_rows : int
        Mel bands of the input (64 in PANNs).
    in_channels : int
        Input channels (1: log-mel).
    width : int
        Channels of the first block; 64 is CNN14 (about 80 M parameters with 527 outputs).
        A smaller width keeps every name and the layout, for CPU tests.
    dropout : float
        Dropout before ``fc1`` and of the blocks' output is PANNs' (0.5, 0.2); this is the
        one before ``fc1``.
    binary : bool
        One output squeezed to shape (batch,) (a per-label model, checkpoint kind ``cnn``).
    """

    def __init__(
        self,
        n_labels: int = 527,
        n_rows: int = 64,
        in_channels: int = 1,
        *,
        width: int = 64,
        dropout: float = 0.5,
        binary: bool = False,
    ):
        super().__init__()
        if n_labels < 1 or width < 1:
            raise ValueError("n_labels >= 1 and width >= 1")
        if binary and n_labels != 1:
            raise ValueError("a binary CNN14 has one output")
        self.config = {
            "arch": "cnn14",
            "n_labels": int(n_labels),
            "n_rows": int(n_rows),
            "in_channels": int(in_channels),
            "width": int(width),
            "dropout": float(dropout),
            "binary": bool(binary),
        }
        self._init_norm((in_channels, n_rows, 1))
        self.bn0 = nn.BatchNorm2d(n_rows)
        chans = [in_channels] + [width * 2**i for i in range(6)]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _Cnn14Block(chans[i], chans[i + 1]))
        self.fc1 = nn.Linear(chans[-1], chans[-1])
        self.fc_audioset = nn.Linear(chans[-1], n_labels)
        for fc in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    @property
    def embedding_size(self) -> int:
        return self.fc1.out_features

    def trunk_parameters(self):
        """Every parameter but the output layer's (what ``model.freeze_trunk`` freezes)."""
        return [p for n, p in self.named_parameters() if not n.startswith("fc_audioset.")]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, n_rows, frames) -> embeddings (batch, 32 * width): ``fc1``'s
        output after ReLU (PANNs' ``embedding``)."""
        x = self.normalize(x).transpose(2, 3)  # (B, C, T, F): PANNs' orientation
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # over the mel bins
        drop = nn.functional.dropout
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, pool=2 if i < 6 else 1)
            x = drop(x, p=0.2, training=self.training)
        x = x.mean(dim=3)  # over frequency: (B, C, T)
        x = x.amax(dim=2) + x.mean(dim=2)
        x = drop(x, p=self.config["dropout"], training=self.training)
        return torch.relu(self.fc1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, n_rows, frames) -> logits (batch, n_labels), or (batch,) when
        ``binary``."""
        z = self.fc_audioset(self.embed(x))
        return z.squeeze(1) if self.config["binary"] else z


def build_model(kind: str, config: dict) -> nn.Module:
    """Build a model from its kind (:data:`MODEL_KINDS`) and its ``config`` dict (as stored in a
    checkpoint; ``config["arch"]``, one of :data:`ARCHS`, chooses the CNN: ``small`` where
    absent).

    Raises
    ------
    ValueError
        If the kind is unknown.
    TypeError
        If ``config`` lacks a key the model needs or has one it does not take.
    """
    cfg = dict(config)
    arch = cfg.pop("arch", "small")  # checkpoints before CNN14 have no arch: the small CNN
    if kind in ("cnn", "multilabel") and arch not in ARCHS:
        raise ValueError(f"unknown model arch {arch!r}; expected one of {ARCHS}")
    if kind in ("cnn", "multilabel") and arch == "cnn14":
        if kind == "cnn":
            cfg.setdefault("n_labels", 1)
            cfg["binary"] = True
        return Cnn14(cfg.pop("n_labels"), cfg.pop("n_rows"), cfg.pop("in_channels"), **cfg)
    if kind == "multilabel":
        return MultiLabelCNN(cfg.pop("n_labels"), cfg.pop("n_rows"), cfg.pop("in_channels"), **cfg)
    if kind == "cnn":
        return AudioCNN(cfg.pop("n_rows"), cfg.pop("in_channels"), **cfg)
    if kind == "dense":
        return DenseNet(cfg.pop("n_inputs"), **cfg)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")


def make_cnn(
    arch: str,
    *,
    n_labels: int | None,
    n_rows: int,
    in_channels: int = 1,
    width: int = 16,
    cnn14_width: int = 64,
    dropout: float = 0.3,
) -> nn.Module:
    """The CNN of ``arch`` (:data:`ARCHS`): ``n_labels`` None is a per-label (binary) model.

    ``width`` is the small CNN's first block, ``cnn14_width`` CNN14's (64: PANNs' CNN14);
    ``dropout`` is the small CNN's before its output (CNN14 keeps PANNs' 0.5).
    """
    if arch == "small":
        if n_labels is None:
            return AudioCNN(n_rows, in_channels, width=width, dropout=dropout)
        return MultiLabelCNN(n_labels, n_rows, in_channels, width=width, dropout=dropout)
    if arch == "cnn14":
        return Cnn14(n_labels or 1, n_rows, in_channels, width=cnn14_width,
                     binary=n_labels is None)  # fmt: skip
    raise ValueError(f"unknown model arch {arch!r}; expected one of {ARCHS}")
