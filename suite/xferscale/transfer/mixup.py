"""MixUp as BiT applies it in fine-tuning: one lambda ~ Beta(alpha, alpha) per step, one
permutation of the batch, targets mixed with the same lambda.

Targets come back soft: class probabilities for a multiclass task (cross-entropy with them
equals BiT's ``lam * CE(y_a) + (1 - lam) * CE(y_b)``), mixed 1/0 labels for a multilabel
one, where an entry unknown (-1) in either image stays unknown and out of the loss. The
draws are a pure function of (seed, step), so a resumed run mixes as an uninterrupted one.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def mixup_batch(images: torch.Tensor, targets: torch.Tensor, alpha: float, num_classes: int, seed: int,
                step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixed images, soft targets and the lambda used."""
    rng = np.random.default_rng([seed, step, 2])
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(images))).to(images.device)
    mixed = images.mul(lam).add_(images[perm], alpha=1.0 - lam)
    if targets.ndim == 1:
        onehot = F.one_hot(targets, num_classes).float()
        return mixed, onehot.mul(lam).add_(onehot[perm], alpha=1.0 - lam), lam
    other = targets[perm]
    soft = targets.mul(lam).add_(other, alpha=1.0 - lam)
    soft[(targets < 0) | (other < 0)] = -1.0
    return mixed, soft, lam
