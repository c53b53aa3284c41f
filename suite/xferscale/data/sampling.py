"""Per-epoch sample orders shared by both loader backends: shuffling, class-balanced
oversampling and the split of an epoch across ranks.

Everything here is a pure function of ``(seed, epoch)`` (NumPy ``Generator`` seeded with
the tuple), so every rank computes the same global list and takes its own range of it.
"""
from __future__ import annotations

import math

import numpy as np


def shard_range(size: int, shard_id: int, num_shards: int) -> range:
    """The samples of one shard, with the same formula as DALI's readers
    (``start = size * shard_id // num_shards``): ranks differ by at most one sample."""
    return range(size * shard_id // num_shards, size * (shard_id + 1) // num_shards)


def epoch_permutation(size: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(size)


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
