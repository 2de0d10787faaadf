"""Seeded draws of clips that depend on the YTIDs and the seed only, never on row order.

Every clip gets a *rank* in a draw: a 64-bit number computed from its YTID, the seed and the
draw's ``key`` alone (:func:`hash_rank`). A draw of ``n`` clips takes the ``n`` with the lowest
rank; a held-out fraction takes the lowest-ranked clips of each class. A clip's rank does not
depend on which other clips are there or in what order they were read (which shard, how many
shards, how many cores), so a draw is the same for any permutation of its input rows, and
adding clips to a pool only moves the clips whose rank falls below the cut. ``key`` names the
purpose of a draw (the label and the part, say), so that draws of different purposes are
independent of each other.

The rank is ``mix64(ytid_hash(ytid) ^ key_hash(seed, key))``: ``mix64`` is the SplitMix64
finalizer (a bijection of 64-bit integers with full avalanche); ``ytid_hash`` chains it over the
YTID's Unicode code points, two to a 64-bit word (:func:`ytid_hash`, vectorised: the selection
of a 2-million-row CSV draws per label from the whole split, and a YTID's hash is computed once
for all its draws); ``key_hash`` is the first 8 bytes of BLAKE2b of ``f"{seed}\\x1f{key}"``.
Distinct YTIDs have distinct ranks unless their 64-bit hashes collide. The ranks are the same
on every platform (no byte order, no Python hash randomisation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["ytid_hash", "hash_rank", "lowest_ranked", "held_out"]


def _digest64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


#: Start value of :func:`ytid_hash` (the golden-ratio constant of SplitMix64).
_H0 = 0x9E3779B97F4A7C15


def ytid_hash(ytids: Iterable[str]) -> np.ndarray:
    """A 64-bit hash of each YTID, as ``uint64`` of shape (n,).

    ``h = _H0``; for each 64-bit word ``w`` of the YTID (its Unicode code points ``c0, c1, ...``
    two to a word, ``w = c[2i] | c[2i + 1] << 32``, the last one padded with 0):
    ``h = mix64(h ^ w)``. Vectorised over the YTIDs; a YTID's hash does not depend on the
    others.
    """
    seq = ytids if isinstance(ytids, np.ndarray) else list(ytids)
    u = np.ascontiguousarray(np.asarray(seq, dtype=str))
    n = len(u)
    h = np.full(n, _H0, dtype=np.uint64)
    width = u.dtype.itemsize // 4
    if n == 0 or width == 0:
        return h
    cp = u.view(np.uint32).reshape(n, width).astype(np.uint64)
    if width % 2:
        cp = np.concatenate([cp, np.zeros((n, 1), dtype=np.uint64)], axis=1)
    words = cp[:, 0::2] | (cp[:, 1::2] << np.uint64(32))
    n_words = (np.char.str_len(u) + 1) // 2  # a YTID's own words only, whatever the others
    for j in range(words.shape[1]):
        h = np.where(n_words > j, _mix64(h ^ words[:, j]), h)
    return h


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, vectorised (wrapping uint64 arithmetic)."""
    z = z.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def hash_rank(
    ytids: Iterable[str], *, seed: int, key: str, hashes: np.ndarray | None = None
) -> np.ndarray:
    """Rank of each YTID in the draw named ``key`` with ``seed``.

    Parameters
    ----------
    ytids : iterable of str
        The clips.
    seed : int
        The global seed (``selection.seed``).
    key : str
        The draw's purpose, e.g. ``"/m/04rlf\\x1fval"``.
    hashes : ndarray of uint64, optional
        :func:`ytid_hash` of ``ytids``, when already computed (then ``ytids`` is not read).

    Returns
    -------
    ndarray of uint64, shape (n,)
        ``mix64(ytid_hash(ytid) ^ key_hash(seed, key))``.
    """
    h = ytid_hash(ytids) if hashes is None else np.asarray(hashes, dtype=np.uint64)
    k = np.uint64(_digest64(f"{int(seed)}\x1f{key}".encode()))
    return _mix64(h ^ k)


def lowest_ranked(
    ytids: Iterable[str],
    n: int,
    *,
    seed: int,
    key: str,
    hashes: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of the ``n`` clips with the lowest rank (all of them if there are ``n`` or fewer).

    Parameters
    ----------
    ytids : iterable of str
        The clips. Rows of one YTID have one rank; if the cut falls among them, they are
        taken in position order (the same clip either way when the rows are copies).
    n : int
        How many to take.
    seed, key, hashes
        As in :func:`hash_rank`.

    Returns
    -------
    ndarray of bool, shape (len(ytids),)
        True for the drawn rows. For distinct YTIDs, the set of drawn YTIDs is the same for
        any order of ``ytids``.
    """
    ytids = ytids if isinstance(ytids, np.ndarray) else list(ytids)
    ranks = hash_rank(ytids, seed=seed, key=key, hashes=hashes)
    mask = np.zeros(len(ranks), dtype=bool)
    n = max(0, min(int(n), len(ranks)))
    if n == len(ranks):
        mask[:] = True
    elif n:
        cut = np.partition(ranks, n - 1)[n - 1]
        mask = ranks < cut
        ties = np.flatnonzero(ranks == cut)  # one YTID (or a 64-bit collision)
        names = [str(ytids[i]) for i in ties]
        order = sorted(range(len(ties)), key=lambda j: (names[j], j))
        mask[ties[order[: n - int(mask.sum())]]] = True
    return mask


def held_out(
    ytids: Iterable[str], classes: Iterable[int], *, fraction: float, seed: int, key: str
) -> np.ndarray:
    """Mask of a stratified held-out part: per class, ``fraction`` of its clips, lowest rank first.

    A class with at least 2 clips gives at least one held-out clip and keeps at least one when
    ``fraction > 0``: ``k = min(max(round(fraction * n), 1), n - 1)``. A class of 1 clip
    gives none.

    Parameters
    ----------
    ytids : iterable of str
        The clips (distinct YTIDs).
    classes : iterable of int
        Each clip's class (the target, 0 or 1).
    fraction : float
        Fraction of each class held out; 0 or less: none.
    seed, key
        As in :func:`hash_rank`.

    Returns
    -------
    ndarray of bool, shape (len(ytids),)
        True for the held-out rows.
    """
    ytids = [str(y) for y in ytids]
    hashes = ytid_hash(ytids)
    cls = np.asarray(list(classes))
    held = np.zeros(len(ytids), dtype=bool)
    if fraction <= 0:
        return held
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        if len(idx) < 2:
            continue
        k = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
        sub = lowest_ranked([ytids[i] for i in idx], k, seed=seed, key=key, hashes=hashes[idx])
        held[idx[sub]] = True
    return held
