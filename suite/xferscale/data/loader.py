"""The one loader interface the trainers consume, whatever feeds it.

A :class:`Batches` yields ``(images, targets)`` for one rank: images float32 NCHW,
normalised as BiT does ((x/255 - 0.5) / 0.5), on the training device; targets int64 (N,)
for a multiclass task, float32 (N, C) with 1 / 0 and -1 for unknown for a multilabel one.
``epoch(e, start_batch)`` starts mid-epoch with exactly the batches an uninterrupted
epoch would still have produced, which is what makes resumes exact.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from xferscale.config import ConfigError, DataConfig


class Batches(Protocol):
    num_samples: int  # samples in one epoch, over all ranks
    num_classes: int
    task: str  # "multiclass" or "multilabel"

    def __len__(self) -> int:  # batches per epoch on this rank
        ...

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ...


def build_loader(
    cfg: DataConfig,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    device: torch.device,
    train: bool,
    seed: int,
    num_classes: int,
    multilabel: bool = False,
) -> Batches:
    """The loader for ``cfg.source``; ``batch_size`` is per rank."""
    if cfg.source == "synthetic":
        from xferscale.data.synthetic import SyntheticBatches

        return SyntheticBatches(
            num_samples=cfg.synthetic_samples, image_size=cfg.image_size, num_classes=num_classes,
            batch_size=batch_size, rank=rank, world_size=world_size, device=device,
            seed=seed, shuffle=train, multilabel=multilabel,
        )
    if cfg.source == "strokes":
        from xferscale.data.strokes import StrokeGlyphBatches

        if multilabel:
            raise ConfigError("data.source=strokes: glyph classes are single-label; use train.loss=softmax_ce")
        return StrokeGlyphBatches(
            num_samples=cfg.synthetic_samples, image_size=cfg.image_size, num_classes=num_classes,
            batch_size=batch_size, rank=rank, world_size=world_size, device=device, seed=seed, shuffle=train,
        )
    from xferscale.data.prepared import build_prepared_loader

    return build_prepared_loader(
        cfg, batch_size=batch_size, rank=rank, world_size=world_size, device=device,
        train=train, seed=seed, num_classes=num_classes,
    )
