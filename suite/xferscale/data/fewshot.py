"""Few-shot training subsets: exactly ``k`` examples per class, reproducible anywhere.

Rule: keys are sorted first (so the manifest's row order does not matter), then
:func:`xferscale.data.sampling.fewshot_indices` picks: a NumPy ``Generator`` seeded with
``(seed, k)``, class by class in class-index order, ``k`` keys without replacement.
NumPy's PCG64 stream for a given seed is the same on every platform, so a subset is
identified by ``(k, seed)`` alone.

Multilabel targets: class by class, ``k`` keys are picked among the samples POSITIVE for
that class and not already picked for an earlier class; the subset holds ``k * C``
distinct samples, each chosen for one of its positive labels (it may be positive for
others too, and its other labels keep their values). Negative / unknown labels are never
used for picking.

Subsets are computed on the fly by the loaders from ``data.fewshot`` / ``data.fewshot_seed``;
``xferscale prepare fewshot`` writes the same lists to ``fewshot/{k}shot_seed{s}.txt``
next to the dataset for inspection and for other tools.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from xferscale.data.manifest import ManifestRow, atomic_write_text
from xferscale.data.records import Task
from xferscale.data.sampling import fewshot_indices


def fewshot_keys(
    manifest: Sequence[ManifestRow],
    k: int,
    seed: int,
    *,
    task: Task = "multiclass",
    classes: Sequence[str] | None = None,
) -> list[str]:
    """``k`` keys per class (sorted); ``ValueError`` naming a class with fewer than ``k``."""
    rows = sorted(manifest, key=lambda r: r.key)
    labels = np.array([r.labels[0] if task == "multiclass" else r.labels for r in rows])
    return [rows[i].key for i in fewshot_indices(labels, k, seed, classes)]


def subset_path(root: Path, k: int, seed: int) -> Path:
    return Path(root) / "fewshot" / f"{k}shot_seed{seed}.txt"


def write_subset(root: Path, k: int, seed: int, keys: Sequence[str]) -> Path:
    path = subset_path(root, k, seed)
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, "".join(f"{key}\n" for key in keys))
    return path
