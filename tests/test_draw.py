"""Keyed-hash draws: a function of the YTIDs, the seed and the key, never of row order."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from audiosetflow.learning.draw import hash_rank, held_out, lowest_ranked, ytid_hash

YTIDS = [f"-y{i:09d}" for i in range(500)]


def _b2(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _splitmix_finalizer(z: int) -> int:
    """SplitMix64's finalizer in Python integers (the reference for the vectorised one)."""
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def _ytid_hash(y: str) -> int:
    """ytid_hash in Python integers: SplitMix64's finalizer chained over the code points, two
    to a 64-bit word."""
    cps = [ord(c) for c in y] + [0] * (len(y) % 2)
    h = 0x9E3779B97F4A7C15
    for i in range(0, len(cps), 2):
        h = _splitmix_finalizer(h ^ (cps[i] | cps[i + 1] << 32))
    return h


def test_hash_rank_is_mixed_ytid_hash_and_seed_key():
    ytids = ["abc", "-_x", "zzzzzzzzzzz", "Bm\u00e9lange_9", "a"]
    np.testing.assert_array_equal(ytid_hash(ytids), np.array([_ytid_hash(y) for y in ytids],
                                                             dtype=np.uint64))  # fmt: skip
    r = hash_rank(ytids, seed=7, key="/m/04rlf\x1fval")
    assert r.dtype == np.uint64 and r.shape == (5,)
    k = _b2(b"7\x1f/m/04rlf\x1fval")
    assert [int(v) for v in r] == [_splitmix_finalizer(_ytid_hash(y) ^ k) for y in ytids]
    # the YTID hashes can be passed in (computed once for many draws)
    np.testing.assert_array_equal(
        hash_rank(ytids, seed=7, key="/m/04rlf\x1fval", hashes=ytid_hash(ytids)), r
    )
    assert hash_rank([], seed=0, key="k").shape == (0,)
    # a YTID's hash is its own: the same alone as among longer ones
    for y in ytids:
        assert ytid_hash([y])[0] == ytid_hash(ytids)[ytids.index(y)]
    # no collisions among many YTIDs (all distinct 64-bit hashes)
    many = [f"{i:011d}" for i in range(200_000)] + [f"-{i:010x}" for i in range(200_000)]
    assert len(np.unique(ytid_hash(many))) == len(many)


def test_lowest_ranked_takes_copies_of_a_ytid_in_position_order():
    ytids = ["a", "b", "c", "d", "b"]
    ranks = hash_rank(ytids, seed=0, key="k")
    for n in range(6):
        m = lowest_ranked(ytids, n, seed=0, key="k")
        assert m.sum() == n
        # every drawn rank is below or at every undrawn one
        if 0 < n < 5:
            assert ranks[m].max() <= ranks[~m].min()


def test_lowest_ranked_is_order_independent_and_seeded():
    a = lowest_ranked(YTIDS, 100, seed=1, key="k")
    assert a.sum() == 100
    picked = {y for y, m in zip(YTIDS, a, strict=True) if m}
    rng = np.random.default_rng(0)
    for _ in range(3):
        perm = rng.permutation(len(YTIDS))
        shuffled = [YTIDS[i] for i in perm]
        b = lowest_ranked(shuffled, 100, seed=1, key="k")
        assert {y for y, m in zip(shuffled, b, strict=True) if m} == picked
    other_seed = lowest_ranked(YTIDS, 100, seed=2, key="k")
    other_key = lowest_ranked(YTIDS, 100, seed=1, key="k2")
    assert not np.array_equal(a, other_seed) and not np.array_equal(a, other_key)
    # a larger draw contains the smaller one (nested), and growing the pool keeps the
    # drawn clips whose rank stays below the cut
    assert (lowest_ranked(YTIDS, 150, seed=1, key="k") >= a).all()
    assert lowest_ranked(YTIDS, 0, seed=1, key="k").sum() == 0
    assert lowest_ranked(YTIDS[:5], 10, seed=1, key="k").all()


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_held_out_fraction_per_class(fraction):
    classes = np.array([int(i % 5 == 0) for i in range(len(YTIDS))])  # 100 positive, 400 not
    held = held_out(YTIDS, classes, fraction=fraction, seed=3, key="val")
    assert held[classes == 1].sum() == round(fraction * 100)
    assert held[classes == 0].sum() == round(fraction * 400)
    perm = np.random.default_rng(1).permutation(len(YTIDS))
    held_p = held_out([YTIDS[i] for i in perm], classes[perm], fraction=fraction, seed=3,
                      key="val")  # fmt: skip
    assert {YTIDS[i] for i in perm[held_p]} == {YTIDS[i] for i in np.flatnonzero(held)}


def test_held_out_small_classes_and_zero_fraction():
    held = held_out(["a", "b", "c"], [1, 0, 0], fraction=0.01, seed=0, key="k")
    assert held.tolist()[0] is False  # one clip of a class: none held out
    assert held[1:].sum() == 1  # at least one of a class of 2, and one kept
    assert held_out(["a", "b", "c"], [1, 0, 0], fraction=0.0, seed=0, key="k").sum() == 0
    held = held_out(["a", "b"], [0, 0], fraction=0.99, seed=0, key="k")
    assert held.sum() == 1  # at most n - 1


def _clips(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"ytid": [f"c{i:010d}" for i in range(n)], "split": "train", "start": 0.0, "end": 10.0,
         "labels": ["/m/04rlf" if i % 3 else "/m/09x0r" for i in range(n)]}
    )  # fmt: skip


@pytest.mark.parametrize("holdout", [True, False])
def test_multilabel_split_parts_do_not_depend_on_row_order(holdout):

    from audiosetflow.learning.multilabel import split_parts

    train = _clips(200)
    test = None if holdout else _clips(30).assign(split="eval")
    kw = dict(val_fraction=0.1, test_fraction=0.2, seed=5)
    a = split_parts(train, test, **kw)
    assert a["test"].attrs["test_source"] == ("train holdout" if holdout else "eval")
    n_test = 40 if holdout else 30
    assert len(a["test"]) == n_test and len(a["val"]) == round(0.1 * (200 - 40 * holdout))
    assert len(a["train"]) + len(a["val"]) + 40 * holdout == 200
    assert not set(a["train"]["ytid"]) & set(a["val"]["ytid"])
    perm = np.random.default_rng(2).permutation(len(train))
    b = split_parts(train.iloc[perm].reset_index(drop=True), test, **kw)
    for p in ("train", "val", "test"):
        assert set(a[p]["ytid"]) == set(b[p]["ytid"]), p
        # sorted input, sorted parts: the same frames
        pd.testing.assert_frame_equal(
            a[p].sort_values("ytid").reset_index(drop=True),
            b[p].sort_values("ytid").reset_index(drop=True),
        )
    c = split_parts(train, test, **{**kw, "seed": 6})
    assert set(c["val"]["ytid"]) != set(a["val"]["ytid"])


def test_multilabel_split_parts_empty_part_message():
    from audiosetflow.errors import InputError
    from audiosetflow.learning.multilabel import split_parts

    with pytest.raises(InputError, match=r"multilabel: the val part has no clip \(1 clips"):
        split_parts(_clips(1), _clips(3), val_fraction=0.5, test_fraction=0.2, seed=0)
