"""Loaders for prepared datasets (``xferscale prepare`` output): the plan both backends
share, and :func:`build_prepared_loader`, which picks DALI or torch by ``data.backend``.

The plan for one split: the samples of all shards in shard order (row ``i`` of the
manifest is sample ``i``), optionally restricted to a few-shot subset
(``data.fewshot`` shots, ``data.fewshot_seed``) and, for training, class-balanced per
epoch (``data.oversample``). Epoch lists are pure functions of ``(seed, epoch)``
(:mod:`xferscale.data.sampling`), identical on every rank.

Length contract (equal on every rank, so DDP never waits on a rank that ran out; a
training set smaller than one global batch, e.g. a few-shot subset, gives epochs of exactly
one global batch drawn from it with replacement; the paper's fine-tuning loader draws with
replacement only below its micro-batch, see ``docs/fidelity.md``, "Few-shot batch"):
training drops the remainder, ``len = (samples // world_size) // batch_size``; evaluation
reads every sample exactly once, rank ``r`` taking DALI's shard range, with a partial last
batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xferscale.config import DataConfig
from xferscale.data.fewshot import fewshot_keys
from xferscale.data.manifest import DatasetInfo, load_dataset_info
from xferscale.data.records import PrepareError
from xferscale.data.sampling import balanced_epoch, epoch_permutation, shard_range
from xferscale.data.shards import IMAGE_EXTS, Component, label_extension, read_index


class CorruptImageError(RuntimeError):
    """An image in a shard cannot be decoded; the message names the shard and member."""


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's image and label live."""

    shard: int  # position in SplitPlan.shards
    image: Component
    label: Component


@dataclass
class SplitPlan:
    """The samples of one prepared split and the per-epoch lists drawn from them."""

    info: DatasetInfo
    split: str
    shards: list[Path]
    samples: list[SampleRef]
    class_of: np.ndarray | None  # multiclass label per sample (oversampling, few-shot)
    base: np.ndarray  # sample indices in play (all, or a few-shot subset)
    seed: int
    oversample: bool
    excluded: set[int] = field(default_factory=set)  # corrupt samples, skipped
    draws: int = 0  # > 0: a training epoch is this many samples drawn with replacement

    @property
    def task(self) -> str:
        return self.info.spec.task

    @property
    def num_classes(self) -> int:
        return self.info.spec.num_classes

    def pass_size(self, train: bool) -> int:
        if train and self.oversample:
            present = len(np.unique(self.class_of[self.base]))
            return present * math.ceil(len(self.base) / present)
        return len(self.base)

    def epoch_size(self, train: bool) -> int:
        return self.draws if train and self.draws else self.pass_size(train)

    def _pass(self, number: int) -> np.ndarray:
        if self.oversample:
            return self.base[balanced_epoch(self.class_of[self.base], self.seed, number)]
        return self.base[epoch_permutation(len(self.base), self.seed, number)]

    def epoch_list(self, epoch: int, train: bool) -> np.ndarray:
        """Global sample indices of one epoch, before splitting across ranks.

        A training epoch is one reshuffled pass over the set, or, for a set smaller than one
        global batch (``draws``), that many samples drawn with replacement. Corrupt samples
        found so far are left out; in training their places are refilled from the start of
        the list, so the epoch length (and thus ``len``) does not change.
        """
        if train and self.draws:
            order = self.base[np.random.default_rng([self.seed, epoch, 2]).integers(0, len(self.base), self.draws)]
        elif train:
            order = self._pass(epoch)
        else:
            order = self.base
        if self.excluded:
            size = len(order)
            order = order[~np.isin(order, list(self.excluded))]
            if train and len(order):
                order = np.resize(order, size)
        return order

    def ref_name(self, index: int) -> str:
        ref = self.samples[index]
        return f"{self.shards[ref.shard]}:{ref.image.name}"


