"""Records -> one cell per (source, model, target, shots): mean ± std over seeds.

The standard deviation is the sample one (ddof=1), undefined for a single seed. A seed
whose metric was undefined on the test set (``value`` null) is counted apart and left out
of the mean, so a cell says both how many seeds it has and how many of them are numbers.
A mean ROC-AUC is over the labels whose AUC is defined; the cell lists the labels left out
by any seed. A cell whose runs cannot exist (``k`` shots of a class with fewer examples) is
infeasible, with the reason.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from xferscale.results import FULL, ResultError, ResultRecord, Shots, shots_sort_key


@dataclass
class Cell:
    source: str
    model: str
    target: str
    shots: Shots
    metric: str
    seeds: list[int] = field(default_factory=list)  # seeds with a record
    values: list[float] = field(default_factory=list)  # defined values, in seed order
    undefined_seeds: list[int] = field(default_factory=list)
    undefined_labels: list[str] = field(default_factory=list)  # left out of some seed's mean AUC
    infeasible: str | None = None  # why the runs of this cell cannot exist

    @property
    def n(self) -> int:
        """Seeds with a defined value."""
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else None

    def missing_seeds(self, expected: Iterable[int]) -> list[int]:
        return sorted(set(expected) - set(self.seeds))


CellKey = tuple[str, str, str, Shots]  # source, model, target, shots


def aggregate(records: Iterable[ResultRecord]) -> dict[CellKey, Cell]:
    """Group records by (source, model, target, shots); one seed counted once."""
    cells: dict[CellKey, Cell] = {}
    seen: dict[CellKey, set[int]] = defaultdict(set)
    for r in sorted(records, key=lambda r: (r.source, r.model, r.target, shots_sort_key(r.shots), r.seed)):
        key = (r.source, r.model, r.target, r.shots)
        if r.seed in seen[key]:
            raise ResultError(f"two records of {r.key}: pass each results folder once")
        seen[key].add(r.seed)
        cell = cells.setdefault(key, Cell(r.source, r.model, r.target, r.shots, r.metric))
        if cell.metric != r.metric:
            raise ResultError(f"{r.key}: metric {r.metric!r} differs from the other seeds' {cell.metric!r}")
        cell.seeds.append(r.seed)
        if r.infeasible is not None:
            cell.infeasible = cell.infeasible or r.infeasible
        elif r.value is None:
            cell.undefined_seeds.append(r.seed)
        else:
            cell.values.append(float(r.value))
        for label in r.detail.get("undefined_labels") or ():
            if label not in cell.undefined_labels:
                cell.undefined_labels.append(label)
    return cells


def full_shot(cells: dict[CellKey, Cell]) -> dict[tuple[str, str, str], Cell]:
    """The full-shot cells keyed by (source, model, target)."""
    return {(s, m, t): c for (s, m, t, shots), c in cells.items() if shots == FULL}


def shots_of(cells: dict[CellKey, Cell]) -> list[Shots]:
    return sorted({k[3] for k in cells}, key=shots_sort_key)
