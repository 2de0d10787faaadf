"""Clip embeddings of a trained CNN as features (``audiosetflow embed``).

:func:`write_embeddings` scores the clips with status ok of feature shards through a
checkpoint's :meth:`embed` (the small CNN's pooled trunk, CNN14's ``fc1`` output) and writes
one Parquet row per clip: ``ytid``, ``split``, ``labels`` (the clip's MIDs) and
``embedding`` (a fixed-size list of float32), a batch at a time (memory holds one row group
and one batch). :func:`read_embeddings` reads them back as a matrix in a given YTID order;
the baselines' fitting functions (:func:`~.training.fit_logreg`, the dense network of
:func:`~.trainer.fit_arrays`) train on that matrix like on the summary features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import atomic_path
from .checkpoint import load_checkpoint

__all__ = ["write_embeddings", "read_embeddings"]


def check_shard_params(
    files: Sequence[str | Path], feature_params: Mapping, *, model: str | Path
) -> None:
    """Refuse shards computed with other feature parameters than the checkpoint's (another
    front-end, other mel bands): one line naming the first shard and the differences.

    Raises
    ------
    audiosetflow.errors.InputError
    """
    from ..audio.features import FeatureParams, shard_params

    try:
        have = shard_params(files).to_dict()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    want = FeatureParams(**feature_params).to_dict()
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if diff:
        shown = ", ".join(f"{k} {have.get(k)!r} (model: {want.get(k)!r})" for k in diff[:4])
        raise InputError(f"{files[0]}: features computed with other parameters than {model}'s: "
                         f"{shown}; embed shards made with the model's features")  # fmt: skip


@torch.no_grad()
def write_embeddings(
    model: str | Path,
    features: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    batch_size: int = 32,
    device: str = "cpu",
) -> dict:
    """Write the clip embeddings of ``model`` for every clip with status ok of ``features``.

    Parameters
    ----------
    model : path
        A per-label or multi-label CNN checkpoint (small or CNN14).
    features : path or sequence of path
        A folder of feature shards or shard files.
    out : path
        The Parquet file (written under a temporary name, then renamed).
    batch_size : int
    device : str

    Returns
    -------
    dict
        ``clips``, ``dim``, ``arch``, ``out``.

    Raises
    ------
    audiosetflow.errors.InputError
        A checkpoint of the dense baseline (no embedding) or an unreadable one.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .multilabel import clip_table
    from .stream import FeatureStream, index_clips

    ck = load_checkpoint(model, device=device)
    if not hasattr(ck.model, "embed"):
        raise InputError(f"{model}: a {ck.kind} model has no embedding (use a CNN)")
    table = clip_table(features)
    from ..audio.features import shard_files

    files = shard_files(features)
    check_shard_params(files, ck.feature_params, model=model)
    idx = index_clips(files, table["ytid"].tolist())
    stream = FeatureStream(idx, extra_channels=ck.extra_channels, batch_size=batch_size)
    split = dict(zip(table["ytid"], table["split"], strict=True))
    labs = dict(zip(table["ytid"], table["labels"], strict=True))
    ck.model.eval()
    dim = None
    n = 0
    writer = None
    with atomic_path(out) as tmp:
        try:
            for b in stream.batches():
                e = ck.model.embed(torch.from_numpy(b.x).to(device)).float().cpu().numpy()
                if dim is None:
                    dim = int(e.shape[1])
                    schema = pa.schema([
                        ("ytid", pa.string()), ("split", pa.string()),
                        ("labels", pa.list_(pa.string())),
                        ("embedding", pa.list_(pa.float32(), dim)),
                    ])  # fmt: skip
                    meta = {b"audiosetflow.embedding": (
                        f'{{"arch": "{ck.header.get("arch", "small")}", "dim": {dim}, '
                        f'"kind": "{ck.kind}"}}').encode()}  # fmt: skip
                    writer = pq.ParquetWriter(tmp, schema.with_metadata(meta))
                ys = [idx.ytids[int(i)] for i in b.index]
                flat = pa.array(e.astype(np.float32).ravel(), type=pa.float32())
                batch = pa.record_batch(
                    [
                        pa.array(ys, pa.string()),
                        pa.array([split[y] for y in ys], pa.string()),
                        pa.array([list(labs[y]) for y in ys], pa.list_(pa.string())),
                        pa.FixedSizeListArray.from_arrays(flat, dim),
                    ],
                    schema=writer.schema,
                )
                writer.write_batch(batch)
                n += len(ys)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise InputError(f"{features}: no clip with status ok to embed")
    return {"clips": n, "dim": dim, "arch": ck.header.get("arch", "small"), "out": str(out)}


def read_embeddings(path: str | Path, ytids: Sequence[str]) -> np.ndarray:
    """The embeddings of ``ytids`` (in that order), float32 (len(ytids), dim).

    Raises
    ------
    audiosetflow.errors.InputError
        A YTID without a row (naming the first), or a file without an ``embedding`` column.
    """
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    if "embedding" not in f.schema_arrow.names or "ytid" not in f.schema_arrow.names:
        raise InputError(f"{path}: not an embeddings file (needs ytid and embedding columns)")
    want = {str(y): i for i, y in enumerate(ytids)}
    out: np.ndarray | None = None
    found = np.zeros(len(want), dtype=bool)
    for b in f.iter_batches(columns=["ytid", "embedding"], batch_size=4096):
        ys = b.column("ytid").to_pylist()
        col = b.column("embedding")
        dim = col.type.list_size
        vals = col.values.to_numpy(zero_copy_only=False).reshape(len(ys), dim)
        if out is None:
            out = np.zeros((len(want), dim), dtype=np.float32)
        for r, y in enumerate(ys):
            i = want.get(y)
            if i is not None:
                out[i], found[i] = vals[r], True
    if not found.all():
        miss = [y for y, i in want.items() if not found[i]][0]
        raise InputError(f"{path}: no embedding for YTID {miss} ({(~found).sum()} missing)")
    return out if out is not None else np.zeros((0, 0), np.float32)
