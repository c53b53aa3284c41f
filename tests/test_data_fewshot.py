"""Few-shot subsets and class-balanced epochs."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from xferscale.data.fewshot import fewshot_keys
from xferscale.data.manifest import ManifestRow
from xferscale.data.sampling import balanced_epoch, shard_range


def _rows(counts):
    return [
        ManifestRow(f"c{c}-{i:03d}", "s.tar", f"{i}.jpg", (c,), None, "t")
        for c, n in enumerate(counts) for i in range(n)
    ]


def test_fewshot_exact_and_reproducible():
    rows = _rows([20, 9, 31])
    keys = fewshot_keys(rows, 5, seed=3)
    assert Counter(k.split("-")[0] for k in keys) == {"c0": 5, "c1": 5, "c2": 5}
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert fewshot_keys(shuffled, 5, seed=3) == keys  # row order does not matter
    assert fewshot_keys(rows, 5, seed=4) != keys
    # pinned: the same subset on every machine (PCG64 seeded with (seed, k), keys sorted first)
    # pinned: NumPy's PCG64 stream for a seed is platform independent, so this must not change
    assert fewshot_keys(rows, 2, seed=0) == ["c0-001", "c0-018", "c1-002", "c1-003", "c2-004", "c2-026"]
    assert len(set(fewshot_keys(rows, 9, seed=0))) == 27


def test_fewshot_too_few_names_the_class():
    with pytest.raises(ValueError, match="class 'b' has 9 samples, fewer than 10 shots"):
        fewshot_keys(_rows([20, 9, 31]), 10, seed=0, classes=("a", "b", "c"))


def test_fewshot_multilabel_picks_positives():
    rows = [
        ManifestRow(f"k{i}", "s.tar", f"{i}.png", (1 if i % 2 else 0, 1 if i % 3 == 0 else -1), None, "t")
        for i in range(30)
    ]
    keys = fewshot_keys(rows, 4, seed=0, task="multilabel", classes=("A", "B"))
    by_key = {r.key: r.labels for r in rows}
    assert len(keys) == 8 == len(set(keys))
    assert sum(by_key[k][0] == 1 for k in keys) >= 4 and sum(by_key[k][1] == 1 for k in keys) >= 4


def test_balanced_epoch_balances_and_is_deterministic():
    class_of = np.array([0] * 90 + [1] * 7 + [2] * 3)
    epoch0 = balanced_epoch(class_of, seed=1, epoch=0)
    counts = Counter(class_of[epoch0].tolist())
    assert counts == {0: 34, 1: 34, 2: 34}
    assert set(epoch0[class_of[epoch0] == 2]) == {97, 98, 99}  # every rare sample used
    assert np.array_equal(epoch0, balanced_epoch(class_of, seed=1, epoch=0))
    assert not np.array_equal(epoch0, balanced_epoch(class_of, seed=1, epoch=1))
    # no sample of the big class repeats within an epoch
    big = epoch0[class_of[epoch0] == 0]
    assert len(set(big.tolist())) == len(big)


def test_shard_ranges_partition():
    for size in (0, 1, 7, 30, 31):
        parts = [shard_range(size, r, 4) for r in range(4)]
        assert [i for p in parts for i in p] == list(range(size))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