def load_plan(cfg: DataConfig, seed: int) -> SplitPlan:
    if not cfg.path:
        raise PrepareError("data.path: a prepared dataset folder is required for data.source=prepared")
    info = load_dataset_info(cfg.path)
    shards = info.shard_paths(cfg.split)
    label_ext = label_extension(info.spec.task)
    samples: list[SampleRef] = []
    for number, shard in enumerate(shards):
        entries = read_index(shard.with_suffix(".idx"))
        needed = max((c.offset + c.size for entry in entries for c in entry), default=0)
        actual = shard.stat().st_size if shard.is_file() else -1
        if actual < needed:
            what = "missing" if actual < 0 else f"truncated ({actual} bytes, its index needs {needed})"
            raise PrepareError(f"{shard}: shard {what}; the prepared dataset {info.root} is damaged "
                               f"(run `xferscale prepare {info.spec.name} ...` again)")
        for entry in entries:
            parts = {c.ext: c for c in entry}
            image = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
            if image is None or label_ext not in parts:
                raise PrepareError(f"{shard}: sample {entry[0].name} lacks an image or a .{label_ext} member")
            samples.append(SampleRef(number, image, parts[label_ext]))
    expected = info.split(cfg.split).count
    if len(samples) != expected:
        raise PrepareError(f"{info.root}: split {cfg.split!r} indexes {len(samples)} samples, dataset.json says {expected}")
    rows = None
    class_of = None
    if info.spec.task == "multiclass" and (cfg.oversample or cfg.fewshot):
        rows = info.manifest(cfg.split)
        class_of = np.array([r.labels[0] for r in rows])
    base = np.arange(len(samples))
    if cfg.fewshot:
        rows = rows or info.manifest(cfg.split)
        try:
            keys = set(fewshot_keys(rows, cfg.fewshot, cfg.fewshot_seed, task=info.spec.task, classes=info.spec.classes))
        except ValueError as err:
            raise PrepareError(f"{info.root} {cfg.split}, data.fewshot={cfg.fewshot}: {err}") from err
        base = np.array([i for i, r in enumerate(rows) if r.key in keys])
    if cfg.oversample and info.spec.task != "multiclass":
        raise PrepareError(f"data.oversample: needs a multiclass dataset; {info.spec.name} is {info.spec.task}")
    return SplitPlan(info, cfg.split, shards, samples, class_of, base, seed, cfg.oversample)


@dataclass(frozen=True)
class RankView:
    """One rank's part of an epoch, shared by both backends."""

    plan: SplitPlan
    batch_size: int
    rank: int
    world_size: int
    train: bool

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {self.batch_size}")

    @property
    def num_samples(self) -> int:
        return self.plan.epoch_size(self.train)

    def __len__(self) -> int:
        n = self.num_samples
        if self.train:
            return (n // self.world_size) // self.batch_size
        return math.ceil(len(shard_range(n, self.rank, self.world_size)) / self.batch_size)

    def rank_indices(self, epoch: int) -> np.ndarray:
        order = self.plan.epoch_list(epoch, self.train)
        return order[shard_range(len(order), self.rank, self.world_size).start:][: self._rank_count(len(order))]

    def _rank_count(self, size: int) -> int:
        own = len(shard_range(size, self.rank, self.world_size))
        return min(own, len(self) * self.batch_size) if self.train else own


class PreparedBatches:
    """What both backends share: the :class:`~xferscale.data.loader.Batches` attributes."""

    def __init__(self, view: RankView, cfg: DataConfig, device: torch.device):
        self.view, self.cfg, self.device = view, cfg, device
        self.corrupt_skipped = 0  # images left out with data.on_corrupt=skip
        self.num_classes = view.plan.num_classes
        self.task = view.plan.task

    @property
    def num_samples(self) -> int:
        return self.view.num_samples

    def __len__(self) -> int:
        return len(self.view)


def targets_tensor(task: str, labels: np.ndarray) -> torch.Tensor:
    """int64 (N,) class indices, or float32 (N, C) with 1/0/-1."""
    if task == "multiclass":
        return torch.as_tensor(labels.reshape(len(labels)), dtype=torch.int64)
    return torch.as_tensor(labels, dtype=torch.float32)


def build_prepared_loader(
    cfg: DataConfig,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    device: torch.device | str,
    train: bool,
    seed: int,
    num_classes: int,
) -> PreparedBatches:
    """Batches of a prepared dataset split, read by DALI or torch (``cfg.backend``).

    ``num_classes`` is accepted for the common loader signature; the dataset's own class
    count is the loader's ``num_classes`` attribute and the trainer checks the two agree.
    """
    plan = load_plan(cfg, seed)
    if train and plan.pass_size(train) < batch_size * world_size:  # e.g. a few-shot subset
        plan.draws = batch_size * world_size
    view = RankView(plan, batch_size, rank, world_size, train)
    device = torch.device(device)
    if cfg.backend == "dali":
        from xferscale.data.dali_pipelines import DaliBatches

        return DaliBatches(view, cfg, device)
    from xferscale.data.torch_loader import TorchBatches

    return TorchBatches(view, cfg, device)
