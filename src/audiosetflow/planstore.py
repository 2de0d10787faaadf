"""The plan, computed once and read back: a store under ``results/plan/``.

Every Snakemake process parses the workflow, and the workflow needs the plan (labels, selected
segments, shards) to parse: the main process and every cluster job. Planning a
2-million-row segment CSV takes a minute and gigabytes; reading the stored plan back takes
milliseconds. :func:`load_or_make` returns the stored plan when there is one for the same key,
else makes it with :func:`audiosetflow.plan.make_plan` and stores it.

**The key** is a SHA-256 over

* the configuration keys the plan depends on (:data:`PLAN_KEYS`; e.g. ``training.epochs``
  does not change the plan and does not replan),
* the content of every metadata file it reads (BLAKE2b of the bytes), and
* the source of the modules that compute it (:data:`PLAN_MODULES`), so that a changed
  selection rule replans.

A file's content hash is computed only when its size, modification time, change time or
inode differ from those recorded beside it (``results/plan/files.json``): a run over an
unchanged 110-MB CSV reads no byte of it; a copied or touched file with the same bytes is
hashed once (about a second) and keeps its plan.

**The files** of a plan with key ``K``: ``plan-K.arrow`` (the selection, one row per segment
sorted by split and shard, Arrow IPC, memory-mapped on reading: a job reads only the rows
of its shard) and ``plan-K.json`` (labels, names, messages, and per split the shard numbers
with their row ranges). Both are written under a temporary name and renamed, the Arrow file
first: a plan whose JSON exists is complete. Several processes that start at once and find no
plan each make it and rename theirs into place; the contents are equal, so whichever rename
comes last wins harmlessly. Only the newest :data:`KEEP` plans are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import metadata as md

__all__ = [
    "PLAN_KEYS",
    "PLAN_MODULES",
    "FORMAT",
    "plan_config",
    "plan_key",
    "load_or_make",
    "load",
    "store",
    "file_digest",
]

#: Version of the stored layout; a change makes every stored plan stale.
FORMAT = 1
#: Top-level config keys (or ``section.key``) the plan depends on.
PLAN_KEYS = (
    "labels",
    "label_quality",
    "selection",
    "shard_size",
    "max_shards",
    "metadata",
    "demo",
    "multilabel.enabled",
    "multilabel.labels",
    "multilabel.min_positives",
)
#: Modules (relative to the package) whose source decides the plan.
PLAN_MODULES = (
    "plan.py",
    "planstore.py",
    "selection.py",
    "metadata.py",
    "ontology.py",
    "learning/labelsets.py",
    "learning/draw.py",
)
#: How many stored plans (keys) are kept in the folder.
KEEP = 3
_CHUNK = 1 << 22
_PKG = Path(__file__).resolve().parent
_COLUMNS = ("ytid", "split", "shard", "start", "end", "labels")


def plan_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the configuration the plan depends on (:data:`PLAN_KEYS`)."""
    out: dict[str, Any] = {}
    for key in PLAN_KEYS:
        section, _, sub = key.partition(".")
        if section not in config:
            continue
        if sub:
            value = config[section] or {}
            if sub in value:
                out.setdefault(section, {})[sub] = value[sub]
        else:
            out[section] = config[section]
    return out


def _code_digest() -> str:
    h = hashlib.sha256()
    for rel in PLAN_MODULES:
        p = _PKG / rel
        h.update(rel.encode() + b"\0")
        h.update(p.read_bytes() if p.exists() else b"")
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """BLAKE2b (32 bytes, hex) of a file's content, read in 4-MiB blocks."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _write_atomic(path: Path, data: bytes | Callable[[Path], None]) -> None:
    """Write ``data`` (bytes, or a function that writes the file it is given) to a temporary
    name beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def metadata_digests(files: list[Path], folder: Path) -> dict[str, str]:
    """Content hash of each file, recomputed only for files whose stat changed since the
    digest recorded in ``folder/files.json`` (which is then updated)."""
    memo_path = folder / "files.json"
    memo = _read_json(memo_path)
    memo = memo if isinstance(memo, dict) else {}
    out, changed = {}, False
    for f in files:
        name = str(Path(f).resolve())
        stat = _stat_key(os.stat(f))
        rec = memo.get(name)
        if isinstance(rec, dict) and rec.get("stat") == stat and isinstance(rec.get("digest"), str):
            out[name] = rec["digest"]
            continue
        out[name] = file_digest(f)
        memo[name] = {"stat": stat, "digest": out[name]}
        changed = True
    if changed:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(memo_path, json.dumps(memo, sort_keys=True, indent=0).encode())
    return out


