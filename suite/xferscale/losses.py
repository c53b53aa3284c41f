"""Training losses: softmax cross-entropy, and sigmoid BCE with unknown labels masked out."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def softmax_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)


def masked_sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE over known labels; targets are 1 / 0, and -1 (uncertain or missing) is ignored.

    Integer class indices (a single-label source trained with sigmoid loss, as BiT did on
    ImageNet-21k) are turned into one-hot targets.
    """
    if targets.ndim == 1:
        targets = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    known = targets >= 0
    per_label = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0).to(logits.dtype), reduction="none")
    return (per_label * known).sum() / known.sum().clamp(min=1)


LOSSES: dict[str, LossFn] = {"softmax_ce": softmax_ce, "sigmoid_bce": masked_sigmoid_bce}
