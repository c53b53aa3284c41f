"""Evaluation metrics of the study: top-1 accuracy and mean ROC-AUC over labels.

ROC-AUC is undefined for a label whose test targets hold a single class. Such a label is
reported as undefined (``None``) rather than as a number; the mean is taken over the labels
whose AUC is defined (as the paper's code, ``np.nanmean`` in ``finetune.py`` ``log_eval``),
and the labels it leaves out are listed beside it (``undefined_labels``), never hidden. The
mean itself is undefined only when no label is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

UNKNOWN = -1  # multilabel target entry with no (or an uncertain) label; masked out


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


@dataclass
class MetricResult:
    """One metric on one test set. ``value`` is ``None`` when the metric is undefined."""

    name: str  # "acc" or "auc", the keys of paper.yaml
    value: float | None  # in percent, as the paper reports
    per_label: dict[str, float | None] = field(default_factory=dict)
    undefined_labels: list[str] = field(default_factory=list)  # left out of ``value``
    num_samples: int = 0

    @property
    def defined(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "per_label": self.per_label,
            "undefined_labels": self.undefined_labels,
            "num_samples": self.num_samples,
        }


def top1_accuracy(logits: Any, targets: Any) -> MetricResult:
    """Top-1 accuracy in percent; ``targets`` are class indices (N,)."""
    scores, labels = _as_numpy(logits), _as_numpy(targets)
    if scores.ndim != 2 or labels.ndim != 1 or len(scores) != len(labels):
        raise ValueError(f"top-1 accuracy needs scores (N, C) and labels (N,), got {scores.shape} and {labels.shape}")
    if len(labels) == 0:
        return MetricResult("acc", None, num_samples=0)
    value = float((scores.argmax(axis=1) == labels).mean() * 100.0)
    return MetricResult("acc", value, num_samples=len(labels))


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def mean_roc_auc(scores: Any, targets: Any, label_names: Sequence[str] | None = None) -> MetricResult:
    """Mean ROC-AUC over labels, in percent.

    ``targets`` are either class indices (N,) -- a single-label task such as PadChest-Cl,
    scored one class against the rest -- or a multilabel matrix (N, C) of 1/0 with -1 for
    unknown entries, which are left out of that label's AUC.
    """
    s, t = _as_numpy(scores).astype(np.float64), _as_numpy(targets)
    if s.ndim != 2:
        raise ValueError(f"ROC-AUC needs scores of shape (N, C), got {s.shape}")
    if t.ndim == 1:
        t = _one_hot(t.astype(np.int64), s.shape[1])
    if t.shape != s.shape:
        raise ValueError(f"ROC-AUC: scores {s.shape} and targets {t.shape} differ in shape")
    names = list(label_names) if label_names is not None else [str(i) for i in range(s.shape[1])]
    if len(names) != s.shape[1]:
        raise ValueError(f"ROC-AUC: {len(names)} label names for {s.shape[1]} labels")
    per_label: dict[str, float | None] = {}
    for j, name in enumerate(names):
        known = t[:, j] != UNKNOWN
        y = t[known, j]
        if len(np.unique(y)) < 2:
            per_label[name] = None
            continue
        per_label[name] = float(roc_auc_score(y, s[known, j]) * 100.0)
    defined = [v for v in per_label.values() if v is not None]
    return MetricResult(
        "auc",
        value=float(np.mean(defined)) if defined else None,
        per_label=per_label,
        undefined_labels=[n for n, v in per_label.items() if v is None],
        num_samples=len(s),
    )


def evaluate(metric: str, scores: Any, targets: Any, label_names: Sequence[str] | None = None) -> MetricResult:
    """The target's metric by its paper.yaml name (``acc`` or ``auc``)."""
    if metric == "acc":
        return top1_accuracy(scores, targets)
    if metric == "auc":
        return mean_roc_auc(scores, targets, label_names)
    raise ValueError(f"unknown metric {metric!r}; expected 'acc' or 'auc'")
