"""The plain PyTorch/timm training loop, kept only to measure the suite's step against.

:class:`PlainStep` is what one writes without the suite: a timm model, ``torch.optim.SGD``
with its defaults, timm's per-parameter ``adaptive_clip_grad``. :func:`compare` runs it and
the suite's :class:`~xferscale.trainer.TrainStep` alternately in one process, on the same
model weights, batch, precision and synthetic input, and reports ours / baseline.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F
from timm.utils.agc import adaptive_clip_grad
from torch import nn

from xferscale.distributed import DistEnv
from xferscale.losses import softmax_ce
from xferscale.models import build_model, head_of
from xferscale.precision import AUTOCAST_DTYPES, configure_matmul
from xferscale.trainer import SpeedOptions, build_train_step


class PlainStep:
    """A textbook step: autocast, backward, (unscale), per-parameter AGC, SGD."""

    def __init__(self, model: nn.Module, lr: float, precision: str, device: torch.device):
        self.model, self.device = model, device
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
        head = {id(p) for p in head_of(model).parameters()}
        self.clipped = [p for p in model.parameters() if id(p) not in head]
        self.dtype = AUTOCAST_DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "amp_fp16" else None

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad()
        amp = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()
        with amp:
            logits = self.model(images)
        loss = F.cross_entropy(logits.float(), targets)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            adaptive_clip_grad(self.clipped, clip_factor=0.01, eps=1e-3)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            adaptive_clip_grad(self.clipped, clip_factor=0.01, eps=1e-3)
            self.optimizer.step()
        return loss.detach()


def _images_per_s(step, images, targets, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(images, targets)
    loss.item()  # wait for the last step
    return steps * images.shape[0] / (time.perf_counter() - start)


def compare(
    model_name: str = "tiny", batch: int = 32, image_size: int = 64, precision: str = "fp32",
    steps: int = 10, warmup: int = 3, repeats: int = 5, device: torch.device | None = None,
    options: SpeedOptions = SpeedOptions(), num_classes: int = 1000,
) -> dict:
    """Images/s of the suite's step and of the plain loop, alternating, ``repeats`` times."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configure_matmul(precision)
    torch.manual_seed(0)
    model = build_model(model_name, num_classes)
    nn.init.normal_(head_of(model).weight, std=0.01)  # a zero head would leave the body's gradients zero
    model = model.to(device)
    lr = 0.01
    ours = build_train_step(model, softmax_ce, lr=lr, precision=precision, env=DistEnv(device=device), options=options)
    plain = PlainStep(copy.deepcopy(model).to(memory_format=torch.contiguous_format), lr, precision, device)
    images = torch.randn(batch, 3, image_size, image_size, device=device)
    targets = torch.randint(num_classes, (batch,), device=device)
    for step in (ours, plain):
        _images_per_s(step, images, targets, warmup, device)
    rates: dict[str, list[float]] = {"ours": [], "baseline": []}
    for r in range(repeats):  # alternate the order so drift in machine load hits both alike
        order = [("ours", ours), ("baseline", plain)][:: 1 if r % 2 == 0 else -1]
        for name, step in order:
            rates[name].append(_images_per_s(step, images, targets, steps, device))
    ratios = [o / b for o, b in zip(rates["ours"], rates["baseline"])]
    return {
        "model": model_name, "batch": batch, "image_size": image_size, "precision": precision,
        "device": str(device), "options": asdict(options), "steps": steps, "repeats": repeats,
        "ours_images_per_s": statistics.median(rates["ours"]),
        "baseline_images_per_s": statistics.median(rates["baseline"]),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "ratios": ratios,
    }
