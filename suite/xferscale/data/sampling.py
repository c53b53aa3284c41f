"""Sample selection shared by the loaders and the transfer targets: few-shot subsets,
per-epoch shuffling, class-balanced oversampling and the split of an epoch across ranks.

Everything here is a pure function of ``(seed, epoch)`` (NumPy ``Generator`` seeded with
the tuple), so every rank computes the same global list and takes its own range of it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from xferscale.data.records import POSITIVE


def shard_range(size: int, shard_id: int, num_shards: int) -> range:
    """The samples of one shard, with the same formula as DALI's readers
    (``start = size * shard_id // num_shards``): ranks differ by at most one sample."""
    return range(size * shard_id // num_shards, size * (shard_id + 1) // num_shards)


def epoch_permutation(size: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(size)


def fewshot_indices(
    labels: np.ndarray, k: int, seed: int, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """Sorted indices of ``k`` examples per class; ``ValueError`` naming a class with fewer.

    ``labels`` is (N,) class indices or (N, C) multilabel 1/0/-1. A ``Generator`` seeded
    with ``(seed, k)`` picks, class by class in class-index order, ``k`` samples without
    replacement; for a multilabel target among the samples positive for that class and not
    picked for an earlier class. NumPy's PCG64 stream is platform independent, so a subset
    is identified by ``(k, seed)`` and the order of ``labels``.
    """
    if k <= 0:
        raise ValueError(f"shots must be > 0, got {k}")
    labels = np.asarray(labels)
    multilabel = labels.ndim == 2
    if class_names is not None:
        num_classes = len(class_names)
    else:
        num_classes = labels.shape[1] if multilabel else int(labels.max()) + 1
    rng = np.random.default_rng([seed, k])
    taken = np.zeros(len(labels), dtype=bool)
    chosen = []
    for c in range(num_classes):
        members = labels[:, c] == POSITIVE if multilabel else labels == c
        candidates = np.flatnonzero(members & ~taken)
        if len(candidates) < k:
            name = class_names[c] if class_names is not None else str(c)
            what = "positive samples not already picked" if multilabel else "samples"
            raise ValueError(f"class {name!r} has {len(candidates)} {what}, fewer than {k} shots")
        picked = candidates[np.sort(rng.choice(len(candidates), size=k, replace=False))]
        taken[picked] = True
        chosen.append(picked)
    return np.sort(np.concatenate(chosen))


def balanced_epoch(class_of: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Indices for one class-balanced epoch of a multiclass dataset, shuffled.

    Every class present gets ``ceil(N / classes present)`` draws: a class with at least
    that many samples contributes a random subset without replacement; a rarer class
    contributes each of its samples ``q`` times plus a random ``r`` of them once more
    (stratified repetition, the least-variance way to repeat). The epoch length is about
    ``N``, so schedules expressed in epochs keep their meaning.
    """
    class_of = np.asarray(class_of)
    rng = np.random.default_rng([seed, epoch, 1])
    present = np.unique(class_of)
    per_class = math.ceil(len(class_of) / len(present))
    parts = []
    for c in present:
        members = np.flatnonzero(class_of == c)
        repeats, rest = divmod(per_class, len(members))
        parts.append(np.tile(members, repeats))
        parts.append(rng.choice(members, size=rest, replace=False))
    drawn = np.concatenate(parts)
    return drawn[rng.permutation(len(drawn))]
