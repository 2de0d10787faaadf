"""What a trained checkpoint (``results/models/{label}.pt``) holds, for ``audiosetflow info``.

Read through :func:`audiosetflow.learning.training.load_checkpoint`; every field the
checkpoint does not store is named as absent instead of being guessed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .textsafe import escape

__all__ = ["checkpoint_info", "format_info", "info_json"]

_LABEL_KEYS = ("slug", "name", "mid")
# The test metrics run_train stores in the checkpoint's info, in the order they are shown.
_METRICS = (
    ("roc_auc", "ROC-AUC"),
    ("average_precision", "average precision"),
    ("f1", "F1"),
    ("accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("log_loss", "log loss"),
    ("threshold", "threshold"),
)
# Keys of info that the sections below show; any other key is listed as stored.
_KNOWN_INFO = {"test", "test_source", "dataset", "val"}


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Everything ``audiosetflow info`` shows about a checkpoint, as JSON values.

    Returns
    -------
    dict
        ``file``, ``kind``, ``label`` (``slug``, ``name``, ``mid``), ``threshold``,
        ``sample_rate``, ``clip_seconds``, ``extra_channels``, ``feature_params``, ``model``
        (``config``, ``parameters``), ``data`` (per part ``train``/``val``/``test``: ``n`` and
        ``n_pos`` where stored, and ``test_source``), ``metrics`` (``test``: the test metrics
        stored at training, or None), ``info`` (the checkpoint's ``info`` as stored) and
        ``absent`` (the fields the checkpoint does not hold).

    Raises
    ------
    ValueError
        If the file does not exist or is not an audiosetflow checkpoint (one line, naming it).
    """
    from .learning.checkpoint import load_checkpoint
    from .learning.multilabel import is_multilabel_checkpoint

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path}: no such file")
    if is_multilabel_checkpoint(p):
        return _multilabel_info(p)
    try:
        ck = load_checkpoint(p)
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "not a readable checkpoint" in text:  # torch.load's own message says little
            text = f"{path}: not an audiosetflow checkpoint (torch.load cannot read it)"
        elif str(path) not in text:
            text = f"{path}: not an audiosetflow checkpoint ({text})"
        raise ValueError(text) from None
    absent: list[str] = []
    label = {k: ck.label.get(k) for k in _LABEL_KEYS}
    absent += [f"label.{k}" for k, v in label.items() if not v]
    info = _plain(ck.info)
    data, data_absent = _data(info)
    absent += data_absent
    test = info.get("test") if isinstance(info.get("test"), Mapping) else None
    if test is None:
        absent.append("metrics.test")
    model = getattr(ck, "model", None)
    return {
        "file": str(path),
        "kind": ck.kind,
        "label": label,
        "threshold": ck.threshold,
        "sample_rate": ck.sample_rate,
        "clip_seconds": ck.clip_seconds,
        "extra_channels": list(ck.extra_channels),
        "feature_params": _plain(ck.feature_params),
        "model": {
            "config": _plain(dict(getattr(model, "config", {}) or {})),
            "parameters": int(sum(t.numel() for t in model.parameters())) if model else None,
        },
        "data": data,
        "metrics": {"test": test},
        "info": info,
        "absent": absent,
        "provenance": ck.provenance,
    }


def _multilabel_info(path: Path) -> dict[str, Any]:
    """:func:`checkpoint_info` of a multi-label checkpoint: ``kind`` ``multilabel``,
    ``labels`` (``mid``, ``name``, ``threshold`` each), the test mAP etc. under ``metrics``."""
    from .learning.multilabel import load_multilabel

    ck = load_multilabel(path)
    info = _plain(ck.info)
    return {
        "file": str(path),
        "kind": "multilabel",
        "labels": [
            {"mid": lab["mid"], "name": lab["name"], "threshold": float(t)}
            for lab, t in zip(ck.labels, ck.thresholds, strict=True)
        ],
        "sample_rate": ck.sample_rate,
        "clip_seconds": ck.clip_seconds,
        "feature_params": _plain(ck.feature_params),
        "model": {
            "config": _plain(dict(ck.model.config)),
            "parameters": int(sum(t.numel() for t in ck.model.parameters())),
        },
        "metrics": {k: info.get(k) for k in ("mAP", "mean_auc", "d_prime")},
        "info": info,
        "absent": [],
        "provenance": ck.provenance,
    }


def _format_multilabel(info: Mapping[str, Any]) -> str:
    m, model = info["metrics"], info["model"]
    labels = info["labels"]
    names = ", ".join(lab["name"] for lab in labels[:8]) + (", ..." if len(labels) > 8 else "")
    rows = [
        ("checkpoint", info["file"]),
        ("model", f"multi-label CNN, {model['parameters']:,} parameters"),
        ("model config", " ".join(f"{k}={_v(v)}" for k, v in model["config"].items())),
        ("labels", f"{len(labels)}: {names}"),
        (
            "thresholds",
            ", ".join(f"{lab['name']} {lab['threshold']:.4f}" for lab in labels)
            + " (per label, chosen on validation)",
        ),
        ("sample rate", f"{info['sample_rate']} Hz"),
        ("window", f"{info['clip_seconds']:g} s"),
        ("features", " ".join(f"{k}={v}" for k, v in info["feature_params"].items())),
        (
            "test metrics",
            f"mAP {_v(m['mAP'])}, mean AUC {_v(m['mean_auc'])}, d' {_v(m['d_prime'])}",
        ),  # fmt: skip
    ]
    for k in ("n_train", "n_val", "n_test", "test_source", "best_epoch"):
        if k in info["info"]:
            rows.append((k.replace("_", " "), _v(info["info"][k])))
    rows.append(("provenance", _provenance_text(info.get("provenance"))))
    return _aligned(rows)


