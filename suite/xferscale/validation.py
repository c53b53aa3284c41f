"""Validation after each pre-training epoch, and the best checkpoint it selects.

As the paper's code (``pretrain.py`` ``validate``, ``save_best``): after every epoch the
held-out split is evaluated -- the training loss, and the source's metric: top-1 for a
single-label source, mean ROC-AUC over the labels whose AUC is defined for a multilabel one
(unknown labels masked per label, :func:`xferscale.metrics.mean_roc_auc`) -- and the weights
with the lowest validation loss so far are kept as ``best.pt``, which transfer starts from.

Each rank evaluates its shard of the split (evaluation loaders read every sample once); the
loss and top-1 sums are reduced over ranks and the multilabel scores gathered for the AUC, so
every rank holds the same figures. Validation leaves the training's random streams as it
found them, so a run's weights do not depend on whether, or how often, it validated.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from xferscale.checkpoint import rng_state, set_rng_state
from xferscale.config import ConfigError, DataConfig, ExperimentConfig
from xferscale.data.loader import build_loader
from xferscale.distributed import DistEnv, all_reduce, gather_objects
from xferscale.losses import LOSSES
from xferscale.metrics import mean_roc_auc

BEST_NAME = "best.pt"


@dataclass(frozen=True)
class ValidationResult:
    """One epoch's validation; ``value`` is ``None`` when the metric is undefined."""

    epoch: int  # the epoch just trained (0-based, as the training rows' ``epoch``)
    step: int
    loss: float
    metric: str  # "top1" or "mean_auc", in percent
    value: float | None
    samples: int
    undefined_labels: tuple[int, ...] = ()  # mean_auc: label indices left out (a single class among the known)

    def record(self, best: bool) -> dict[str, Any]:
        """The ``metrics.jsonl`` row."""
        row = {"kind": "validation", "epoch": self.epoch, "step": self.step, "val_loss": self.loss,
               f"val_{self.metric}": self.value, "val_samples": self.samples, "best": best}
        if self.metric == "mean_auc":
            row["val_auc_undefined_labels"] = list(self.undefined_labels)
        return row

    def line(self, best: bool) -> str:
        value = "undefined" if self.value is None else f"{self.value:.2f} %"
        return (f"validation after epoch {self.epoch} (step {self.step}): loss {self.loss:.4f}, {self.metric} {value} "
                f"on {self.samples} images" + (f"; lowest loss so far, saved as {BEST_NAME}" if best else ""))

    def state(self) -> dict[str, Any]:
        """What ``best.pt`` records of the validation that selected it."""
        return {"epoch": self.epoch, "step": self.step, "val_loss": self.loss, "metric": self.metric,
                "value": self.value, "samples": self.samples}


def validation_data(data: DataConfig) -> DataConfig:
    """The held-out data, every sample once: the split ``data.val_split`` of the training data's
    folder, or the strokes source's ``data.val_samples`` fixed glyphs (its evaluation set)."""
    held_out = {"synthetic_samples": data.val_samples} if data.source == "strokes" else {}
    return dataclasses.replace(data, split=data.val_split, fewshot=None, oversample=False, **held_out)


def check_val_split(data: DataConfig) -> None:
    """A prepared folder must hold the split to validate on; one line naming both if not."""
    if data.source != "prepared":
        return
    from xferscale.data.manifest import load_dataset_info

    info = load_dataset_info(data.path)
    if data.val_split not in info.splits:
        raise ConfigError(f"data.val_split: the prepared folder {info.root} has no split {data.val_split!r} to "
                          f"validate on (its splits: {', '.join(sorted(info.splits))}); set train.validate=false "
                          "to train without validation")


class Validator:
    """Evaluates a model on the validation split, sharded over the ranks."""

    def __init__(self, cfg: ExperimentConfig, env: DistEnv, batch_size: int, num_classes: int,
                 channels_last: bool = False):
        check_val_split(cfg.data)
        self.env, self.loss_name = env, cfg.train.loss
        self.loss_fn = LOSSES[cfg.train.loss]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.loader = build_loader(
            validation_data(cfg.data), batch_size=batch_size, rank=env.rank, world_size=env.world_size,
            device=env.device, train=False, seed=cfg.train.seed, num_classes=num_classes,
            multilabel=cfg.train.loss == "sigmoid_bce",
        )
        # Ranks' shards may differ by a batch: stop requests are agreed on the batches all ranks have.
        fewest = torch.tensor([-float(len(self.loader))], device=env.device)
        self.agreed_batches = int(-all_reduce(fewest, env, op="max").item())

    def _stop_agreed(self, requested: bool) -> bool:
        if self.env.world_size == 1:
            return requested
        flag = torch.tensor([float(requested)], device=self.env.device)
        return bool(all_reduce(flag, self.env).item() > 0)

    def _loss_terms(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum and count of the training loss's terms: samples (softmax CE), known labels (masked BCE)."""
        if self.loss_name == "sigmoid_bce":
            known = (targets >= 0).sum() if targets.ndim == 2 else torch.tensor(targets.numel() * logits.shape[1])
        else:
            known = torch.tensor(len(targets))
        count = known.to(device=logits.device, dtype=torch.float64)
        return self.loss_fn(logits, targets).double() * count, count

    def run(self, model: nn.Module, epoch: int, step: int, stop_requested: Callable[[], bool]) -> ValidationResult | None:
        """Validate ``model``; ``None`` if a stop request (agreed over ranks) came first."""
        saved_rng = rng_state()
        was_training = model.training
        model.eval()
        multilabel = self.loader.task == "multilabel"
        sums = torch.zeros(4, dtype=torch.float64, device=self.env.device)  # loss, loss terms, correct, images
        scores: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        try:
            with torch.no_grad():
                for index, (images, targets) in enumerate(self.loader.epoch(0)):
                    if index < self.agreed_batches and self._stop_agreed(stop_requested()):
                        return None
                    # fp32, not the training's autocast: the paper's code validates without it
                    logits = model(images.contiguous(memory_format=self.memory_format)).float()
                    loss_sum, count = self._loss_terms(logits, targets)
                    sums[0] += loss_sum
                    sums[1] += count
                    sums[3] += len(targets)
                    if multilabel:
                        scores.append(logits.cpu().numpy())
                        labels.append(targets.cpu().numpy())
                    else:
                        sums[2] += (logits.argmax(dim=1) == targets).sum()
        finally:
            model.train(was_training)
            set_rng_state(saved_rng)
        all_reduce(sums, self.env)
        loss_sum, terms, correct, images = sums.tolist()
        loss = loss_sum / terms if terms else float("nan")
        if not multilabel:
            return ValidationResult(epoch, step, loss, "top1", 100.0 * correct / images if images else None, int(images))
        parts = gather_objects((scores, labels), self.env)
        if not images:
            return ValidationResult(epoch, step, loss, "mean_auc", None, 0)
        all_scores = np.concatenate([s for rank_scores, _ in parts for s in rank_scores])
        all_labels = np.concatenate([t for _, rank_labels in parts for t in rank_labels])
        auc = mean_roc_auc(all_scores, all_labels)
        undefined = tuple(int(name) for name in auc.undefined_labels)
        return ValidationResult(epoch, step, loss, "mean_auc", auc.value, int(images), undefined)
