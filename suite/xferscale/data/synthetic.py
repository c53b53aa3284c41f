"""A synthetic source that needs no dataset: fixed class patterns plus noise (``data.source: synthetic``).

Each class has a fixed random low-frequency pattern; a sample is its class pattern plus
Gaussian noise, drawn once: cheap, learnable, multilabel if asked, which is what throughput
runs and tests need. It is memorised, not generalised from, so the embedded demo pre-trains
on the stroke glyphs of :mod:`xferscale.data.strokes` instead. The
data are a pure function of the seed, and every epoch's order a function of (seed, epoch),
so the same global batches reach any number of ranks.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from xferscale.config import ConfigError


class SyntheticBatches:
    def __init__(
        self, *, num_samples: int, image_size: int, num_classes: int, batch_size: int, rank: int,
        world_size: int, device: torch.device, seed: int = 0, shuffle: bool = True, multilabel: bool = False,
    ):
        self.global_batch = batch_size * world_size
        if num_samples < self.global_batch:
            raise ConfigError(f"data.synthetic_samples={num_samples} is smaller than one global batch "
                              f"({self.global_batch}); raise it or lower train.global_batch")
        self.num_samples, self.num_classes = num_samples, num_classes
        self.task = "multilabel" if multilabel else "multiclass"
        self.batch_size, self.rank, self.device, self.seed, self.shuffle = batch_size, rank, device, seed, shuffle
        gen = torch.Generator().manual_seed(seed)
        patterns = F.interpolate(torch.randn(num_classes, 3, 4, 4, generator=gen), size=image_size, mode="bilinear")
        labels = torch.randint(num_classes, (num_samples,), generator=gen)
        noise = torch.randn(num_samples, 3, image_size, image_size, generator=gen)
        self.images = (patterns[labels] + 3.0 * noise).clamp_(-1, 1)  # noisy enough to take some learning
        if multilabel:  # the class's own label positive, a random quarter unknown (-1)
            targets = F.one_hot(labels, num_classes).float()
            targets[torch.rand(targets.shape, generator=gen) < 0.25] = -1.0
            self.targets = targets
        else:
            self.targets = labels

    def __len__(self) -> int:
        return self.num_samples // self.global_batch

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        else:
            order = torch.arange(self.num_samples)
        for b in range(start_batch, len(self)):
            start = b * self.global_batch + self.rank * self.batch_size
            idx = order[start : start + self.batch_size]
            yield self.images[idx].to(self.device, non_blocking=True), self.targets[idx].to(self.device, non_blocking=True)