def _data(info: Mapping) -> tuple[dict, list[str]]:
    """Clip counts per part: ``info['dataset']`` (``n_train``...) where stored, else what the
    stored metrics say (``n``, ``n_pos`` of the test set)."""
    stored = info.get("dataset") if isinstance(info.get("dataset"), Mapping) else {}
    data: dict[str, Any] = {}
    absent = []
    for part in ("train", "val", "test"):
        entry: dict[str, Any] = {}
        if stored.get(f"n_{part}") is not None:
            entry["n"] = stored[f"n_{part}"]
        if stored.get(f"n_{part}_pos") is not None:
            entry["n_pos"] = stored[f"n_{part}_pos"]
        metrics = info.get(part) if isinstance(info.get(part), Mapping) else {}
        for key in ("n", "n_pos"):
            if key not in entry and metrics.get(key) is not None:
                entry[key] = metrics[key]
        if "n" not in entry:
            absent.append(f"data.{part}")
        data[part] = entry or None
    source = stored.get("test_source", info.get("test_source"))
    data["test_source"] = source
    if source is None:
        absent.append("data.test_source")
    return data, absent


def _plain(obj: Any) -> Any:
    """JSON values: NaN as None, tuples as lists."""
    return json.loads(json.dumps(obj, default=_default), parse_constant=lambda _: None)


def _default(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def info_json(info: Mapping[str, Any]) -> str:
    """:func:`checkpoint_info` as JSON text."""
    return json.dumps(info, indent=1, allow_nan=False)


_NOT_STORED = "not stored in the checkpoint"


def format_info(info: Mapping[str, Any]) -> str:
    """:func:`checkpoint_info` as aligned text, one field a line."""
    if info.get("kind") == "multilabel":
        return _format_multilabel(info)
    lab = info["label"]
    name = lab.get("name") or f"(name {_NOT_STORED})"
    rest = ", ".join(
        f"{k} {lab[k] if lab.get(k) else '(' + _NOT_STORED + ')'}" for k in ("slug", "mid")
    )
    model = info["model"]
    n_par = model.get("parameters")
    config = " ".join(f"{k}={_v(v)}" for k, v in model.get("config", {}).items())
    rows = [
        ("checkpoint", info["file"]),
        ("model", f"{info['kind']}" + (f", {n_par:,} parameters" if n_par is not None else "")),
        ("model config", config or _NOT_STORED),
        ("label", f"{name} ({rest})"),
        ("threshold", f"{info['threshold']:.4f} (decision threshold chosen on validation)"),
        ("sample rate", f"{info['sample_rate']} Hz"),
        ("clip length", f"{info['clip_seconds']:g} s"),
        (
            "extra channels",
            ", ".join(info["extra_channels"]) if info["extra_channels"] else "none (log-mel only)",
        ),
        (
            "features",
            " ".join(f"{k}={v}" for k, v in info["feature_params"].items()) or _NOT_STORED,
        ),
    ]
    data = info["data"]
    for part in ("train", "val", "test"):
        entry = data.get(part)
        if entry:
            text = f"{entry['n']} clips" if "n" in entry else "clips: " + _NOT_STORED
            if entry.get("n_pos") is not None:
                text += f" ({entry['n_pos']} positive)"
        else:
            text = _NOT_STORED
        if part == "test":
            src = data.get("test_source")
            text += f"; source: {src}" if src else f"; source {_NOT_STORED}"
        rows.append((f"{part} data", text))
    test = info["metrics"]["test"]
    if test:
        shown = [f"{title} {_v(test[k])}" for k, title in _METRICS if k in test]
        rows.append(("test metrics", ", ".join(shown) if shown else "none"))
        if test.get("confusion") is not None:
            rows.append(("confusion", f"{test['confusion']} ([[tn, fp], [fn, tp]], test set)"))
        others = sorted(set(test) - {k for k, _ in _METRICS} - {"confusion", "n", "n_pos"})
        for k in others:
            rows.append((f"test {k}", _v(test[k])))
    else:
        rows.append(("test metrics", _NOT_STORED))
    for k in sorted(set(info["info"]) - _KNOWN_INFO):
        rows.append((f"info {k}", json.dumps(info["info"][k])))
    rows.append(("provenance", _provenance_text(info.get("provenance"))))
    return _aligned(rows)


def _provenance_text(prov: Mapping[str, Any] | None) -> str:
    """Version, commit, config and data hashes, seeds and device of a checkpoint, in a line."""
    if not prov:
        return _NOT_STORED
    git = prov.get("git") or {}
    commit = str(git.get("commit") or "no git checkout")[:12]
    if git.get("dirty"):
        commit += " with local changes"
    return (
        f"audiosetflow {prov.get('version')}, commit {commit}, config_hash "
        f"{str(prov.get('config_hash'))[:12]}, data_hash {str(prov.get('data_hash'))[:12]}, "
        f"seeds {prov.get('seeds')}, device {prov.get('device')}"
    )


def _aligned(rows: list[tuple[str, Any]]) -> str:
    """``key  value`` lines, keys padded to one width; every value escaped
    (:func:`audiosetflow.textsafe.escape`: a label or path from the checkpoint is one line)."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {escape(v)}" for k, v in rows)


def _v(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
