"""Few-shot subsets and class-balanced epochs over label arrays (in-memory targets).

Few-shot rule (the same as the prepared-data loader's): a NumPy ``Generator`` seeded with
``(seed, k)`` picks, class by class in class-index order, ``k`` samples without
replacement; for a multilabel target among the samples positive for that class and not
picked for an earlier class. A subset is thus identified by ``(k, seed)`` alone.
"""
from __future__ import annotations

import math

import numpy as np


def fewshot_indices(labels: np.ndarray, k: int, seed: int, class_names: list[str] | None = None) -> np.ndarray:
    """Sorted indices of ``k`` examples per class; ``ValueError`` naming a class with fewer.

    ``labels`` is (N,) class indices or (N, C) multilabel 1/0/-1.
    """
    if k <= 0:
        raise ValueError(f"shots must be > 0, got {k}")
    labels = np.asarray(labels)
    multilabel = labels.ndim == 2
    num_classes = labels.shape[1] if multilabel else int(labels.max()) + 1
    rng = np.random.default_rng([seed, k])
    taken = np.zeros(len(labels), dtype=bool)
    chosen = []
    for c in range(num_classes):
        members = labels[:, c] == 1 if multilabel else labels == c
        candidates = np.flatnonzero(members & ~taken)
        if len(candidates) < k:
            name = class_names[c] if class_names else str(c)
            what = "positive samples not already picked" if multilabel else "samples"
            raise ValueError(f"class {name!r} has {len(candidates)} {what}, fewer than {k} shots")
        picked = candidates[np.sort(rng.choice(len(candidates), size=k, replace=False))]
        taken[picked] = True
        chosen.append(picked)
    return np.sort(np.concatenate(chosen))


def balanced_order(class_of: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Positions (into ``class_of``) of one shuffled class-balanced epoch.

    Each class present gets ``ceil(N / classes)`` draws: all its members repeated as often
    as they fit, plus a random remainder without replacement (oversampling of rare classes,
    undersampling of none beyond that share).
    """
    class_of = np.asarray(class_of)
    rng = np.random.default_rng([seed, epoch, 1])
    present = np.unique(class_of)
    share = math.ceil(len(class_of) / len(present))
    parts = []
    for c in present:
        members = np.flatnonzero(class_of == c)
        repeats, rest = divmod(share, len(members))
        parts += [np.tile(members, repeats), rng.choice(members, size=rest, replace=False)]
    drawn = np.concatenate(parts)
    return drawn[rng.permutation(len(drawn))]
