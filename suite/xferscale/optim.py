"""SGD with adaptive gradient clipping (AGC) and the learning-rate schedules of BiT.

AGC (Brock et al., NFNets) rescales each unit's gradient G_i to at most
``clip * max(||W_i||, eps)`` where a unit is an output channel (rows of a weight tensor,
the whole tensor for biases and norm parameters). The classifier, weight and bias, is left
unclipped, selected by module. The paper's code (``transfer_learning/optim/sgd_agc.py:118``)
skips every 2-D/4-D weight whose first dimension equals the class count instead: the head's
weight and any body layer as wide, while it clips the head's bias.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from timm.utils.agc import adaptive_clip_grad as _timm_adaptive_clip_grad
from torch import nn

from xferscale.models import head_of


def agc_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every trainable parameter except those of the classifier head (selected by module)."""
    head = {id(p) for p in head_of(model).parameters()}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in head]


def _unit_norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Flat unit-wise L2 norms (one per output channel; one per tensor for 1-D tensors)."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    flat = [i for i, t in enumerate(tensors) if t.ndim <= 1]
    if flat:  # one fused kernel for all biases and norm parameters
        for i, norm in zip(flat, torch._foreach_norm([tensors[i] for i in flat])):
            out[i] = norm.reshape(1)
    for i, t in enumerate(tensors):
        if t.ndim > 1:
            out[i] = torch.linalg.vector_norm(t.flatten(1), dim=1)
    return out  # type: ignore[return-value]


@torch.no_grad()
def adaptive_clip_grad_(
    parameters: Iterable[torch.Tensor], clip: float = 0.01, eps: float = 1e-3, foreach: bool = True
) -> None:
    """Clip gradients in place, unit-wise, relative to the parameters' norms.

    ``foreach=False`` uses timm's per-parameter reference implementation. The default
    reads each weight and gradient once for the norms, computes every unit's scale in one
    flat vector, and rescales all gradients in one foreach kernel.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return
    if not foreach:
        _timm_adaptive_clip_grad(params, clip_factor=clip, eps=eps)
        return
    grads = [p.grad for p in params]
    weight_norms = torch.cat(_unit_norms([p.detach() for p in params]))
    grad_norms = torch.cat(_unit_norms(grads))
    max_norms = weight_norms.clamp_min_(eps).mul_(clip)
    # scale = max_norm / ||G|| where ||G|| exceeds max_norm, else 1 (as timm's torch.where).
    scales = torch.where(grad_norms < max_norms, 1.0, max_norms / grad_norms.clamp_min(1e-6))
    units = [g.shape[0] if g.ndim > 1 else 1 for g in grads]
    views = [s.view(-1, *[1] * (g.ndim - 1)) if g.ndim > 1 else s for s, g in zip(scales.split(units), grads)]
    torch._foreach_mul_(grads, views)


def build_sgd(
    model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
    foreach: bool = True, fused: bool = False, nesterov: bool = True,
) -> torch.optim.SGD:
    """SGD with batched kernels: ``fused`` (one kernel) or ``foreach`` (a few per step).

    Nesterov momentum by default: the paper's code builds every optimizer, pre-training and
    fine-tuning, with ``nesterov=True`` (``transfer_learning/optim/builder.py``).
    """
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov and momentum > 0,
        foreach=foreach and not fused, fused=fused or None,
    )


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The linear scaling rule of the paper: lr = base_lr * global_batch / 256."""
    return base_lr * global_batch / 256


class WarmupStepSchedule:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then /10 at each boundary step.

    This is BiT's schedule (and, with ``warmup`` = first HyperRule boundary, the
    fine-tuning schedule of the BiT-HyperRule).
    """

    def __init__(self, peak: float, warmup: int, boundaries: Sequence[int], factor: float = 0.1):
        self.peak, self.warmup, self.boundaries, self.factor = peak, warmup, list(boundaries), factor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        decays = sum(step >= b for b in self.boundaries)
        return self.peak * self.factor**decays


class WarmupCosineSchedule:
    """Linear warm-up, then cosine decay to zero at ``total`` steps."""

    def __init__(self, peak: float, warmup: int, total: int):
        self.peak, self.warmup, self.total = peak, warmup, max(total, warmup + 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.peak * 0.5 * (1.0 + math.cos(math.pi * progress))


class ConstantSchedule:
    def __init__(self, peak: float, warmup: int = 0):
        self.peak, self.warmup = peak, warmup

    def __call__(self, step: int) -> float:
        return self.peak * min(1.0, (step + 1) / self.warmup) if self.warmup else self.peak


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
