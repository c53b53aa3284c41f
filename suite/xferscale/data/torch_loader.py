"""Torch backend: a map-style dataset over the prepared tar shards and a DataLoader.

Samples are read by seeking to the offsets in the shards' index files (no unpacking), then
decoded with ``torchvision.io.decode_image`` (8- and 16-bit) and transformed with the
``torchvision.transforms.v2`` pipelines of :mod:`xferscale.data.transforms`.

Rank sharding works like ``DistributedSampler``: every rank computes the same epoch list
(:class:`xferscale.data.prepared.RankView`) and takes its own range. Each sample's
augmentation is seeded from ``(seed, epoch, position in the epoch list)``, so results do
not depend on the number of workers, and ``epoch(e, start_batch=b)`` starts directly at
batch ``b`` with exactly the batches an uninterrupted epoch would have produced there.

Corrupt images: ``on_corrupt="error"`` raises :class:`CorruptImageError` naming shard and
member; ``"skip"`` leaves the image out of its batch and counts it in ``corrupt_skipped``.
"""
from __future__ import annotations

import functools
import os
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image

from xferscale.config import DataConfig
from xferscale.data.prepared import CorruptImageError, PreparedBatches, RankView, SplitPlan, targets_tensor
from xferscale.data.shards import decode_labels, read_component
from xferscale.data.transforms import build_transform, pipeline_for
from xferscale.preemption import loader_context, obey_only_main_process

Item = tuple[int, int]  # (sample index, augmentation seed)


class ShardSampleDataset(Dataset):
    """``dataset[(index, seed)]`` -> (image CHW float32, label array), or None if skipped."""

    def __init__(self, plan: SplitPlan, pipeline: str, image_size: int, precrop: int | None, on_corrupt: str):
        self.plan = plan
        self.transform = build_transform(pipeline, image_size, precrop)
        self.on_corrupt = on_corrupt
        self._handles: dict[int, object] = {}  # per worker process: opened after fork

    def __len__(self) -> int:
        return len(self.plan.samples)

    def _read(self, shard: int, component) -> bytes:
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = open(self.plan.shards[shard], "rb")
        return read_component(handle, component)

    def __getitem__(self, item: Item):
        index, seed = item
        ref = self.plan.samples[index]
        label = decode_labels(self.plan.task, self._read(ref.shard, ref.label))
        try:
            data = torch.frombuffer(bytearray(self._read(ref.shard, ref.image)), dtype=torch.uint8)
            image = decode_image(data, mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as err:
            if self.on_corrupt == "skip":
                return None
            raise CorruptImageError(
                f"{self.plan.ref_name(index)}: image cannot be decoded ({err}); "
                "set data.on_corrupt=skip to skip such images"
            ) from err
        if image.dtype == torch.uint16:  # 16-bit PNG: to [0, 1] float before resizing
            image = image.to(torch.float32) / 65535.0
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
            torch.manual_seed(seed)
            return self.transform(image), label


def collate(items: list) -> tuple[torch.Tensor, np.ndarray, int]:
    kept = [item for item in items if item is not None]
    if not kept:
        return torch.empty(0), np.empty((0,)), len(items)
    images = torch.stack([image for image, _ in kept])
    return images, np.stack([label for _, label in kept]), len(items) - len(kept)


def sample_seeds(seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """One augmentation seed per position of the epoch list."""
    base = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return (positions.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + base) >> np.uint64(1)


class _EpochBatchSampler:
    """Batch sampler whose batches are replaced before each epoch (like set_epoch)."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TorchBatches(PreparedBatches):
    """A prepared split read by a torch DataLoader; see the module docstring."""

    def __init__(self, view: RankView, cfg: DataConfig, device: torch.device):
        super().__init__(view, cfg, device)
        pipeline = pipeline_for(cfg.pipeline, view.train)
        self.dataset = ShardSampleDataset(view.plan, pipeline, cfg.image_size, cfg.precrop, cfg.on_corrupt)
        self._sampler = _EpochBatchSampler()
        self._dataloader: DataLoader | None = None

    def batch_items(self, epoch: int, start_batch: int = 0) -> list[list[Item]]:
        """This rank's batches of (sample index, augmentation seed), from ``start_batch``."""
        view = self.view
        indices = view.rank_indices(epoch)
        first = len(view.plan.epoch_list(epoch, view.train)) * view.rank // view.world_size
        seeds = sample_seeds(view.plan.seed, epoch, first + np.arange(len(indices)))
        b = view.batch_size
        return [
            list(zip(indices[i : i + b].tolist(), seeds[i : i + b].tolist()))
            for i in range(start_batch * b, len(indices), b)
        ][: max(0, len(self) - start_batch)]

    def _loader(self) -> DataLoader:
        if self._dataloader is None:
            workers = max(0, self.cfg.workers)
            self._dataloader = DataLoader(
                self.dataset,
                batch_sampler=self._sampler,
                num_workers=workers,
                collate_fn=collate,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=max(1, self.cfg.prefetch) if workers else None,
                persistent_workers=workers > 0,  # workers (and their open shards) live across epochs
                # Forked workers inherit the locks of threads they do not have (DALI's, OpenMP's)
                # and can deadlock; a fork server starts them from a clean process. Workers are
                # immune to the job step's stop signals from birth: the main process ends them.
                multiprocessing_context=loader_context() if workers else None,
                worker_init_fn=functools.partial(obey_only_main_process, os.getpid()) if workers else None,
            )
        return self._dataloader

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._sampler.batches = self.batch_items(epoch, start_batch)
        for images, labels, skipped in self._loader():
            self.corrupt_skipped += skipped
            if len(labels):
                targets = targets_tensor(self.view.plan.task, labels)
                yield images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
