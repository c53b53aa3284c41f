"""Few-shot subsets and class-balanced epochs over label arrays (in-memory targets): the
same functions the prepared-data loaders use (:mod:`xferscale.data.sampling`).
"""
from __future__ import annotations

from xferscale.data.sampling import balanced_epoch as balanced_order
from xferscale.data.sampling import fewshot_indices

__all__ = ["balanced_order", "fewshot_indices"]
