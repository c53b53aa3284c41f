"""Small real inputs for the transfer tests: a tiny pre-training checkpoint and tensor targets."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from xferscale.checkpoint import save_checkpoint
from xferscale.config import ExperimentConfig
from xferscale.models import build_model
from xferscale.transfer.finetune import FineTuneSettings
from xferscale.transfer.targets import TargetSpec, TensorTarget


def write_checkpoint(path: Path, name: str = "tiny_synth", num_classes: int = 5, seed: int = 0,
                     train_samples: int | None = None) -> Path:
    """A checkpoint in the pre-training engine's format (the keys Trainer.state_dict writes)."""
    torch.manual_seed(seed)
    model = build_model("tiny", num_classes)
    cfg = ExperimentConfig(name=name)
    save_checkpoint(path, {"model": model.state_dict(), "model_name": "tiny", "num_classes": num_classes,
                           "task": "multiclass", "config": cfg.to_dict(), "step": 7, "epoch": 0,
                           "train_samples": train_samples})
    return path


def pattern_images(labels: torch.Tensor, num_classes: int, size: int, seed: int) -> torch.Tensor:
    """uint8 images: a fixed pattern per class plus noise (learnable, like real classes)."""
    gen = torch.Generator().manual_seed(seed)
    patterns = F.interpolate(torch.rand(num_classes, 3, 3, 3, generator=gen), size=size, mode="bilinear")
    if labels.ndim == 2:  # multilabel: the mean pattern of the positive labels
        weights = labels.clamp(min=0)
        base = torch.einsum("nc,chwk->nhwk", weights, patterns.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        base = base / weights.sum(1).clamp(min=1).view(-1, 1, 1, 1)
    else:
        base = patterns[labels]
    noisy = base + 0.15 * torch.randn(base.shape, generator=gen)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def tensor_target(name: str = "synth", num_classes: int = 3, per_class: int = 6, test_per_class: int = 4,
                  size: int = 8, oversample: bool = False) -> TensorTarget:
    train_y = torch.arange(num_classes).repeat_interleave(per_class)
    test_y = torch.arange(num_classes).repeat_interleave(test_per_class)
    spec = TargetSpec(name, "multiclass", num_classes, "acc", (size, size), oversample=oversample)
    return TensorTarget(spec, pattern_images(train_y, num_classes, size, 1), train_y,
                        pattern_images(test_y, num_classes, size, 2), test_y)


def multilabel_target(num_labels: int = 3, n_train: int = 24, n_test: int = 16, size: int = 8) -> TensorTarget:
    gen = torch.Generator().manual_seed(3)
    train_y = (torch.rand(n_train, num_labels, generator=gen) < 0.5).float()
    test_y = (torch.rand(n_test, num_labels, generator=gen) < 0.5).float()
    train_y[0, 0] = -1.0  # an unknown entry, masked from the loss
    spec = TargetSpec("synth_ml", "multilabel", num_labels, "auc", (size, size),
                      tuple(f"L{i}" for i in range(num_labels)))
    return TensorTarget(spec, pattern_images(train_y, num_labels, size, 1), train_y,
                        pattern_images(test_y, num_labels, size, 2), test_y)


# 5 steps (boundaries 1..5), 8 px: each run takes a fraction of a second on a CPU.
FAST = FineTuneSettings(schedule_scale=0.01, crop=8, progress=False, checkpoint_every=2, eval_batch_size=64)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these models are tiny, and on a shared 2-core machine two
    spinning OpenMP threads per op make them ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
