"""Test-set evaluation of a fine-tuned model with the target's metric."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xferscale.metrics import MetricResult, evaluate
from xferscale.precision import autocast_context
from xferscale.transfer.targets import TargetSpec


@torch.no_grad()
def predict(model: nn.Module, batches: Any, spec: TargetSpec, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (softmax for a single-label task, sigmoid per label otherwise) and targets, on the CPU."""
    was_training = model.training
    model.eval()
    scores, targets = [], []
    device = next(model.parameters()).device
    for images, y in batches.epoch(0):
        with autocast_context(precision, device):
            logits = model(images).float()
        scores.append((logits.softmax(1) if spec.task == "multiclass" else logits.sigmoid()).cpu())
        targets.append(y.cpu())
    model.train(was_training)
    if not scores:
        raise ValueError(f"{spec.name}: the test split is empty")
    return torch.cat(scores), torch.cat(targets)


def evaluate_model(model: nn.Module, batches: Any, spec: TargetSpec, precision: str = "fp32") -> MetricResult:
    scores, targets = predict(model, batches, spec, precision)
    return evaluate(spec.metric, scores, targets, spec.label_names)
