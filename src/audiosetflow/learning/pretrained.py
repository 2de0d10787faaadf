"""Start a CNN14 from a user's PANNs checkpoint (``model.init``).

PANNs publishes CNN14 as ``Cnn14_mAP=0.431.pth``: a :func:`torch.save` dict whose key
``model`` holds the ``state_dict`` of PANNs' ``Cnn14`` (527 AudioSet outputs, 64 mel bins).
:func:`read_panns_state` reads it (``weights_only``: no code runs) and
:func:`init_from_panns` copies it into a :class:`~.models.Cnn14` of the same width:

* PANNs' front-end buffers (``spectrogram_extractor.*``, ``logmel_extractor.*``: its STFT
  kernels and mel filter bank) are ignored: the workflow computes the log-mel itself;
* every other trunk tensor (``bn0``, ``conv_block1..6``, ``fc1``) must be there with the
  model's shape: another width, another number of mel bins (``bn0``) or a missing tensor is
  a :class:`~.checkpoint.CheckpointError` naming the file and the tensor;
* the output layer ``fc_audioset`` (527 rows in AudioSet's class order, the ``index`` of
  ``class_labels_indices.csv``) is mapped to the selected labels by MID (``head: map``: row
  ``index`` of the label's MID; a label the checkpoint has no row for keeps its fresh
  initialisation) or left freshly initialised (``head: replace``).

The model's input normalisation is set to the identity (mean 0, std 1): PANNs feeds the raw
log-mel to ``bn0``, whose running statistics are the checkpoint's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .checkpoint import MAX_FILE_BYTES, CheckpointError
from .models import Cnn14

__all__ = [
    "IGNORED_PREFIXES",
    "INIT_HEADS",
    "read_panns_state",
    "init_from_panns",
    "freeze_trunk",
]

#: PANNs' front-end buffers, not used: the workflow computes the log-mel.
IGNORED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")
#: What happens to the checkpoint's output layer (``model.init_head``).
INIT_HEADS = ("map", "replace")


def _fail(path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}")


def read_panns_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a PANNs checkpoint (a dict with key ``model``).

    Raises
    ------
    CheckpointError
        One line naming the file and what is wrong (missing, truncated, not a PANNs
        checkpoint).
    """
    p = Path(path)
    if not p.is_file():
        raise _fail(path, "no such file" if not p.exists() else "not a regular file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise _fail(path, f"{p.stat().st_size} bytes: larger than any CNN14 checkpoint")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, it is not a checkpoint
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        why = f" ({type(exc).__name__}: {first})" if first else ""
        raise _fail(
            path, f"not a PANNs checkpoint: torch cannot read it (truncated?){why}"
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        keys = sorted(map(str, raw))[:5] if isinstance(raw, dict) else type(raw).__name__
        raise _fail(path, f"not a PANNs checkpoint: no 'model' state_dict (found {keys})")
    state = raw["model"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise _fail(path, "not a PANNs checkpoint: 'model' is not a mapping of tensors")
    return state


def init_from_panns(
    model: Cnn14,
    path: str | Path,
    *,
    label_indices: Sequence[int | None],
    head: str = "map",
) -> dict:
    """Copy a PANNs CNN14 checkpoint into ``model`` (in place), mapping its outputs.

    Parameters
    ----------
    model : Cnn14
        Built for the selected labels (``n_labels == len(label_indices)``).
    path : path
        The PANNs checkpoint.
    label_indices : sequence of int or None
        Per output of ``model``: the AudioSet class index of its MID (the row of the
        checkpoint's ``fc_audioset``), None where unknown.
    head : {"map", "replace"}

    Returns
    -------
    dict
        ``path`` (the file name), ``head``, ``n_outputs`` (the checkpoint's), ``mapped``
        (outputs taken from it), ``fresh`` (outputs left initialised), ``ignored`` (the
        front-end tensors not used).

    Raises
    ------
    CheckpointError
        A tensor missing or of another shape than the model's (one line naming it).
    ValueError
        An unknown ``head`` or a wrong number of ``label_indices``.
    """
    if head not in INIT_HEADS:
        raise ValueError(f"model.init_head is {head!r}; use one of {INIT_HEADS}")
    if len(label_indices) != model.config["n_labels"]:
        raise ValueError(
            f"{len(label_indices)} label indices for {model.config['n_labels']} outputs"
        )
    state = read_panns_state(path)
    ignored = sorted(k for k in state if k.startswith(IGNORED_PREFIXES))
    own = model.state_dict()
    trunk = {k: v for k, v in own.items() if not k.startswith("fc_audioset.")}
    trunk.pop("mean")
    trunk.pop("std")
    for k, v in trunk.items():
        if k not in state:
            raise _fail(path, f"not a CNN14 checkpoint: no tensor {k}")
        if tuple(state[k].shape) != tuple(v.shape):
            hint = ""
            if k.startswith("bn0."):
                hint = f": it takes {state[k].shape[0]} mel bands, the features have {v.shape[0]}"
            elif k == "conv_block1.conv1.weight":
                hint = f" (width {state[k].shape[0]}; model.cnn14_width is {v.shape[0]})"
            raise _fail(
                path,
                f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(v.shape)}{hint}",
            )
    w, b = state.get("fc_audioset.weight"), state.get("fc_audioset.bias")
    if w is None or b is None or w.ndim != 2 or b.shape != w.shape[:1]:
        raise _fail(path, "not a CNN14 checkpoint: no output layer fc_audioset (weight, bias)")
    if w.shape[1] != own["fc_audioset.weight"].shape[1]:
        raise _fail(path, f"fc_audioset.weight has {w.shape[1]} inputs, the model needs "
                          f"{own['fc_audioset.weight'].shape[1]}")  # fmt: skip
    new = dict(own)
    new.update({k: state[k].to(v.dtype) for k, v in trunk.items()})
    n_out = int(w.shape[0])
    mapped = 0
    if head == "map":
        weight, bias = own["fc_audioset.weight"].clone(), own["fc_audioset.bias"].clone()
        for j, i in enumerate(label_indices):
            if i is not None and 0 <= int(i) < n_out:
                weight[j], bias[j] = w[int(i)], b[int(i)]
                mapped += 1
        new["fc_audioset.weight"], new["fc_audioset.bias"] = weight, bias
    new["mean"] = torch.zeros_like(own["mean"])
    new["std"] = torch.ones_like(own["std"])
    model.load_state_dict(new)
    return {
        "path": Path(path).name,
        "head": head,
        "n_outputs": n_out,
        "mapped": mapped,
        "fresh": len(label_indices) - mapped,
        "ignored": ignored,
    }


def freeze_trunk(model: Cnn14) -> int:
    """Stop gradients to every parameter but the output layer's; the number frozen.

    Batch norm running statistics still follow the training data in training mode.
    """
    frozen = model.trunk_parameters()
    for p in frozen:
        p.requires_grad_(False)
    return sum(p.numel() for p in frozen)
