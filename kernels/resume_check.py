"""Checkpoint -> resume on the training device: does a resumed run end where an uninterrupted one does?

Thirty steps of the trainer's step on seeded synthetic batches, once straight through and
once cut at step 15: the model, optimizer and GradScaler states go through the suite's own
``save_checkpoint`` / ``load_checkpoint`` into a new model and optimizer, which run the
remaining 15 steps. Deterministic kernels are asked for (``torch.use_deterministic_algorithms``,
cuDNN deterministic, no benchmark autotuning), since a kernel that may pick another reduction
order run to run makes a comparison of final weights meaningless; where that cannot hold, the
largest difference is reported against a tolerance with the reason.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from xferscale.checkpoint import load_checkpoint, save_checkpoint
from xferscale.distributed import DistEnv
from xferscale.losses import LOSSES
from xferscale.models import build_model, head_of
from xferscale.trainer import build_train_step

STEPS, CUT = 30, 15
TOLERANCE = 1e-6


def _batch(step: int, batch: int, image_size: int, num_classes: int, device: torch.device):
    gen = torch.Generator().manual_seed(1000 + step)
    images = torch.randn(batch, 3, image_size, image_size, generator=gen)
    return images.to(device), torch.randint(num_classes, (batch,), generator=gen).to(device)


def _fresh(model_name: str, num_classes: int, precision: str, device: torch.device):
    torch.manual_seed(0)
    model = build_model(model_name, num_classes)
    torch.nn.init.normal_(head_of(model).weight, std=0.01)  # a zero head leaves the body's gradients zero
    model = model.to(device)
    return model, build_train_step(model, LOSSES["softmax_ce"], lr=0.01, precision=precision, env=DistEnv(device=device))


def _train(step_fn, first: int, last: int, batch: int, image_size: int, num_classes: int, device: torch.device):
    for s in range(first, last):
        step_fn(*_batch(s, batch, image_size, num_classes, device))


def run_resume_check(model_name: str, device: torch.device, *, batch: int, image_size: int, precision: str,
                     num_classes: int = 10) -> dict[str, Any]:
    """The uninterrupted and the resumed run's final weights compared; see the module's docstring."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
    was = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        sizes = (batch, image_size, num_classes, device)
        model, step_fn = _fresh(model_name, num_classes, precision, device)
        _train(step_fn, 0, STEPS, *sizes)
        straight = {k: v.detach().clone() for k, v in model.state_dict().items()}

        model, step_fn = _fresh(model_name, num_classes, precision, device)
        _train(step_fn, 0, CUT, *sizes)
        with tempfile.TemporaryDirectory(prefix="xferscale-resume-") as tmp:
            path = Path(tmp) / "state.pt"
            save_checkpoint(path, {"model": model.state_dict(), "optimizer": step_fn.optimizer.state_dict(),
                                   "scaler": step_fn.scaler.state_dict() if step_fn.scaler else None})
            del model, step_fn
            state = load_checkpoint(path, map_location=device)
        model, step_fn = _fresh(model_name, num_classes, precision, device)
        model.load_state_dict(state["model"])
        step_fn.optimizer.load_state_dict(state["optimizer"])
        if step_fn.scaler and state["scaler"]:
            step_fn.scaler.load_state_dict(state["scaler"])
        _train(step_fn, CUT, STEPS, *sizes)
        resumed = model.state_dict()
    finally:
        torch.use_deterministic_algorithms(was[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = was[1], was[2]
    diffs = [(straight[k].double() - resumed[k].double()).abs().max().item()
             for k in straight if straight[k].is_floating_point()]
    identical = all(torch.equal(straight[k], resumed[k]) for k in straight)
    return {"model": model_name, "precision": precision, "batch": batch, "steps": STEPS, "cut": CUT,
            "identical": identical, "max_abs_diff": max(diffs), "tolerance": TOLERANCE,
            "mode": "deterministic kernels",
            "why": "" if identical else "an operation without a deterministic implementation on this device "
                                        "(torch warned of it) reduced in another order"}
