"""Few-shot training subsets: exactly ``k`` examples per class, reproducible anywhere.

Rule: keys are sorted first (so the manifest's row order does not matter), then a NumPy
``Generator`` seeded with ``(seed, k)`` picks, class by class in class-index order, ``k``
keys without replacement. NumPy's PCG64 stream for a given seed is the same on every
platform, so a subset is identified by ``(k, seed)`` alone.

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
from xferscale.data.records import POSITIVE, Task


def _class_members(rows: Sequence[ManifestRow], task: Task, num_classes: int) -> list[list[str]]:
    members: list[list[str]] = [[] for _ in range(num_classes)]
    for row in sorted(rows, key=lambda r: r.key):
        if task == "multiclass":
            members[row.labels[0]].append(row.key)
        else:
            for c, value in enumerate(row.labels):
                if value == POSITIVE:
                    members[c].append(row.key)
    return members


def fewshot_keys(
    manifest: Sequence[ManifestRow],
    k: int,
    seed: int,
    *,
    task: Task = "multiclass",
    classes: Sequence[str] | None = None,
) -> list[str]:
    """``k`` keys per class (sorted); ``ValueError`` naming a class with fewer than ``k``."""
    if k <= 0:
        raise ValueError(f"shots must be > 0, got {k}")
    num_classes = len(classes) if classes is not None else 1 + max(
        (row.labels[0] for row in manifest) if task == "multiclass" else (len(row.labels) - 1 for row in manifest)
    )
    rng = np.random.default_rng([seed, k])
    chosen: list[str] = []
    taken: set[str] = set()
    for c, keys in enumerate(_class_members(manifest, task, num_classes)):
        candidates = [key for key in keys if key not in taken]
        if len(candidates) < k:
            name = classes[c] if classes is not None else str(c)
            what = "samples" if task == "multiclass" else "positive samples not already picked"
            raise ValueError(f"class {name!r} has {len(candidates)} {what}, fewer than {k} shots")
        picked = [candidates[i] for i in sorted(rng.choice(len(candidates), size=k, replace=False))]
        chosen.extend(picked)
        taken.update(picked)
    return sorted(chosen)


def subset_path(root: Path, k: int, seed: int) -> Path:
    return Path(root) / "fewshot" / f"{k}shot_seed{seed}.txt"


def write_subset(root: Path, k: int, seed: int, keys: Sequence[str]) -> Path:
    path = subset_path(root, k, seed)
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, "".join(f"{key}\n" for key in keys))
    return path
