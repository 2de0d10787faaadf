"""The AudioSet ontology as a class hierarchy: ancestors, descendants, expanded label sets.

``ontology.json`` lists every class with its ``child_ids``; the hierarchy is a DAG (a class can
have more than one parent: *Bicycle bell* is under *Bicycle* and under *Bell*). With
``selection.expand_ontology`` a clip labelled only with a descendant (*Guitar*) also counts as
a positive of each ancestor (*Plucked string instrument*, *Musical instrument*, *Music*):
:func:`expand_labels` adds them to a clip's MIDs, and :func:`ontology_gain` counts, per
label, the positives that gained.

Only numpy/pandas are used; the ontology of AudioSet (632 classes) is read in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from .metadata import read_ontology

__all__ = ["Ontology", "load_ontology", "expand_labels", "ontology_gain"]


class Ontology:
    """Parents, ancestors and descendants of the classes of an ontology.

    Parameters
    ----------
    entries : mapping of str to dict
        MID to its ontology entry (:func:`audiosetflow.metadata.read_ontology`); only
        ``child_ids`` is used (a missing one: no children).

    Attributes
    ----------
    parents : dict of str to frozenset of str
        MID to the MIDs that list it among their ``child_ids``.
    """

    def __init__(self, entries: Mapping[str, Mapping]):
        parents: dict[str, set[str]] = {mid: set() for mid in entries}
        for mid, entry in entries.items():
            for child in entry.get("child_ids", []) or []:
                parents.setdefault(str(child), set()).add(str(mid))
        self.parents = {m: frozenset(p) for m, p in parents.items()}
        self._children: dict[str, set[str]] = {}
        for child, ps in self.parents.items():
            for p in ps:
                self._children.setdefault(p, set()).add(child)
        self._anc: dict[str, frozenset[str]] = {}

    def ancestors(self, mid: str) -> frozenset[str]:
        """Every class above ``mid`` (not ``mid`` itself); empty for a root or unknown MID."""
        got = self._anc.get(mid)
        if got is not None:
            return got
        out: set[str] = set()
        stack, seen = list(self.parents.get(mid, ())), {mid}
        while stack:  # iterative: a malformed ontology with a cycle still terminates
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            out.add(p)
            stack.extend(self.parents.get(p, ()))
        self._anc[mid] = frozenset(out)
        return self._anc[mid]

    def descendants(self, mid: str) -> frozenset[str]:
        """Every class below ``mid`` (not ``mid`` itself)."""
        out: set[str] = set()
        stack = list(self._children.get(mid, ()))
        while stack:
            c = stack.pop()
            if c in out or c == mid:
                continue
            out.add(c)
            stack.extend(self._children.get(c, ()))
        return frozenset(out)


def load_ontology(path: str | Path) -> Ontology:
    """Read ``ontology.json`` (:func:`audiosetflow.metadata.read_ontology`) as an
    :class:`Ontology`.

    Raises
    ------
    audiosetflow.metadata.MetadataError
        If the file is not a readable ontology.
    """
    return Ontology(read_ontology(path))


def expand_labels(labels: Iterable[str] | str | None, ontology: Ontology | None) -> list[str]:
    """A clip's MIDs and every ancestor of each, in first-seen order.

    Parameters
    ----------
    labels : iterable of str, or str
        The clip's MIDs (a comma-separated string as in the segment CSVs, or a list as in the
        feature shards); None: no label.
    ontology : Ontology or None
        None: the MIDs unchanged.

    Returns
    -------
    list of str
    """
    if labels is None:
        mids: list[str] = []
    elif isinstance(labels, str):
        mids = [m for m in labels.split(",") if m]
    else:
        mids = [str(m) for m in labels]
    if ontology is None:
        return mids
    out = dict.fromkeys(mids)
    for m in mids:
        out.update(dict.fromkeys(sorted(ontology.ancestors(m))))
    return list(out)


def ontology_gain(
    labels: Sequence[Iterable[str] | str | None], mids: Sequence[str], ontology: Ontology
) -> pd.DataFrame:
    """Positives of each label before and after expanding the clips' labels by the ontology.

    Parameters
    ----------
    labels : sequence of (iterable of str or str)
        Each clip's MIDs, as listed (not expanded).
    mids : sequence of str
        The labels to count.
    ontology : Ontology

    Returns
    -------
    DataFrame
        ``mid, n_pos_direct, n_pos_expanded, gained`` (``gained = expanded - direct``), one
        row per label of ``mids`` in its order.
    """
    direct = dict.fromkeys(mids, 0)
    expanded = dict.fromkeys(mids, 0)
    for lab in labels:
        own = set(expand_labels(lab, None))
        full = set(expand_labels(lab, ontology))
        for m in own & direct.keys():
            direct[m] += 1
        for m in full & expanded.keys():
            expanded[m] += 1
    return pd.DataFrame(
        {
            "mid": list(mids),
            "n_pos_direct": [direct[m] for m in mids],
            "n_pos_expanded": [expanded[m] for m in mids],
            "gained": [expanded[m] - direct[m] for m in mids],
        }
    )