def plan_key(config: Mapping[str, Any], files: list[Path], folder: Path) -> str:
    """The key of the plan for ``config`` over the metadata ``files`` (see the module doc)."""
    digests = metadata_digests(files, folder)
    doc = {
        "format": FORMAT,
        "config": plan_config(config),
        # by role and content, not by absolute path: moving the folder keeps the plan
        "files": [[Path(f).name, digests[str(Path(f).resolve())]] for f in files],
        "code": _code_digest(),
    }
    text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _label(rec: list) -> md.Label:
    return md.Label(mid=rec[0], name=rec[1], index=int(rec[2]), slug=rec[3])


def _label_rec(lab: md.Label) -> list:
    return [lab.mid, lab.name, int(lab.index), lab.slug]


def store(plan, folder: str | Path, key: str) -> None:
    """Write ``plan`` (:class:`audiosetflow.plan.Plan`) as ``plan-{key}.arrow`` and
    ``plan-{key}.json`` in ``folder`` (each to a temporary name, then renamed)."""
    import pyarrow as pa

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sel = plan.selection
    table = pa.table(
        {
            "ytid": pa.array(sel["ytid"].astype(str).to_numpy(), pa.string()),
            "split": pa.array(sel["split"].astype(str).to_numpy(), pa.string()),
            "shard": pa.array(sel["shard"].to_numpy(np.int64), pa.int64()),
            "start": pa.array(sel["start"].to_numpy(np.float64), pa.float64()),
            "end": pa.array(sel["end"].to_numpy(np.float64), pa.float64()),
            "labels": pa.array(sel["labels"].astype(str).to_numpy(), pa.string()),
        }
    )

    def write_arrow(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=1 << 16)

    _write_atomic(folder / f"plan-{key}.arrow", write_arrow)
    header = {
        "format": FORMAT,
        "key": key,
        "rows": len(sel),
        "labels": [_label_rec(lab) for lab in plan.labels],
        "dropped": [[_label_rec(lab), float(r)] for lab, r in plan.dropped],
        "names": plan.names,
        "messages": list(plan.messages),
        "multilabel": [_label_rec(lab) for lab in plan.multilabel],
        "shards": {
            s: {
                k: [int(v) for v in arr]
                for k, arr in zip(("shard", "start", "stop"), idx, strict=True)
            }
            for s, idx in plan.shard_ranges().items()
        },
    }
    _write_atomic(folder / f"plan-{key}.json", json.dumps(header).encode())
    _prune(folder)


def _prune(folder: Path) -> None:
    """Keep the :data:`KEEP` most recently stored or read plans; remove the others' files
    (another process that has one open keeps reading it: a removed file lives on while it is
    open)."""
    heads = sorted(folder.glob("plan-*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in heads[KEEP:]:
        for f in (old, old.with_suffix(".arrow")):
            f.unlink(missing_ok=True)


def load(folder: str | Path, key: str):
    """The stored plan with this key, or ``None`` when there is none (or it is incomplete).

    Reads the JSON header; the selection stays in the memory-mapped Arrow file until a shard's
    rows (or the whole selection) are asked for."""
    from .plan import Plan

    folder = Path(folder)
    head = _read_json(folder / f"plan-{key}.json")
    arrow = folder / f"plan-{key}.arrow"
    if not isinstance(head, dict) or head.get("format") != FORMAT or not arrow.exists():
        return None
    try:  # in use: the newest for _prune, which keeps the KEEP most recently used plans
        os.utime(folder / f"plan-{key}.json")
    except OSError:
        pass  # a read-only results folder: the plan is still read
    ranges = {
        s: tuple(np.asarray(v[k], dtype=np.int64) for k in ("shard", "start", "stop"))
        for s, v in head["shards"].items()
    }
    return Plan(
        labels=[_label(r) for r in head["labels"]],
        dropped=[(_label(r), float(x)) for r, x in head["dropped"]],
        selection=None,
        names=dict(head["names"]),
        messages=list(head["messages"]),
        multilabel=[_label(r) for r in head["multilabel"]],
        ranges=ranges,
        store=arrow,
    )


def open_table(arrow: Path):
    """The stored selection as a memory-mapped Arrow table (nothing is read until used)."""
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(str(arrow), "r")).read_all()


def load_or_make(
    config: Mapping[str, Any],
    paths,
    folder: str | Path,
    *,
    make: Callable[[], Any] | None = None,
) -> tuple[Any, bool]:
    """The stored plan for ``config`` and ``paths`` (:class:`~audiosetflow.plan.MetadataPaths`),
    or a new one, stored.

    Returns
    -------
    (Plan, bool)
        The plan and whether it was read from the store (``False``: made now).
    """
    from .plan import make_plan

    folder = Path(folder)
    key = plan_key(config, paths.all(), folder)
    plan = load(folder, key)
    if plan is not None:
        return plan, True
    plan = make() if make is not None else make_plan(config, paths)
    store(plan, folder, key)
    return plan, False
